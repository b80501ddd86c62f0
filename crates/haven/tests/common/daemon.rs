//! `haven serve` as a child process for the daemon tests, and a minimal HTTP/1.1 client
//! for its API.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{haven_command, wait_for, KillOnDrop};

/// One HTTP/1.1 request; returns the status code and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn json(body: &str) -> serde_json::Value {
    // Chunked bodies: take the JSON between the first '{' or '[' and the last '}' or ']'.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Kills `haven serve` when dropped.
pub struct Served {
    pub child: KillOnDrop,
}

pub fn serve(config: &Path, addr: &str) -> Served {
    let child = haven_command(
        &[
            "serve",
            "--config",
            &config.display().to_string(),
            "--listen",
            addr,
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let served = Served {
        child: KillOnDrop(Some(child)),
    };
    wait_for("haven serve to answer", Duration::from_secs(60), || {
        http(addr, "GET", "/api/v1/openapi.json", None).is_ok_and(|(s, _)| s == 200)
    });
    served
}

pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
