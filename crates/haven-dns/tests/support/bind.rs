//! A real BIND 9 (`named`, Debian package bind9) on loopback for tests: its own temp dir, a
//! free port (UDP and TCP), one zone `example.test.` that accepts dynamic updates signed with
//! a fresh hmac-sha256 key, and key files for that key and for two wrong ones. Ready when it
//! answers the zone's SOA (polled); killed on drop. Other crates' tests include this file with
//! `#[path = "../../haven-dns/tests/support/bind.rs"] mod bind;` (needs haven-dns and tempfile).
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "example.test.";
pub const KEY_NAME: &str = "haven-test.";

pub struct Bind {
    pub addr: SocketAddr,
    pub zone: String,
    /// The key the zone accepts (`key "haven-test." { algorithm hmac-sha256; secret ...; };`).
    pub key_file: PathBuf,
    /// Same name, another secret: the server answers BADSIG.
    pub wrong_secret_file: PathBuf,
    /// A name the server does not know: BADKEY.
    pub unknown_key_file: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn secret() -> String {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    // Standard base64 by hand: the fixture must not need a base64 crate in every includer.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn key_text(name: &str, secret: &str) -> String {
    format!(
        "key \"{}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n",
        name.trim_end_matches('.')
    )
}

/// A port free for both TCP and UDP on `ip` (named needs both).
fn free_port(ip: IpAddr) -> u16 {
    loop {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Bind {
    /// On 127.0.0.1, with `acme.example.test. A 127.0.0.1` in the zone.
    pub fn start() -> Bind {
        Bind::start_on(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[("acme", "A", "127.0.0.1")],
        )
    }

    /// On `ip`, with these (relative name, type, value) records in the zone.
    pub fn start_on(ip: IpAddr, records: &[(&str, &str, &str)]) -> Bind {
        let mut last = String::new();
        // A port taken between free_port() and named's bind makes named run without listening;
        // the readiness poll then fails and we try another port.
        for _ in 0..3 {
            match Bind::try_start(ip, records) {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("BIND did not start: {last}");
    }

    fn try_start(ip: IpAddr, records: &[(&str, &str, &str)]) -> Result<Bind, String> {
        let dir = tempfile::Builder::new()
            .prefix("haven-bind-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = free_port(ip);
        let secret = secret();
        fs::write(d.join("haven.key"), key_text(KEY_NAME, &secret)).unwrap();
        fs::write(
            d.join("wrong-secret.key"),
            key_text(KEY_NAME, &self::secret()),
        )
        .unwrap();
        fs::write(d.join("unknown.key"), key_text("not-known.", &secret)).unwrap();
        let mut zone = String::from(
            "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. ( 1 3600 600 86400 300 )\n@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\n",
        );
        for (name, rtype, value) in records {
            zone.push_str(&format!("{name} 300 IN {rtype} {value}\n"));
        }
        fs::write(d.join("example.test.db"), zone).unwrap();
        let conf = format!(
            r#"include "{key}";
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
zone "example.test" {{
    type primary;
    file "{dir}/example.test.db";
    allow-update {{ key "{keyname}"; }};
}};
"#,
            key = d.join("haven.key").display(),
            dir = d.display(),
            keyname = KEY_NAME.trim_end_matches('.'),
        );
        fs::write(d.join("named.conf"), conf).unwrap();
        let child = Command::new("named")
            .args(["-g", "-n", "1", "-c"])
            .arg(d.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("named.log")).unwrap())
            .spawn()
            .map_err(|e| format!("cannot run named ({e}): apt-get install bind9"))?;
        let mut bind = Bind {
            addr: SocketAddr::new(ip, port),
            zone: ZONE.to_string(),
            key_file: d.join("haven.key"),
            wrong_secret_file: d.join("wrong-secret.key"),
            unknown_key_file: d.join("unknown.key"),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if haven_dns::soa_serial(bind.addr, ZONE, Duration::from_millis(300)).is_ok() {
                return Ok(bind);
            }
            if let Ok(Some(status)) = bind.child.try_wait() {
                return Err(format!("named exited ({status}): {}", bind.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "named did not answer on {} in 30 s: {}",
                    bind.addr,
                    bind.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn key(&self) -> haven_dns::TsigKey {
        haven_dns::TsigKey::from_file(&self.key_file).unwrap()
    }

    pub fn serial(&self) -> u32 {
        haven_dns::soa_serial(self.addr, ZONE, Duration::from_secs(5)).unwrap()
    }

    /// What the server answers now for `name` (relative to the zone or absolute).
    pub fn answer(&self, name: &str, rtype: haven_dns::RecordType) -> Vec<String> {
        haven_dns::query(self.addr, &self.fqdn(name), rtype, Duration::from_secs(5)).unwrap()
    }

    pub fn fqdn(&self, name: &str) -> String {
        if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.{ZONE}")
        }
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
