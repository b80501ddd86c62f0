//! Real etcd clusters for the tests: `n` members on loopback (free ports, one data
//! directory each in a temporary directory), started together with `--initial-cluster`,
//! ready once every member answers `/health` with a leader, each killed on drop.
//! Elections are fast (50 ms heartbeat, 500 ms election timeout) so that losing a member
//! costs the tests well under a second. Include with
//! `#[path = "support/etcd.rs"] mod etcd_support;`.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haven_sources::etcd::EtcdClient;

const ETCD: &str = "/usr/bin/etcd";
const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl EtcdCluster {
    /// One member.
    pub fn single() -> EtcdCluster {
        EtcdCluster::start(1)
    }

    /// `n` members, healthy. Panics (with the members' logs) when they do not come up;
    /// tries other ports twice if the chosen ones were taken meanwhile.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install etcd-server"
        );
        let mut last = String::new();
        for _ in 0..3 {
            match EtcdCluster::try_start(n) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd cluster of {n} did not start: {last}");
    }

    fn try_start(n: usize) -> Result<EtcdCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // Hold every listener until all ports are chosen, so none is chosen twice.
        let listeners: Vec<TcpListener> = (0..2 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial: Vec<String> = (0..n)
            .map(|i| format!("{}={}", names[i], peer(i)))
            .collect();
        let initial = initial.join(",");
        let mut cluster = EtcdCluster {
            members: vec![],
            dir,
        };
        for (i, name) in names.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let data = cluster.dir.path().join(name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let out = File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(ETCD)
                .arg("--name")
                .arg(name)
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(peer(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer(i))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-token")
                .arg("haven-volume-tests")
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--heartbeat-interval")
                .arg("50")
                .arg("--election-timeout")
                .arg("500")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {ETCD}: {e}"))?;
            cluster.members.push(Member {
                name: name.clone(),
                client_url,
                log,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + READY_WITHIN;
        for i in 0..n {
            cluster.wait_healthy(i, deadline)?;
        }
        Ok(cluster)
    }

    /// Poll member `i`'s `/health` until it reports a leader.
    fn wait_healthy(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        let client = EtcdClient::new(&self.members[i].client_url)
            .unwrap()
            .with_timeout(Duration::from_secs(1));
        loop {
            if matches!(client.health(), Ok(true)) {
                return Ok(());
            }
            let member = &mut self.members[i];
            let exited = member
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let name = member.name.clone();
                return Err(format!("{name} exited ({status}): {}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not healthy within {READY_WITHIN:?}: {}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// The index of the raft leader, as the live members report it.
    pub fn leader(&self) -> Option<usize> {
        let ids: Vec<Option<(String, String)>> = self
            .members
            .iter()
            .map(|m| {
                m.child.as_ref()?;
                let client = EtcdClient::new(&m.client_url)
                    .unwrap()
                    .with_timeout(Duration::from_secs(1));
                let status: serde_json::Value = client
                    .call_json("/v3/maintenance/status", serde_json::json!({}))
                    .ok()?;
                let own = status["header"]["member_id"].as_str()?.to_string();
                let leader = status["leader"].as_str()?.to_string();
                Some((own, leader))
            })
            .collect();
        let leader = ids.iter().flatten().map(|(_, l)| l.clone()).next()?;
        ids.iter()
            .position(|id| id.as_ref().is_some_and(|(own, _)| *own == leader))
    }

    /// `SIGSTOP` member `i`: its port still accepts connections but nothing answers, as
    /// for a member whose site is cut off mid-conversation. [`EtcdCluster::resume`] undoes it.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.members[i]
            .child
            .as_ref()
            .expect("a running member")
            .id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// `kill -9` member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!("\n--- {} ---\n", m.name);
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A loopback URL where nothing listens (the port was free a moment ago).
pub fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
