//! Point-in-time recovery of a physical PostgreSQL component against a real server the
//! test starts (PostgreSQL from Debian, its own data directory and port): base backups
//! through `haven tenant backup`, WAL through the server's own `archive_command` calling
//! `haven wal push`, restores to a time between two known writes, to a named restore
//! point and to the latest archived WAL, each into a new data directory and server,
//! checked by the rows that must and must not be there. Then what must be refused before
//! anything starts: a time before the window, an unknown restore point, and `--latest`
//! over a gap in the archive.
//!
//! PostgreSQL runs `archive_command` as its own system user, so (as on a real database
//! host) every haven command of this test runs as `postgres`, on a repository it owns.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use haven_sources::servers::postgres::PostgresServer;

const USER: &str = "postgres";

/// Everything of one test: a root folder the postgres user owns, a config, the source
/// server.
struct Setup {
    root: PathBuf,
    config: PathBuf,
    source: PostgresServer,
    /// The port the restored server listens on.
    dr_port: u16,
    _tmp: tempfile::TempDir,
}

/// How the source's WAL reaches the repository.
#[derive(Clone, Copy, PartialEq)]
enum Wal {
    /// The server's archive_command runs `haven wal push`.
    Archive,
    /// `haven wal receive` on a replication slot, as a synchronous standby.
    Stream,
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with(Wal::Archive)
    }

    fn start_with(wal: Wal) -> Setup {
        Setup::start_with_extra(wal, "synchronous = true")
    }

    /// With `extra` lines in the source component's table.
    fn start_with_extra(wal: Wal, extra: &str) -> Setup {
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

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{dr_port}/postgres"
mode = "physical"
data-dir = "{dr1}"
timeout = "90s"
"#,
            repo = root.join("repo").display(),
            src = source.port(),
            dr1 = dr1.display(),
            stream = if wal == Wal::Stream {
                format!("wal = \"stream\"\n{extra}")
            } else {
                String::new()
            },
        );
        fs::write(&config, text).unwrap();
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

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// `haven ARGS` as the postgres user.
    fn haven(&self, args: &[&str]) -> Out {
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

    fn sql(&self, sql: &str) -> String {
        self.source
            .psql("postgres", sql)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Switch to a new WAL segment and wait until the server archived the old one.
    fn archive_now(&self) {
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

    fn server_log(&self) -> String {
        fs::read_to_string(self.source.dir().join("server.log")).unwrap_or_default()
    }

    /// Restore into acme-dr with `extra` arguments; returns the restored server's guard.
    fn restore(&self, extra: &[&str]) -> (Out, Restored) {
        let restored = Restored {
            data: self.root.join("restored"),
        };
        let mut args = vec![
            "tenant", "restore", "acme", "--into", "acme-dr", "--force", "--json",
        ];
        args.extend_from_slice(extra);
        (self.haven(&args), restored)
    }

    /// The archived WAL segments (name, snapshot id), in order.
    fn wal_segments(&self) -> Vec<(String, String)> {
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

    /// Rows of t in the restored server.
    fn restored_rows(&self) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.dr_port.to_string())
            .args(["-d", "postgres", "-c", "SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM t GROUP BY batch) s;"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A restored server, stopped on drop.
struct Restored {
    data: PathBuf,
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

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn outcome(out: &Out) -> String {
    let report = out.json();
    report["components"][0]["outcome"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_physical_component_restores_to_a_time_a_restore_point_and_the_latest_wal() {
    let s = Setup::start();
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL, at timestamptz DEFAULT clock_timestamp());");
    s.sql("INSERT INTO t (batch) SELECT 'a' FROM generate_series(1, 100);");
    let out = s.haven(&["tenant", "backup", "acme"]);
    out.ok("the base backup");

    // b committed, then the target moment, then c: --at the moment has b and no c.
    s.sql("INSERT INTO t (batch) SELECT 'b' FROM generate_series(1, 50);");
    let moment = s.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"');");
    s.sql("INSERT INTO t (batch) SELECT 'c' FROM generate_series(1, 25);");
    s.sql("SELECT pg_create_restore_point('before-d');");
    s.sql("INSERT INTO t (batch) SELECT 'd' FROM generate_series(1, 10);");
    s.archive_now();
    s.sql("INSERT INTO t (batch) SELECT 'e' FROM generate_series(1, 5);");
    s.archive_now();

    let points = s.haven(&["tenant", "points", "acme"]);
    points.ok("points");
    assert!(
        points.stdout.contains("db: restorable from"),
        "points shows the window:\n{}",
        points.stdout
    );

    // The drill: the point restored into a throwaway server, checked, stopped.
    let out = s.haven(&["tenant", "verify", "acme", "--json"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "verify:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("pg_verifybackup"), "{}", out.stdout);
    assert!(
        out.stdout.contains("pg_amcheck: every table"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("\"cleanup\""),
        "the scratch server stopped: {}",
        out.stdout
    );

    let (out, _server) = s.restore(&["--component", "db", "--at", &moment]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--at {moment}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:100,b:50", "--at {moment}");
    drop(_server);

    let (out, _server) = s.restore(&["--component", "db", "--name", "before-d"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--name:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:100,b:50,c:25", "--name before-d");
    drop(_server);

    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--latest:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:100,b:50,c:25,d:10,e:5", "--latest");
    drop(_server);

    // Refused before anything starts, naming the window or what is known.
    let (out, _server) = s.restore(&["--component", "db", "--at", "2001-01-01 00:00:00"]);
    out.assert_one_line_error(1, &["db", "restorable window"]);
    let (out, _server) = s.restore(&["--component", "db", "--name", "no-such-point"]);
    out.assert_one_line_error(1, &["no restore point", "before-d"]);

    // A second base backup and retention keeping one point: the WAL only the first
    // needed goes, and --latest still restores everything.
    s.haven(&["tenant", "backup", "acme"])
        .ok("the second base backup");
    s.sql("INSERT INTO t (batch) SELECT 'f' FROM generate_series(1, 3);");
    s.archive_now();
    s.sql("INSERT INTO t (batch) SELECT 'g' FROM generate_series(1, 2);");
    s.archive_now();
    let before = s.wal_segments();
    let config = haven_ops::Config::load(&s.config).unwrap();
    let report = haven_ops::retention::apply_retention(
        &config,
        "acme",
        Duration::from_secs(30),
        false,
        &haven_ops::backup::Observer::quiet(),
    )
    .unwrap();
    let after = s.wal_segments();
    assert!(
        report.wal_removed > 0 && after.len() < before.len(),
        "retention removed the WAL of the forgotten base backup: {before:?} -> {after:?} ({report:?})"
    );
    assert_eq!(after.last(), before.last(), "the newest WAL stays");
    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--latest after retention:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:100,b:50,c:25,d:10,e:5,f:3,g:2");
    drop(_server);

    // A WAL file deleted from the archive: --latest refuses and names the gap.
    let wal = after;
    assert!(
        wal.len() >= 3,
        "several WAL segments archived (one in the middle goes): {wal:?}"
    );
    let checked = s.haven(&["tenant", "points", "acme", "--check"]);
    checked.ok("points --check before the gap");
    assert!(
        checked.stdout.contains("continuous to"),
        "{}",
        checked.stdout
    );
    let (gap_name, gap_id) = wal[wal.len() - 2].clone();
    s.haven(&[
        "forget",
        &gap_id,
        "--repo",
        &s.path("repo"),
        "--password-file",
        &s.path("password"),
    ])
    .ok("forget one WAL segment");
    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    out.assert_one_line_error(1, &["gap", &gap_name]);
    let checked = s.haven(&["tenant", "points", "acme", "--check"]);
    assert_eq!(
        checked.code, 1,
        "points --check finds the gap:\n{}\n{}",
        checked.stdout, checked.stderr
    );
    assert!(
        checked
            .stdout
            .contains(&format!("GAP: {gap_name} is missing")),
        "{}",
        checked.stdout
    );
}

/// `haven wal receive` as the postgres user, its output lines on a channel.
struct Receiver {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Receiver {
    fn start(s: &Setup, extra: &[&str]) -> Receiver {
        let mut args = vec!["wal", "receive", "acme", "db"];
        args.extend_from_slice(extra);
        let spool = s.path("spool");
        args.extend_from_slice(&["--spool", &spool]);
        Receiver::spawn(s, &args, false)
    }

    /// `haven ARGS` as the postgres user, reading its stdout (or its stderr: the daemon
    /// logs there).
    fn spawn(s: &Setup, args: &[&str], stderr: bool) -> Receiver {
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
    fn wait_line(&mut self, text: &str, limit: Duration) -> String {
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
    fn stop(&mut self) {
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

/// The RPO test of `wal = "stream"` with `synchronous = true`: the receiver is restarted
/// while the server writes (it resumes from its slot), then a writer commits a row every
/// 50 ms, the primary is killed with SIGKILL, and `--latest` must restore every row whose
/// commit the server acknowledged (RPO zero), from the receiver's partial segment.
#[test]
fn a_streamed_synchronous_component_loses_no_acknowledged_commit_when_the_primary_is_killed() {
    let s = Setup::start_with(Wal::Stream);
    let mut receiver = Receiver::start(&s, &[]);
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db (synchronous)",
        Duration::from_secs(60),
    );
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL, at timestamptz DEFAULT clock_timestamp());");
    s.sql("INSERT INTO t (batch) SELECT 'a' FROM generate_series(1, 100);");
    s.haven(&["tenant", "backup", "acme"]).ok("the base backup");

    // The receiver stops (a daemon restart) while the server writes and switches
    // segments: the slot kept that WAL, so the next receiver resumes with no gap.
    receiver.stop();
    for _ in 0..2 {
        s.sql(
            "INSERT INTO t (batch) SELECT 'r' FROM generate_series(1, 10); SELECT pg_switch_wal();",
        );
    }
    let mut receiver = Receiver::start(&s, &[]);
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db (synchronous)",
        Duration::from_secs(60),
    );

    // Haven becomes the server's synchronous standby: a commit returns once the receiver
    // has it on disk (the test server runs with synchronous_commit off: on for this).
    s.sql("ALTER SYSTEM SET synchronous_commit = 'on';");
    s.sql("ALTER SYSTEM SET synchronous_standby_names = 'haven_acme_db';");
    s.sql("SELECT pg_reload_conf();");
    wait_for(
        "the receiver to be the synchronous standby",
        Duration::from_secs(30),
        || {
            s.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'haven_acme_db' AND sync_state = 'sync';") == "1"
        },
    );

    let mut acked = vec![];
    for _ in 0..40 {
        let id = s.sql("INSERT INTO t (batch) VALUES ('w') RETURNING id;");
        acked.push(id.lines().next().unwrap_or("").trim().to_string());
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = fs::read_to_string(s.source.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let killed = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    receiver.wait_line("pg_receivewal ended", Duration::from_secs(30));
    receiver.wait_line("caught up", Duration::from_secs(30));
    let caught_up = killed.elapsed();
    receiver.stop();
    assert!(
        receiver.seen.iter().any(|l| l.contains(".partial")),
        "the newest WAL was stored as a partial segment:\n{}",
        receiver.seen.join("\n")
    );

    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--latest:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let restored = Command::new("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(s.dr_port.to_string())
        .args([
            "-d",
            "postgres",
            "-c",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE batch = 'w';",
        ])
        .output()
        .unwrap();
    let restored = String::from_utf8_lossy(&restored.stdout).trim().to_string();
    let restored: Vec<&str> = restored.split(',').collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !restored.contains(&id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged commits lost after kill -9 of the primary: {lost:?} (restored {} of {}; receiver:\n{})",
        restored.len(),
        acked.len(),
        receiver.seen.join("\n")
    );
    assert_eq!(s.restored_rows(), format!("a:100,r:20,w:{}", acked.len()));
    eprintln!(
        "{} acknowledged commits, all restored; the receiver had stored everything {:.2} s after the kill",
        acked.len(),
        caught_up.as_secs_f64()
    );
}

/// The receiver stalls (its pg_receivewal stopped with SIGSTOP) while the server goes on
/// writing: past `slot-max-lag` the slot is dropped rather than let it fill the server's
/// disk, the event names the gap, and a new slot streams again.
#[test]
fn a_slot_past_slot_max_lag_is_dropped_and_streaming_resumes() {
    let s = Setup::start_with_extra(Wal::Stream, "slot-max-lag = \"64MB\"");
    // (asynchronous: the stalled receiver must not hold up the server's commits)
    let mut receiver = Receiver::start(&s, &["--check-every", "1s"]);
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db",
        Duration::from_secs(60),
    );
    receiver.wait_line("lag: the slot holds", Duration::from_secs(30));
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL);");
    let retained = || {
        s.sql("SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), -1)::bigint FROM pg_replication_slots WHERE slot_name = 'haven_acme_db';")
            .parse::<i64>()
            .unwrap_or(-1)
    };
    wait_for("the slot to be streamed", Duration::from_secs(30), || {
        s.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'haven_acme_db' AND active;") == "1"
            && retained() >= 0
    });
    let pids = Command::new("pgrep")
        .args(["-f", "pg_receivewal.*haven_acme_db"])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(!pid.is_empty(), "pg_receivewal runs");
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // Each switch after a write moves the server to a new 16 MB segment the slot keeps.
    for i in 0..6 {
        s.sql(&format!(
            "INSERT INTO t (batch) VALUES ('{i}'); SELECT pg_switch_wal();"
        ));
    }
    let held = retained();
    assert!(held > 64 << 20, "the stalled slot holds {held} bytes");
    let line = receiver.wait_line("dropped it", Duration::from_secs(30));
    assert!(
        line.contains("gap") && line.contains("base backup"),
        "{line}"
    );
    // A new slot, streaming from the server's position: the WAL is released.
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db",
        Duration::from_secs(30),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = retained();
        if (0..32 << 20).contains(&held) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new slot still holds {held} bytes; receiver:\n{}\n{:?}",
            receiver.seen.join("\n"),
            receiver.lines.try_iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    receiver.stop();
}

/// `haven serve` runs a receiver for a streaming component by itself: WAL arrives in the
/// repository without `haven wal receive`, and the daemon stops cleanly.
#[test]
fn the_daemon_receives_wal_of_a_streaming_component() {
    let state = "[daemon]\nstate-dir = \"state\"\napi-token-file = \"token\"\n";
    let s = Setup::start_with_extra(Wal::Stream, "");
    let text = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, format!("{state}{text}")).unwrap();
    fs::write(s.root.join("token"), "pitr-test-token-0123456789abcdef").unwrap();
    chown_postgres(&s.root);
    let listen = format!("127.0.0.1:{}", haven_sources::process::free_port().unwrap());
    let mut daemon = Receiver::spawn(&s, &["serve", "--listen", &listen], true);
    daemon.wait_line(
        "receiving WAL on slot haven_acme_db",
        Duration::from_secs(60),
    );
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL);");
    s.sql("INSERT INTO t (batch) VALUES ('x'); SELECT pg_switch_wal();");
    wait_for(
        "the daemon to store a complete segment",
        Duration::from_secs(60),
        || !s.wal_segments().is_empty(),
    );
    daemon.stop();
}

/// Archive mode with `--ahead`: segments that piled up while archiving failed are pushed
/// by one call; the server's own calls for the others find them pushed (their marks are
/// used up) and every segment is in the repository.
#[test]
fn a_push_archives_the_segments_waiting_behind_it() {
    let s = Setup::start();
    // The server runs archive_command without the test's HAVEN_WORK_DIR: the config
    // says where the marks go.
    let text = fs::read_to_string(&s.config).unwrap();
    let work = s.root.join("work");
    fs::create_dir_all(&work).unwrap();
    chown_postgres(&work);
    fs::write(
        &s.config,
        format!("work-dir = \"{}\"\n{text}", work.display()),
    )
    .unwrap();
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL);");
    s.sql("ALTER SYSTEM SET archive_command = '/bin/false';");
    s.sql("SELECT pg_reload_conf();");
    let mut switched = vec![];
    for i in 0..3 {
        s.sql(&format!("INSERT INTO t (batch) VALUES ('{i}');"));
        switched.push(s.sql("SELECT pg_walfile_name(pg_switch_wal());"));
    }
    wait_for(
        "the server to mark them ready",
        Duration::from_secs(30),
        || {
            switched.iter().all(|w| {
                s.source
                    .data_dir()
                    .join("pg_wal/archive_status")
                    .join(format!("{w}.ready"))
                    .exists()
            })
        },
    );
    let push = format!(
        "{} wal push --ahead 8 --config {} acme db %p",
        haven_bin(),
        s.config.display()
    );
    s.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{}';",
        push.replace('\'', "''")
    ));
    s.sql("SELECT pg_reload_conf();");
    let last = switched.last().unwrap().clone();
    wait_for(
        "the server to archive them",
        Duration::from_secs(60),
        || s.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") >= last,
    );
    let archived: Vec<String> = s.wal_segments().into_iter().map(|(n, _)| n).collect();
    for w in &switched {
        assert!(archived.contains(w), "{w} archived: {archived:?}");
    }
    let marks: Vec<PathBuf> = fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("haven-wal-ahead-acme-db-"))
        })
        .collect();
    assert_eq!(
        marks.len(),
        1,
        "one call pushed ahead, leaving marks in {}",
        work.display()
    );
    let left: Vec<_> = fs::read_dir(&marks[0]).unwrap().collect();
    assert!(
        left.is_empty(),
        "every mark used up by the server's own calls: {left:?}"
    );
}

/// The RPO of asynchronous streaming: a writer commits a timestamped row every 50 ms, the
/// primary is killed with SIGKILL, and the newest row `--latest` restores is at most 1 s
/// older than the newest acknowledged one.
#[test]
fn an_asynchronous_stream_restores_to_within_a_second_of_the_last_acknowledged_commit() {
    let s = Setup::start_with_extra(Wal::Stream, "");
    let mut receiver = Receiver::start(&s, &[]);
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db",
        Duration::from_secs(60),
    );
    // Commits durable on the primary before they return (the test server's default is off).
    s.sql("ALTER SYSTEM SET synchronous_commit = 'on';");
    s.sql("SELECT pg_reload_conf();");
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL, at timestamptz DEFAULT clock_timestamp());");
    s.haven(&["tenant", "backup", "acme"]).ok("the base backup");
    let mut newest_acked = 0i64;
    for _ in 0..60 {
        let row = s.sql(
            "INSERT INTO t (batch) VALUES ('w') RETURNING (extract(epoch FROM at) * 1000)::bigint;",
        );
        newest_acked = row.lines().next().unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = fs::read_to_string(s.source.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    receiver.wait_line("pg_receivewal ended", Duration::from_secs(30));
    receiver.wait_line("caught up", Duration::from_secs(30));
    receiver.stop();

    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--latest:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let newest = Command::new("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(s.dr_port.to_string())
        .args([
            "-d",
            "postgres",
            "-c",
            "SELECT coalesce(max((extract(epoch FROM at) * 1000)::bigint), 0) FROM t;",
        ])
        .output()
        .unwrap();
    let newest: i64 = String::from_utf8_lossy(&newest.stdout)
        .trim()
        .parse()
        .unwrap();
    let behind = newest_acked - newest;
    assert!(
        behind <= 1000,
        "the newest restored row is {behind} ms older than the newest acknowledged one (RPO over 1 s); receiver:\n{}",
        receiver.seen.join("\n")
    );
    eprintln!(
        "asynchronous stream: newest restored row {behind} ms behind the newest acknowledged one"
    );
}

/// `pg_ctl` or `pg_basebackup` of the server's bin dir as the postgres user.
fn as_postgres(s: &Setup, tool: &str, args: &[&str]) {
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

/// A failover of the source: a standby is promoted (timeline 2) after the primary is
/// killed, the component's address moves to it (as a DNS name would), and the receiver
/// says so (`timeline switch`), archives the history file and goes on; `--latest` then
/// restores what both timelines hold.
#[test]
fn a_timeline_switch_of_the_source_is_alerted_and_followed() {
    let s = Setup::start_with_extra(Wal::Stream, "");
    let mut receiver = Receiver::start(&s, &[]);
    receiver.wait_line(
        "receiving WAL on slot haven_acme_db",
        Duration::from_secs(60),
    );
    s.sql("CREATE TABLE t (id serial PRIMARY KEY, batch text NOT NULL);");
    s.sql("INSERT INTO t (batch) SELECT 'a' FROM generate_series(1, 10);");
    s.haven(&["tenant", "backup", "acme"]).ok("the base backup");

    // The standby: a copy of the primary that streams from it, on its own port.
    let standby = s.root.join("standby");
    let port = haven_sources::process::free_port().unwrap();
    as_postgres(
        &s,
        "pg_basebackup",
        &[
            "-D",
            &standby.display().to_string(),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-p",
            &s.source.port().to_string(),
            "-U",
            "postgres",
        ],
    );
    fs::OpenOptions::new()
        .append(true)
        .open(standby.join("postgresql.auto.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("port = {port}\n").as_bytes()))
        .unwrap();
    let log = standby.join("server.log").display().to_string();
    let data = standby.display().to_string();
    as_postgres(
        &s,
        "pg_ctl",
        &["start", "-w", "-s", "-D", &data, "-l", &log],
    );
    let _standby = Restored {
        data: standby.clone(),
    };
    let on_standby = |sql: &str| -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string())
            .args(["-d", "postgres", "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    s.sql("INSERT INTO t (batch) SELECT 'b' FROM generate_series(1, 5);");
    wait_for("the standby to replay b", Duration::from_secs(30), || {
        on_standby("SELECT count(*) FROM t WHERE batch = 'b';") == "5"
    });

    // Failover: the primary dies, the standby is promoted, the address moves.
    receiver.stop();
    let pid = fs::read_to_string(s.source.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    as_postgres(&s, "pg_ctl", &["promote", "-w", "-s", "-D", &data]);
    let text = fs::read_to_string(&s.config).unwrap();
    let moved = text.replacen(
        &format!("127.0.0.1:{}/postgres\"\nmode", s.source.port()),
        &format!("127.0.0.1:{port}/postgres\"\nmode"),
        1,
    );
    assert_ne!(moved, text, "the source's url was rewritten");
    fs::write(&s.config, moved).unwrap();

    let mut receiver = Receiver::start(&s, &[]);
    let line = receiver.wait_line("timeline switch", Duration::from_secs(60));
    assert!(line.contains("00000002.history"), "{line}");
    on_standby("INSERT INTO t (batch) SELECT 'c' FROM generate_series(1, 3);");
    on_standby("SELECT pg_switch_wal();");
    // The segment of timeline 2 that the switch completed (c is in it), not the history
    // file or a partial copy stored before c.
    while receiver
        .wait_line("stored 0000000200", Duration::from_secs(60))
        .contains(".partial")
    {}
    receiver.stop();

    let (out, _server) = s.restore(&["--component", "db", "--latest"]);
    assert_eq!(
        outcome(&out),
        "passed",
        "--latest:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:10,b:5,c:3", "both timelines restored");
}
