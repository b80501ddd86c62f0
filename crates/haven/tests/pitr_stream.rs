//! Point-in-time recovery with `wal = "stream"`: Haven's receiver on a replication slot
//! (`haven wal receive`, and `haven serve` by itself). The RPO after `kill -9` of the
//! primary, synchronous and not; a receiver restart resuming from its slot; a slot past
//! `slot-max-lag` dropped; a timeline switch of the source followed. Shared setup:
//! `pitr_support`.

mod common;
mod pitr_support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;
use pitr_support::*;

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
    let backup = s.haven(&["tenant", "backup", "acme"]);
    backup.ok("the base backup");
    assert!(
        !backup.stderr.contains("not in the repository"),
        "the receiver stored the backup's WAL: {}",
        backup.stderr
    );

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
    let killed = std::time::Instant::now();
    s.kill_primary();
    receiver.wait_line("pg_receivewal ended", Duration::from_secs(30));
    receiver.wait_line("caught up", Duration::from_secs(30));
    let caught_up = killed.elapsed();
    receiver.stop();
    assert!(
        receiver.seen.iter().any(|l| l.contains(".partial")),
        "the newest WAL was stored as a partial segment:\n{}",
        receiver.seen.join("\n")
    );

    let _server = s.restore_passed(&["--component", "db", "--latest"]);
    let restored =
        s.restored_sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE batch = 'w';");
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
    // This test's receiver only: the tests running beside it use the same slot name.
    let pids = Command::new("pgrep")
        .args(["-f", &format!("pg_receivewal -D {}", s.path("spool"))])
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
    // Restorable at once: the backup returned once the receiver had stored its WAL.
    let drill = s.haven(&["tenant", "verify", "acme", "--json"]);
    assert_eq!(
        outcome(&drill),
        "passed",
        "a drill right after the backup:\n{}\n{}",
        drill.stdout,
        drill.stderr
    );
    let mut newest_acked = 0i64;
    for _ in 0..60 {
        let row = s.sql(
            "INSERT INTO t (batch) VALUES ('w') RETURNING (extract(epoch FROM at) * 1000)::bigint;",
        );
        newest_acked = row.lines().next().unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    s.kill_primary();
    receiver.wait_line("pg_receivewal ended", Duration::from_secs(30));
    receiver.wait_line("caught up", Duration::from_secs(30));
    receiver.stop();

    let _server = s.restore_passed(&["--component", "db", "--latest"]);
    let newest =
        s.restored_sql("SELECT coalesce(max((extract(epoch FROM at) * 1000)::bigint), 0) FROM t;");
    let newest: i64 = newest.parse().unwrap();
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
    let on_standby = |sql: &str| psql_at(port, sql);
    s.sql("INSERT INTO t (batch) SELECT 'b' FROM generate_series(1, 5);");
    wait_for("the standby to replay b", Duration::from_secs(30), || {
        on_standby("SELECT count(*) FROM t WHERE batch = 'b';") == "5"
    });

    // Failover: the primary dies, the standby is promoted, the address moves.
    receiver.stop();
    s.kill_primary();
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

    let _server = s.restore_passed(&["--component", "db", "--latest"]);
    assert_eq!(s.restored_rows(), "a:10,b:5,c:3", "both timelines restored");
}
