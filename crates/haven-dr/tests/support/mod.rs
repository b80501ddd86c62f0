//! Shared by the engine's tests: a tiny HTTP server on loopback (the "application" and
//! the webhook receiver), a config with two tenants and one runbook, a catalog.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use haven_dr::Dr;
use haven_ops::catalog::Catalog;
use haven_ops::config::Config;

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

type Handler = dyn Fn(&Request, usize) -> (u16, String) + Send + Sync;

/// An HTTP/1.1 server answering every request with `handler(request, hit number)`.
pub struct Http {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Http {
    pub fn start(
        handler: impl Fn(&Request, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Http {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let seen = requests.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (seen, handler) = (seen.clone(), handler.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let mut first = head.lines().next().unwrap_or("").split(' ');
                    let req = Request {
                        method: first.next().unwrap_or("").to_string(),
                        path: first.next().unwrap_or("").to_string(),
                        body: String::from_utf8_lossy(&buf[head_end..]).to_string(),
                    };
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(req.clone());
                        s.len()
                    };
                    let (status, body) = handler(&req, n);
                    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                });
            }
        });
        Http { addr, requests }
    }

    pub fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Two tenants (acme, acme-dr: one files component each), a webhook sink `ops` at
/// `webhook`, and `runbook` appended (its `[runbooks.fo]` table included).
pub fn config_text(dir: &Path, webhook: SocketAddr, runbook: &str) -> String {
    format!(
        r#"[repositories.main]
url = "{repo}"
password-file = "{pw}"

[alerts.ops]
kind = "webhook"
url = "http://{webhook}/hook"

[tenants.acme]
repository = "main"
[tenants.acme.components.files]
kind = "files"
paths = ["{a}"]

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.files]
kind = "files"
paths = ["{b}"]

[runbooks.fo]
tenant = "acme"
into = "acme-dr"
{runbook}"#,
        repo = dir.join("repo").display(),
        pw = dir.join("password").display(),
        a = dir.join("site-a").display(),
        b = dir.join("site-b").display(),
    )
}

pub fn write_config(dir: &Path, webhook: SocketAddr, runbook: &str) -> PathBuf {
    let path = dir.join("haven.toml");
    std::fs::write(&path, config_text(dir, webhook, runbook)).unwrap();
    path
}

/// The engine on `config` with a catalog in `dir`, progress lines printed.
pub fn dr(dir: &Path, config: &Path) -> Dr {
    let config = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let catalog = Catalog::open(&dir.join("catalog.db")).unwrap();
    Dr::new(config, catalog).with_progress(|l| eprintln!("progress: {l}"))
}

/// A command step table.
pub fn command(name: &str, needs: &[&str], script: &str, extra: &str) -> String {
    format!(
        "[[runbooks.fo.steps]]\nname = \"{name}\"\nkind = \"command\"\nneeds = {needs:?}\nrun = [\"sh\", \"-c\", {script:?}]\n{extra}\n"
    )
}
