//! A real S3 server for tests: moto (`pip install 'moto[server]'`) on a free loopback
//! port, installed when missing, stopped on drop. Shared by haven-s3's tests and the
//! CLI's `tests/s3.rs` (included there by path). Std only.
//!
//! moto also serves STS: `AssumeRoleWithWebIdentity` issues temporary keys without
//! checking the token or the role's trust policy, and a server from [`Moto::start`]
//! accepts any keys on S3. So a test shows that keys came from STS by the sessions moto
//! issued ([`Moto::sts_sessions`]) with no other source configured, not by S3 refusing
//! other keys: moto's signature check (IAM auth on) refuses object_store's signed
//! listings even with valid IAM keys (tried with moto 5.2.1), so it cannot be used here.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Credentials the tests pass; moto accepts any unless started with auth.
pub const ACCESS_KEY: &str = "haven-test-access";
pub const SECRET_KEY: &str = "haven-test-secret";

pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

fn moto_present() -> bool {
    Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Install moto's server with pip when `moto_server` is not on the PATH.
pub fn ensure_moto() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if moto_present() {
            return;
        }
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "moto[server]"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && moto_present(),
            "the S3 tests need moto's server and installing it failed: run `python3 -m pip install 'moto[server]'` and make sure `moto_server` is on the PATH"
        );
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// A port nothing listens on (for the wrong-endpoint cases).
///
/// Taken from the privileged range, below the kernel's ephemeral ports: a port
/// from `free_port` is closed only until another test that runs alongside binds
/// it (a `haven serve` once answered 404 there). The candidate is checked to
/// refuse connections now.
pub fn closed_port() -> u16 {
    const CANDIDATES: [u16; 6] = [1, 9, 11, 15, 17, 19];
    CANDIDATES
        .into_iter()
        .find(|port| {
            std::net::TcpStream::connect(("127.0.0.1", *port))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .expect("one of the ports 1, 9, 11, 15, 17, 19 on 127.0.0.1 refuses connections")
}

impl Moto {
    /// A server that accepts any credentials.
    pub fn start() -> Moto {
        Self::spawn(false)
    }

    /// A server that checks credentials against its (empty) IAM: every key is refused.
    pub fn start_with_auth() -> Moto {
        Self::spawn(true)
    }

    fn spawn(auth: bool) -> Moto {
        ensure_moto();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("moto_server");
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if auth {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
            }
            let mut child = cmd.spawn().expect("starting moto_server");
            // Ready when the port accepts connections; give up if the process exits.
            let deadline = Instant::now() + Duration::from_secs(60);
            let ready = loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                return Moto {
                    child,
                    port,
                    endpoint: format!("http://127.0.0.1:{port}"),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start on a loopback port");
    }

    /// One unsigned HTTP request (moto without auth needs no signature); returns the status.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to moto");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad answer from moto: {resp}"))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let status = self.request("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(status, 200, "writing {bucket}/{key}");
    }

    /// The whole answer to an unsigned GET.
    pub fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    }

    /// All keys in a bucket (first 1000), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.sizes(bucket).into_iter().map(|(k, _)| k).collect()
    }

    /// All keys in a bucket (first 1000) with their sizes in bytes, sorted by key.
    pub fn sizes(&self, bucket: &str) -> Vec<(String, u64)> {
        let resp = self.get(&format!("/{bucket}?list-type=2"));
        let mut out: Vec<(String, u64)> = resp
            .split("<Contents>")
            .skip(1)
            .map(|entry| {
                let key = between(entry, "<Key>", "</Key>").unwrap_or_default();
                let size = between(entry, "<Size>", "</Size>")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no size in moto's listing: {entry}"));
                (key, size)
            })
            .collect();
        out.sort();
        out
    }

    /// The sessions moto's STS has issued, as (role ARN, session name), oldest first
    /// (from moto's state dump, `/moto-api/data.json`).
    pub fn sts_sessions(&self) -> Vec<(String, String)> {
        let dump = self.get("/moto-api/data.json");
        let Some(sts) = dump.split("\"AssumedRole\"").nth(1) else {
            return vec![];
        };
        let sts = sts.split(']').next().unwrap_or("");
        sts.split('{')
            .skip(1)
            .filter_map(|role| {
                Some((
                    between(role, "\"role_arn\": \"", "\"")?,
                    between(role, "\"session_name\": \"", "\"")?,
                ))
            })
            .collect()
    }

    /// Whether a bucket exists (HEAD).
    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.request("HEAD", &format!("/{bucket}"), b"") == 200
    }
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
