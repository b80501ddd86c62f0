//! What the point-in-time recovery tests share (`pitr.rs`: archive mode; `pitr_stream.rs`:
//! streaming): a source PostgreSQL server the test starts (Debian's, its own data directory
//! and port), a config and repository the `postgres` user owns, haven run as that user,
//! restored servers stopped on drop, and a running `haven wal receive` / `haven serve`
//! read line by line.
//!
//! PostgreSQL runs `archive_command` as its own system user, so (as on a real database
//! host) every haven command of these tests runs as `postgres`, on a repository it owns.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use haven_sources::servers::postgres::PostgresServer;

pub const USER: &str = "postgres";

/// Everything of one test: a root folder the postgres user owns, a config, the source
/// server.
pub struct Setup {
    pub root: PathBuf,
    pub config: PathBuf,
    pub source: PostgresServer,
    /// The port the restored server listens on.
    pub dr_port: u16,
    pub _tmp: tempfile::TempDir,
}

/// How the source's WAL reaches the repository.
#[derive(Clone, Copy, PartialEq)]
pub enum Wal {
    /// The server's archive_command runs `haven wal push`.
    Archive,
    /// `haven wal receive` on a replication slot, as a synchronous standby.
    Stream,
}

impl Setup {
    pub fn start() -> Setup {
        Setup::start_with_extra(Wal::Archive, "")
    }

    pub fn start_with(wal: Wal) -> Setup {
        Setup::start_with_extra(wal, "synchronous = true")
    }

    /// With `extra` lines in the source component's table.
    pub fn start_with_extra(wal: Wal, extra: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("haven");
        fs::create_dir_all(&root).unwrap();
        // The postgres user reaches and owns the test's folder.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let source = PostgresServer::start(&tmp.path().join("source")).unwrap();
        chown_postgres(&root);
        let config = root.join("haven.toml");
        let (dr1, dr_port) = (
            root.join("restored"),
            haven_sources::process::free_port().unwrap(),
        );
        let text = format!(
            r#"[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
retention = {{ keep-last = 1 }}
[tenants.acme.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{src}/postgres"
mode = "physical"
timeout = "90s"
{stream}
[tenants.acme.components.conf]
kind = "files"
paths = ["{conf}"]

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{dr_port}/postgres"
mode = "physical"
data-dir = "{dr1}"
timeout = "90s"
[tenants.acme-dr.components.conf]
kind = "files"
paths = ["{conf_dr}"]
"#,
            conf = root.join("conf").display(),
            conf_dr = root.join("conf-restored").display(),
            repo = root.join("repo").display(),
            src = source.port(),
            dr1 = dr1.display(),
            stream = if wal == Wal::Stream {
                format!("wal = \"stream\"\n{extra}")
            } else {
                extra.to_string()
            },
        );
        fs::write(&config, text).unwrap();
        // A second component beside the database: `--at` reports the skew between them.
        fs::create_dir_all(root.join("conf")).unwrap();
        fs::write(root.join("conf/app.toml"), "answer = 42\n").unwrap();
        fs::write(root.join("password"), "pitr test passphrase").unwrap();
        chown_postgres(&root);
        let s = Setup {
            root,
            config,
            source,
            dr_port,
            _tmp: tmp,
        };
        let (repo, password) = (s.path("repo"), s.path("password"));
        let mut init = vec!["init", "--repo", &repo, "--password-file", &password];
        init.extend_from_slice(&FAST_KDF);
        s.haven(&init).ok("init");
        if wal == Wal::Stream {
            return s;
        }
        let push = format!(
            "{} wal push --config {} acme db %p",
            haven_bin(),
            s.config.display()
        );
        s.source
            .reconfigure(&format!(
                "archive_mode = on\narchive_command = '{}'\nwal_level = replica",
                push.replace('\'', "''")
            ))
            .unwrap();
        s
    }

    pub fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// `haven ARGS` as the postgres user.
    pub fn haven(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--", haven_bin()]).args(args);
        cmd.current_dir(&self.root)
            .stdin(std::process::Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("HAVEN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("HAVEN_CONFIG", &self.config)
            .env("HAVEN_WORK_DIR", self.root.join("work"));
        fs::create_dir_all(self.root.join("work")).unwrap();
        chown_postgres(&self.root.join("work"));
        run_to_end(cmd, None, Duration::from_secs(300))
    }

    pub fn sql(&self, sql: &str) -> String {
        self.source
            .psql("postgres", sql)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Switch to a new WAL segment and wait until the server archived the old one.
    pub fn archive_now(&self) {
        let segment = self.sql("SELECT pg_walfile_name(pg_switch_wal());");
        wait_for(
            "the server to archive its WAL",
            Duration::from_secs(60),
            || {
                let (archived, failed) = {
                    let row = self.sql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver;");
                    let mut f = row.split('|');
                    (
                        f.next().unwrap_or("").to_string(),
                        f.next().unwrap_or("0").to_string(),
                    )
                };
                assert_eq!(
                    failed,
                    "0",
                    "archive_command failed; server log:\n{}",
                    self.server_log()
                );
                archived.as_str() >= segment.as_str()
            },
        );
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.source.dir().join("server.log")).unwrap_or_default()
    }

    /// Restore into acme-dr with `extra` arguments; returns the restored server's guard.
    pub fn restore(&self, extra: &[&str]) -> (Out, Restored) {
        let restored = Restored {
            data: self.root.join("restored"),
        };
        let mut args = vec![
            "tenant", "restore", "acme", "--into", "acme-dr", "--force", "--json",
        ];
        args.extend_from_slice(extra);
        (self.haven(&args), restored)
    }

    /// Restore with `extra` arguments and require the outcome `passed`.
    #[track_caller]
    pub fn restore_passed(&self, extra: &[&str]) -> Restored {
        let (out, server) = self.restore(extra);
        assert_eq!(
            outcome(&out),
            "passed",
            "restore {extra:?}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        server
    }

    /// The archived WAL segments (name, snapshot id), in order.
    pub fn wal_segments(&self) -> Vec<(String, String)> {
        let out = self.haven(&[
            "snapshots",
            "--json",
            "--repo",
            &self.path("repo"),
            "--password-file",
            &self.path("password"),
        ]);
        out.ok("snapshots");
        let mut wal: Vec<(String, String)> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|snap| {
                let tags = snap["tags"].as_array()?;
                let name = tags
                    .iter()
                    .filter_map(|t| t.as_str())
                    .find_map(|t| t.strip_prefix("haven-wal-file="))?;
                (name.len() == 24)
                    .then(|| (name.to_string(), snap["id"].as_str().unwrap().to_string()))
            })
            .collect();
        wal.sort();
        wal
    }

    /// Rows of t in the restored server, per batch: `a:100,b:50`.
    pub fn restored_rows(&self) -> String {
        self.restored_sql("SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM t GROUP BY batch) s;")
    }

    /// `sql` on the restored server (its output, trimmed).
    pub fn restored_sql(&self, sql: &str) -> String {
        psql_at(self.dr_port, sql)
    }

    /// SIGKILL to the source's postmaster.
    pub fn kill_primary(&self) {
        let pid = fs::read_to_string(self.source.data_dir().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        assert!(Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success());
    }
}

/// `sql` as postgres on the loopback server at `port` (its output, trimmed); panics with
/// psql's error when it fails.
pub fn psql_at(port: u16, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .args(["-d", "postgres", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql on port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A restored server, stopped on drop.
pub struct Restored {
    pub data: PathBuf,
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let bin = haven_sources::servers::postgres::find_bin_dir().unwrap();
            let _ = Command::new("runuser")
                .args(["-u", USER, "--"])
                .arg(bin.join("pg_ctl"))
                .args(["stop", "-w", "-s", "-m", "immediate", "-D"])
                .arg(&self.data)
                .status();
        }
    }
}

pub fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn outcome(out: &Out) -> String {
    let report = out.json();
    report["components"][0]["outcome"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `haven wal receive` as the postgres user, its output lines on a channel.
pub struct Receiver {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Receiver {
    pub fn start(s: &Setup, extra: &[&str]) -> Receiver {
        let mut args = vec!["wal", "receive", "acme", "db"];
        args.extend_from_slice(extra);
        let spool = s.path("spool");
        args.extend_from_slice(&["--spool", &spool]);
        Receiver::spawn(s, &args, false)
    }

    /// `haven ARGS` as the postgres user, reading its stdout (or its stderr: the daemon
    /// logs there).
    pub fn spawn(s: &Setup, args: &[&str], stderr: bool) -> Receiver {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--", haven_bin()])
            .args(args)
            .current_dir(&s.root)
            .env("HAVEN_CONFIG", &s.config)
            .env("HAVEN_WORK_DIR", s.root.join("work"))
            .stdin(std::process::Stdio::null());
        if stderr {
            cmd.stderr(std::process::Stdio::piped());
        } else {
            cmd.stdout(std::process::Stdio::piped());
        }
        fs::create_dir_all(s.root.join("work")).unwrap();
        chown_postgres(&s.root.join("work"));
        let mut child = cmd.spawn().unwrap();
        let out: Box<dyn std::io::Read + Send> = if stderr {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Receiver {
            child,
            lines,
            seen: vec![],
        }
    }

    /// Wait for a line containing `text`; panics with every line seen after `limit`.
    pub fn wait_line(&mut self, text: &str, limit: Duration) -> String {
        let end = std::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} from haven wal receive within {limit:?}; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM to haven itself (runuser's child: runuser answers SIGTERM by killing it).
    pub fn stop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "wal receive ended with {status}");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pg_ctl` or `pg_basebackup` of the server's bin dir as the postgres user.
pub fn as_postgres(s: &Setup, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(s.source.bin_dir().join(tool))
        .args(args)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
