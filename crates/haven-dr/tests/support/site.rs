//! Two sites on loopback for the disaster-recovery tests and the benchmark's shape:
//!
//! * **site A** (127.0.0.1), the tenant `acme` in production: PostgreSQL with pgbench
//!   data, Redis, a single-member etcd, a files folder (haven_sources' throwaway servers),
//!   and the application (app.py) answering `/health` and `/count` from PostgreSQL.
//! * **site B** (127.0.0.2), the tenant `acme-dr`: nothing runs until the runbook's
//!   `provision` step runs provision.sh, which starts EMPTY PostgreSQL and Redis servers
//!   and the application there and prints `lb_ip=127.0.0.2`, `app_port=...`. etcd is
//!   brought up by the restore in the component's `data-dir`. Ports are chosen here and
//!   written to `site-b/site.env`, so haven.toml can name acme-dr's components up front.
//! * a BIND 9 authoritative for `example.test.` where `acme.example.test. A 127.0.0.1`
//!   (crates/haven-dns/tests/support/bind.rs), and a webhook receiver for alerts.
//!
//! [`World::start`] builds all of it and writes `haven.toml` with the runbook
//! `acme-failover` of issue 11 (provision, restore, smoke, accounts, scale-down-old, dns,
//! tell). [`World::kill_site_a`] is the disaster: kill -9 and data deleted. Dropping the
//! world stops whatever site B runs (provision.sh --remove, the restored etcd).
//!
//! Included with `#[path]` at a test crate's root (needs haven-sources, haven-dns,
//! serde_json, tempfile), beside modules `bind` (crates/haven-dns/tests/support/bind.rs)
//! and `webhook` (crates/haven-ops/tests/common/webhook.rs).
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haven_sources::servers::etcd::EtcdServer;
use haven_sources::servers::postgres::{find_bin_dir, PostgresServer};
use haven_sources::servers::redis::RedisServer;

use super::bind::Bind;
use super::webhook::Receiver;

pub const SITE_B_IP: &str = "127.0.0.2";
pub const RECORD: &str = "acme.example.test.";
pub const DRILL_RECORD: &str = "drill.acme.example.test.";

/// How big the tenant is. The tests use [`Scale::TEST`]; bench/dr.sh its own.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub pgbench: u32,
    pub redis_keys: u32,
    pub etcd_keys: u32,
    pub file_kib: u32,
}

impl Scale {
    pub const TEST: Scale = Scale {
        pgbench: 1,
        redis_keys: 2_000,
        etcd_keys: 100,
        file_kib: 2_048,
    };
}

pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../haven-dr/tests/support")
        .canonicalize()
        .unwrap()
}

pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `limit`.
pub fn poll(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET over plain HTTP/1.0: (status, body), or None when nothing answers.
pub fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{host}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

pub struct SiteA {
    pub pg: PostgresServer,
    pub redis: RedisServer,
    pub etcd: EtcdServer,
    pub files: PathBuf,
    pub app: Child,
    pub app_port: u16,
}

impl SiteA {
    fn start(root: &Path, scale: Scale) -> SiteA {
        let pg = PostgresServer::start(&root.join("a-pg")).unwrap();
        pg.create_database("app").unwrap();
        let bin = find_bin_dir().expect("PostgreSQL binaries");
        let out = Command::new(bin.join("pgbench"))
            .args(["-i", "-q", "-s", &scale.pgbench.to_string(), &pg.url("app")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let redis = RedisServer::start(&root.join("a-redis")).unwrap();
        let mut c = redis.connect().unwrap();
        for i in 0..scale.redis_keys {
            c.send(&[
                b"SET",
                format!("session:{i}").as_bytes(),
                format!("user-{}", i % 977).as_bytes(),
            ]);
        }
        c.flush().unwrap();
        for _ in 0..scale.redis_keys {
            c.read_ok("filling redis").unwrap();
        }

        let etcd = EtcdServer::start(&root.join("a-etcd")).unwrap();
        for i in 0..scale.etcd_keys {
            etcd.client()
                .put(
                    format!("/acme/workflows/wf-{i}").as_bytes(),
                    format!("{{\"state\":\"running\",\"n\":{i}}}").as_bytes(),
                )
                .unwrap();
        }

        let files = root.join("a-files");
        fs::create_dir_all(&files).unwrap();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut left = scale.file_kib as u64 * 1024;
        let mut n = 0;
        while left > 0 {
            // 64 KiB .. 1 MiB pseudo-random files (xorshift: incompressible, reproducible).
            let size = (64 * 1024 + (seed % (960 * 1024))).min(left);
            let mut data = Vec::with_capacity(size as usize);
            while (data.len() as u64) < size {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.extend_from_slice(&seed.to_le_bytes());
            }
            data.truncate(size as usize);
            let sub = files.join(format!("d{}", n % 7));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("upload-{n}.bin")), &data).unwrap();
            left -= size;
            n += 1;
        }

        let app_port = free_port("127.0.0.1");
        let app = Command::new("python3")
            .arg(support_dir().join("app.py"))
            .args(["--host", "127.0.0.1", "--port", &app_port.to_string()])
            .arg("--psql")
            .arg(bin.join("psql"))
            .args(["--db", &pg.url("app")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed by the DR tests");
        poll("site A's app", Duration::from_secs(30), || {
            http_get("127.0.0.1", app_port, "/health").map(|r| r.0) == Some(200)
        });
        SiteA {
            pg,
            redis,
            etcd,
            files,
            app,
            app_port,
        }
    }

    fn postmaster_pid(&self) -> Option<String> {
        let text = fs::read_to_string(self.pg.dir().join("data/postmaster.pid")).ok()?;
        text.lines().next().map(str::to_string)
    }
}

impl Drop for SiteA {
    fn drop(&mut self) {
        // A Child is not killed when dropped; the servers stop in their own Drop.
        let _ = self.app.kill();
        let _ = self.app.wait();
    }
}

/// Site B's plan: its ports are fixed before anything runs there.
pub struct SiteB {
    pub dir: PathBuf,
    pub pg_port: u16,
    pub redis_port: u16,
    pub app_port: u16,
    pub etcd_port: u16,
    pub etcd_peer_port: u16,
    pub files: PathBuf,
}

impl SiteB {
    fn plan(root: &Path, site_a_app_port: u16) -> SiteB {
        let dir = root.join("site-b");
        fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        while ports.len() < 5 {
            let p = free_port(SITE_B_IP);
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let b = SiteB {
            pg_port: ports[0],
            redis_port: ports[1],
            app_port: ports[2],
            etcd_port: ports[3],
            etcd_peer_port: ports[4],
            files: dir.join("files"),
            dir,
        };
        fs::write(
            b.dir.join("site.env"),
            format!(
                "IP={SITE_B_IP}\nPG_PORT={}\nREDIS_PORT={}\nAPP_PORT={}\nPG_BIN={}\nAPP={}\nSITE_A_APP_PORT={site_a_app_port}\n",
                b.pg_port,
                b.redis_port,
                b.app_port,
                find_bin_dir().expect("PostgreSQL binaries").display(),
                support_dir().join("app.py").display()
            ),
        )
        .unwrap();
        b
    }

    /// A fault: site B's Redis is too small for the tenant's keys and evicts at random while
    /// they are restored, so the restore's validation (the fingerprint) fails.
    pub fn undersize_redis(&self) {
        let mut env = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("site.env"))
            .unwrap();
        writeln!(
            env,
            "REDIS_EXTRA='--maxmemory 1000kb --maxmemory-policy allkeys-random'"
        )
        .unwrap();
    }

    /// How many times provision.sh really ran (not counting drills and dry runs).
    pub fn provision_runs(&self) -> usize {
        fs::read_to_string(self.dir.join("provision.runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    pub fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// `psql` on site B's server (None when nothing answers or the query fails).
    pub fn psql(&self, db: &str, sql: &str) -> Option<String> {
        let out = Command::new(find_bin_dir()?.join("psql"))
            .args([
                "-X",
                "-At",
                "-c",
                sql,
                &format!("postgresql://postgres@{SITE_B_IP}:{}/{db}", self.pg_port),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Whether anything listens on any of site B's ports.
    pub fn anything_listening(&self) -> Vec<u16> {
        [self.pg_port, self.redis_port, self.app_port, self.etcd_port]
            .into_iter()
            .filter(|p| {
                std::net::TcpStream::connect_timeout(
                    &format!("{SITE_B_IP}:{p}").parse().unwrap(),
                    Duration::from_millis(300),
                )
                .is_ok()
            })
            .collect()
    }

    /// Stops everything provision.sh and the restore started there.
    pub fn teardown(&self) {
        let _ = Command::new("sh")
            .arg(support_dir().join("provision.sh"))
            .arg("--remove")
            .arg(&self.dir)
            .status();
        let pid_file = PathBuf::from(format!("{}.pid", self.etcd_data().display()));
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            let _ = fs::remove_file(pid_file);
        }
    }
}

impl Drop for SiteB {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub struct World {
    pub a: Option<SiteA>,
    pub b: SiteB,
    pub bind: Bind,
    pub hook: Receiver,
    pub config: PathBuf,
    /// The key file the runbook's dns step reads (a copy the tests may break and fix).
    pub dns_key: PathBuf,
    pub root: tempfile::TempDir,
}

impl World {
    pub fn start(scale: Scale) -> World {
        let root = tempfile::Builder::new()
            .prefix("haven-dr-")
            .tempdir()
            .unwrap();
        // The servers run as the postgres user when we are root: let it traverse.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let a = SiteA::start(root.path(), scale);
        let b = SiteB::plan(root.path(), a.app_port);
        let bind = Bind::start_on(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[("acme", "A", "127.0.0.1")],
        );
        let hook = Receiver::start();
        let dns_key = root.path().join("acme-dns.key");
        fs::copy(&bind.key_file, &dns_key).unwrap();
        fs::write(root.path().join("password"), "correct horse battery staple").unwrap();
        let config = root.path().join("haven.toml");
        let w = World {
            a: Some(a),
            b,
            bind,
            hook,
            config,
            dns_key,
            root,
        };
        w.write_config("");
        w
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// haven.toml: repository, the ops webhook, tenants acme (site A) and acme-dr (site B),
    /// and the runbook acme-failover; `runbook_extra` is appended to the runbook table.
    pub fn write_config(&self, runbook_extra: &str) {
        self.write_config_with(
            runbook_extra,
            "SELECT count(*) > 0 FROM pgbench_accounts",
            "t",
        )
    }

    /// As [`World::write_config`], with the `accounts` sql step's query and expected answer.
    pub fn write_config_with(
        &self,
        runbook_extra: &str,
        accounts_query: &str,
        accounts_expect: &str,
    ) {
        let a = self
            .a
            .as_ref()
            .expect("site A is alive when the config is written");
        let b = &self.b;
        let text = format!(
            r#"[repositories.main]
url = "{repo}"
password-file = "{root}/password"

# The catalog (runs of dr) of this world only, not the machine's /var/lib/haven.
[daemon]
state-dir = "{root}/state"

[alerts.ops]
kind = "webhook"
url = "{hook}"

[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
url = "{a_pg}"
[tenants.acme.components.cache]
kind = "redis"
url = "{a_redis}"
[tenants.acme.components.state]
kind = "etcd"
endpoints = ["{a_etcd}"]
[tenants.acme.components.uploads]
kind = "files"
paths = ["{a_files}"]

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@{ip}:{b_pg}/app"
[tenants.acme-dr.components.cache]
kind = "redis"
url = "redis://{ip}:{b_redis}"
[tenants.acme-dr.components.state]
kind = "etcd"
endpoints = ["http://{ip}:{b_etcd}"]
peer-url = "http://{ip}:{b_peer}"
data-dir = "{b_etcd_data}"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{b_files}"]

[runbooks.acme-failover]
tenant = "acme"
into = "acme-dr"
rto = "30m"
drill-record = "{drill_record}"
alerts = ["ops"]
{runbook_extra}
[[runbooks.acme-failover.steps]]
name = "provision"
kind = "command"
run = ["sh", "{provision}", "{b_dir}", "${{into}}"]
outputs = ["lb_ip", "app_port", "pg_port", "redis_port"]
timeout = "2m"

[[runbooks.acme-failover.steps]]
name = "restore"
kind = "restore"
needs = ["provision"]

[[runbooks.acme-failover.steps]]
name = "smoke"
kind = "http"
url = "http://${{steps.provision.lb_ip}}:${{steps.provision.app_port}}/health"
expect-status = 200
expect-body = "ok"
timeout = "60s"
needs = ["restore"]

[[runbooks.acme-failover.steps]]
name = "accounts"
kind = "sql"
query = "{accounts_query}"
expect = "{accounts_expect}"
needs = ["restore"]

[[runbooks.acme-failover.steps]]
name = "scale-down-old"
kind = "command"
# A drill must not scale the live site down.
run = ["python3", "-c", "import os, urllib.request as u; os.environ.get('HAVEN_DR_MODE') in ('drill', 'dry-run') or u.urlopen(u.Request('http://127.0.0.1:{a_app}/scale-down', method='POST'), timeout=5)"]
on-failure = "continue"
timeout = "30s"
needs = ["smoke"]

[[runbooks.acme-failover.steps]]
name = "dns"
kind = "dns"
provider = "rfc2136"
server = "{dns}"
zone = "example.test."
record = "{record}"
type = "A"
value = "${{steps.provision.lb_ip}}"
ttl = 60
tsig-key-file = "{key}"
needs = ["smoke", "accounts"]

[[runbooks.acme-failover.steps]]
name = "tell"
kind = "notify"
alerts = ["ops"]
message = "acme now served from ${{steps.provision.lb_ip}} (run ${{run.id}})"
needs = ["dns"]
"#,
            repo = self.path().join("repo").display(),
            root = self.path().display(),
            hook = self.hook.url,
            a_pg = a.pg.url("app"),
            a_redis = a.redis.url(),
            a_etcd = a.etcd.endpoint(),
            a_files = a.files.display(),
            a_app = a.app_port,
            ip = SITE_B_IP,
            b_pg = b.pg_port,
            b_redis = b.redis_port,
            b_etcd = b.etcd_port,
            b_peer = b.etcd_peer_port,
            b_etcd_data = b.etcd_data().display(),
            b_files = b.files.display(),
            b_dir = b.dir.display(),
            provision = support_dir().join("provision.sh").display(),
            drill_record = DRILL_RECORD,
            record = RECORD,
            dns = self.bind.addr,
            key = self.dns_key.display(),
        );
        fs::write(&self.config, text).unwrap();
    }

    /// The disaster: every server of site A killed with SIGKILL, its data deleted.
    pub fn kill_site_a(&mut self) {
        let mut a = self.a.take().expect("site A is alive");
        let mut pids = vec![a.redis.pid().to_string(), a.etcd.pid().to_string()];
        pids.extend(a.postmaster_pid());
        for pid in &pids {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        let _ = a.app.kill();
        let _ = a.app.wait();
        for dir in [
            a.pg.dir().join("data"),
            a.redis.dir().to_path_buf(),
            a.etcd.data_dir().to_path_buf(),
            a.files.clone(),
        ] {
            let _ = fs::remove_dir_all(dir);
        }
        poll("site A to be gone", Duration::from_secs(30), || {
            http_get("127.0.0.1", a.app_port, "/health").is_none()
                && std::net::TcpStream::connect(("127.0.0.1", a.pg.port())).is_err()
                && std::net::TcpStream::connect(("127.0.0.1", a.redis.port())).is_err()
        });
        // Their Drop impls find nothing left to stop (warnings only).
        drop(a);
    }

    /// What BIND answers for the tenant's record now.
    pub fn dns_answer(&self) -> Vec<String> {
        self.bind.answer(RECORD, haven_dns::RecordType::A)
    }
}
