//! S3 servers on sites of their own, for the multi-site tests (`tests/sites.rs`, which
//! includes this file by path next to haven-s3's `tests/moto`).
//!
//! A [`Site`] is a network namespace joined to the host by a veth pair, with moto's S3
//! server listening inside on the namespace's address. Its link can be cut (`ip link set
//! down` on the host end) and brought back, and shaped with `tc` so that uploads take a
//! predictable time. Needs root and iproute2 (`ip netns`, `tc`): [`require_root_and_netns`]
//! fails the test naming what is missing. Everything a site creates is removed when it is
//! dropped, also when the test panics; leftovers of an earlier run that crashed (its
//! process is gone) are removed before the first site is created.
//!
//! Names and addresses are derived from the test's process id, so parallel test
//! processes do not collide: site `i` of process `pid` is the namespace
//! `havensite<i>-<pid>` with the subnet 10.(64 + n / 256).(n % 256).(4i)/30, n = pid mod
//! 16384; the host end has `.4i+1`, the server `.4i+2`.
//!
//! A cut link must fail, not answer: with the host end down, the kernel would route the
//! site's address by the default route, and a gateway that accepts every connection (this
//! project's machines have one) would answer in the site's place (HTTP 404 for every
//! request). So each site also gets an `unreachable` route for its subnet with a high
//! metric: shadowed by the link's own route while the link is up, it makes new
//! connections fail at once with "no route to host" while it is down, as a router
//! answering ICMP unreachable would. Connections already open stall until the client's
//! own TCP timeout, as they would in a real outage.
//!
//! Std only, plus `tempfile` for the server's log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Every namespace these tests create is named `havensite<index>-<pid>`.
const NS_PREFIX: &str = "havensite";
/// The port moto listens on inside each namespace (each namespace has its own ports).
const MOTO_PORT: u16 = 9000;
/// Metric of the fallback `unreachable` route (the link's own route has 0).
const FALLBACK_METRIC: &str = "4000";

/// Fail the test, saying what is needed, unless it runs as root with `ip netns` and `tc`.
#[track_caller]
pub fn require_root_and_netns() {
    let uid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            // Uid: real effective saved filesystem
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    });
    let mut missing = vec![];
    if uid.as_deref() != Some("0") {
        missing.push(format!(
            "root (the effective uid is {})",
            uid.as_deref().unwrap_or("unknown")
        ));
    }
    if !quiet("ip", &["netns", "list"]) {
        missing.push("`ip netns` (iproute2)".to_string());
    }
    if !quiet("tc", &["qdisc", "show", "dev", "lo"]) {
        missing.push("`tc` (iproute2)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the multi-site test runs its S3 servers in network namespaces and needs {}: run it \
         as root on Linux with iproute2 installed (`apt-get install iproute2`), as CI does",
        missing.join(" and ")
    );
}

/// Run a command that must succeed; panic with its stderr otherwise.
#[track_caller]
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run `{program} {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, ignoring its output; whether it succeeded (for clean-up and probes).
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first three octets of the addresses of process `pid`'s sites.
fn subnet_base(pid: u32) -> (u8, u8) {
    let n = pid % 16384;
    ((64 + n / 256) as u8, (n % 256) as u8)
}

/// Kill what still runs in a namespace (a server an earlier run started), then delete it;
/// deleting it deletes the veth pair too.
fn remove_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            quiet("kill", &["-KILL", pid]);
        }
    }
    quiet("ip", &["netns", "delete", name]);
}

/// Remove namespaces and fallback routes left by runs whose process is gone (a test
/// killed before its clean-up ran), and any namespace carrying this process's own id
/// (an earlier process that had the same id).
fn remove_leftovers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let me = std::process::id();
        let listed = run("ip", &["netns", "list"]);
        for line in listed.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(pid) = name
                .strip_prefix(NS_PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || !Path::new(&format!("/proc/{pid}")).exists() {
                remove_namespace(name);
                let (x, y) = subnet_base(pid);
                let ours = format!("10.{x}.{y}.");
                let routes = run("ip", &["-o", "route", "show", "type", "unreachable"]);
                for dest in routes.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                    if dest.starts_with(&ours) {
                        quiet("ip", &["route", "del", "unreachable", dest]);
                    }
                }
            }
        }
    });
}

/// One site: a namespace, a veth pair to the host, and moto's S3 server inside.
pub struct Site {
    pub name: String,
    netns: String,
    host_if: String,
    subnet: String,
    /// The server's address (inside the namespace).
    pub ip: Ipv4Addr,
    pub port: u16,
    moto: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Site {
    /// Create site number `index` (0..64; it picks the addresses) called `name` and start
    /// its server. Does not wait for the server: see [`Site::wait_ready`], so that several
    /// sites can start at once.
    #[track_caller]
    pub fn start(index: u8, name: &str) -> Site {
        assert!(index < 64, "at most 64 sites per test");
        crate::moto::ensure_moto();
        remove_leftovers();
        let pid = std::process::id();
        let (x, y) = subnet_base(pid);
        let z = 4 * index;
        let host_ip = Ipv4Addr::new(10, x, y, z + 1);
        let inner = format!("hvs{index}n{pid}");
        // From here on, dropping `site` (also on a panic) undoes what was done.
        let mut site = Site {
            name: name.to_string(),
            netns: format!("{NS_PREFIX}{index}-{pid}"),
            host_if: format!("hvs{index}h{pid}"),
            subnet: format!("10.{x}.{y}.{z}/30"),
            ip: Ipv4Addr::new(10, x, y, z + 2),
            port: MOTO_PORT,
            moto: None,
            log: tempfile::NamedTempFile::new().expect("a temporary file for the server log"),
        };
        let ns = site.netns.as_str();
        run("ip", &["netns", "add", ns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &site.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
                "netns",
                ns,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &site.host_if,
            ],
        );
        run("ip", &["link", "set", &site.host_if, "up"]);
        let inner_addr = format!("{}/30", site.ip);
        run("ip", &["-n", ns, "addr", "add", &inner_addr, "dev", &inner]);
        run("ip", &["-n", ns, "link", "set", &inner, "up"]);
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "route",
                "replace",
                "unreachable",
                &site.subnet,
                "metric",
                FALLBACK_METRIC,
            ],
        );
        let log = site.log.reopen().expect("the server log");
        let err_log = log.try_clone().expect("the server log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "moto_server", "-H"])
            .arg(site.ip.to_string())
            .args(["-p", &site.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .expect("starting moto_server in the namespace");
        site.moto = Some(child);
        site
    }

    /// `http://IP:PORT`, the server as the host reaches it through the link.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// The `s3:` repository URL of `prefix` in `bucket` on this site.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.endpoint())
    }

    /// Wait until the server answers HTTP through the link; panic with its log when it
    /// exits or does not answer within a minute.
    #[track_caller]
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.request("GET", "/", b"").is_ok() {
                return;
            }
            let exited = self.moto.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "the S3 server of {} ({}) did not start ({}); its log:\n{}",
                    self.name,
                    self.endpoint(),
                    match exited {
                        Some(status) => format!("it exited: {status}"),
                        None => "no answer within 60 s".to_string(),
                    },
                    fs::read_to_string(self.log.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cut the site off: the host end of its link goes down.
    #[track_caller]
    pub fn cut(&self) {
        run("ip", &["link", "set", &self.host_if, "down"]);
    }

    /// Bring the link back up and wait until the server answers through it again.
    #[track_caller]
    pub fn reconnect(&mut self) {
        run("ip", &["link", "set", &self.host_if, "up"]);
        self.wait_ready();
    }

    /// Limit what the host sends to the site (uploads) to `rate` (`tc` syntax, e.g.
    /// `8mbit`). The queue is kept short, so that a small request is not stuck behind
    /// seconds of queued uploads.
    #[track_caller]
    pub fn shape(&self, rate: &str) {
        run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.host_if,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "32kbit",
                "latency",
                "50ms",
            ],
        );
    }

    /// Remove the limit set by [`Site::shape`].
    #[track_caller]
    pub fn unshape(&self) {
        run("tc", &["qdisc", "del", "dev", &self.host_if, "root"]);
    }

    /// One HTTP request to the server; returns the status and the body. Moto started
    /// without auth checks no signature, but it refuses anonymous reads of objects written
    /// with credentials, so the request carries an `Authorization` header with a dummy
    /// signature, which it accepts as is.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let addr = SocketAddr::from((self.ip, self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential={}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, \
             Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.ip,
            self.port,
            crate::moto::ACCESS_KEY,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = vec![];
        s.read_to_end(&mut resp)?;
        parse_response(&resp)
    }

    /// A request that must get an answer; panics naming the site otherwise.
    #[track_caller]
    fn answer(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        self.request(method, path, b"").unwrap_or_else(|e| {
            panic!(
                "{} ({}) did not answer {method} {path}: {e}",
                self.name,
                self.endpoint()
            )
        })
    }

    #[track_caller]
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.answer("PUT", &format!("/{bucket}"));
        assert_eq!(
            status,
            200,
            "creating bucket {bucket} on {}: {}",
            self.name,
            String::from_utf8_lossy(&body)
        );
    }

    /// Every key below `prefix` in `bucket` (all pages of the listing), sorted.
    #[track_caller]
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={}", url_encode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", url_encode(t)));
            }
            let (status, body) = self.answer("GET", &path);
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 200, "listing {bucket} on {}: {text}", self.name);
            keys.extend(between(&text, "<Key>", "</Key>"));
            token = match between(&text, "<NextContinuationToken>", "</NextContinuationToken>")
                .into_iter()
                .next()
            {
                Some(t) if text.contains("<IsTruncated>true</IsTruncated>") => Some(t),
                _ => break,
            };
        }
        keys.sort();
        keys
    }

    /// One object's bytes.
    #[track_caller]
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self.answer("GET", &format!("/{bucket}/{key}"));
        assert_eq!(
            status,
            200,
            "reading {bucket}/{key} on {}: {}",
            self.name,
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Every object below `prefix` with its bytes, except keys starting with one of `skip`.
    #[track_caller]
    pub fn objects(&self, bucket: &str, prefix: &str, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
        self.keys(bucket, prefix)
            .into_iter()
            .filter(|k| !skip.iter().any(|s| k.starts_with(s)))
            .map(|k| {
                let bytes = self.object(bucket, &k);
                (k, bytes)
            })
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut child) = self.moto.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_namespace(&self.netns);
        quiet("ip", &["link", "del", &self.host_if]);
        quiet("ip", &["route", "del", "unreachable", &self.subnet]);
    }
}

/// Status and body of a raw HTTP/1.1 response (`Content-Length` or chunked).
fn parse_response(resp: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status in the response"))?;
    let body = &resp[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, body.to_vec()));
    }
    let mut out = vec![];
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("a chunk without a size line"))?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("a bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err(bad("a truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The texts between every `open` and the following `close`.
fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|p| p.split(close).next())
        .map(str::to_string)
        .collect()
}

/// Percent-encoding of a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
