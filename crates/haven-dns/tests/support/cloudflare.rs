//! Starts tests/support/cloudflare_standin.py (a local stand-in for Cloudflare's v4 API) on a
//! free loopback port; killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Standin {
    pub api: String,
    child: Child,
}

impl Standin {
    /// `zones`: (name, id); `records`: (name, type, content, ttl, proxied).
    pub fn start(
        token: &str,
        zones: &[(&str, &str)],
        records: &[(&str, &str, &str, u32, bool)],
    ) -> Standin {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/cloudflare_standin.py"
        );
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(token).arg(
            zones
                .iter()
                .map(|(n, i)| format!("{n}={i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        for (name, rtype, content, ttl, proxied) in records {
            cmd.args([
                name.to_string(),
                rtype.to_string(),
                content.to_string(),
                ttl.to_string(),
                proxied.to_string(),
            ]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 is needed by this test");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("stand-in did not start: {line:?}"));
        Standin {
            api: format!("http://127.0.0.1:{port}/client/v4"),
            child,
        }
    }

    fn get(&self, hook: &str) -> Value {
        let base = self.api.trim_end_matches("/client/v4");
        let text = ureq::get(&format!("{base}{hook}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["result"].clone()
    }

    /// Every API call so far: {method, path, body}.
    pub fn log(&self) -> Vec<Value> {
        self.get("/__log").as_array().unwrap().clone()
    }

    /// Every record: {id, zone_id, name, type, content, ttl, proxied}, sorted by name, content.
    pub fn records(&self) -> Vec<Value> {
        self.get("/__records").as_array().unwrap().clone()
    }

    /// The next `count` API calls answer `status`.
    pub fn fail_next(&self, status: u16, count: u32) {
        let base = self.api.trim_end_matches("/client/v4");
        ureq::post(&format!("{base}/__fail?status={status}&count={count}"))
            .send_empty()
            .unwrap();
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
