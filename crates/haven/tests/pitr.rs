//! Point-in-time recovery of a physical PostgreSQL component with WAL archived by the
//! server's own `archive_command` calling `haven wal push`: base backups through `haven
//! tenant backup`, restores to a time between two known writes, to a named restore point
//! and to the latest archived WAL, each into a new data directory and server, checked by
//! the rows that must and must not be there. Then what must be refused before anything
//! starts: a time before the window, an unknown restore point, and `--latest` over a gap
//! in the archive; and a push that drains the segments waiting behind it.
//! Shared setup: `pitr_support`.

mod common;
mod pitr_support;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pitr_support::*;

/// Base backups read as files (Haven runs beside the server: `base-backup = "auto"`).
#[test]
fn a_physical_component_restores_to_a_time_a_restore_point_and_the_latest_wal() {
    restores_to_each_kind_of_target("", "every file read back matches its content hash");
}

/// The same with base backups through `pg_basebackup` (a server on another machine).
#[test]
fn a_component_backed_up_with_pg_basebackup_restores_to_each_kind_of_target() {
    restores_to_each_kind_of_target("base-backup = \"stream\"", "pg_verifybackup");
}

fn restores_to_each_kind_of_target(extra: &str, checked_by: &str) {
    let s = Setup::start_with_extra(Wal::Archive, extra);
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
    assert!(out.stdout.contains(checked_by), "{}", out.stdout);
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

    let _server = s.restore_passed(&["--component", "db", "--at", &moment]);
    assert_eq!(s.restored_rows(), "a:100,b:50", "--at {moment}");
    drop(_server);

    // The whole tenant at that moment: the database replayed to it, the files as their
    // point backed them up; each says which moment it holds, and the skew is said.
    let (out, _server) = s.restore(&["--at", &moment]);
    assert_eq!(
        outcome(&out),
        "passed",
        "tenant --at:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(s.restored_rows(), "a:100,b:50", "tenant --at {moment}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let moment_of = |name: &str| -> String {
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| {
                c["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["name"] == "moment")
            })
            .map(|k| k["detail"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no moment check for {name}: {report}"))
    };
    assert!(
        moment_of("db").contains("replayed from WAL to the target"),
        "{report}"
    );
    assert!(moment_of("conf").contains("as recovery point"), "{report}");
    drop(_server);
    // Said once, on a terminal or a log (not in --json, whose checks carry it).
    let out = s.haven(&[
        "tenant", "restore", "acme", "--into", "acme-dr", "--force", "--at", &moment,
    ]);
    out.ok("tenant restore --at, human output");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("skew between components"), "{said}");
    let _server = Restored {
        data: s.path("restored").into(),
    };
    drop(_server);

    let _server = s.restore_passed(&["--component", "db", "--name", "before-d"]);
    assert_eq!(s.restored_rows(), "a:100,b:50,c:25", "--name before-d");
    drop(_server);

    let _server = s.restore_passed(&["--component", "db", "--latest"]);
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
    let _server = s.restore_passed(&["--component", "db", "--latest"]);
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

/// A base backup read as files while pgbench writes: the second one reuses the files no
/// write touched and reads the others again (pages torn by concurrent writes are
/// repaired by replay), and both the drill (`tenant verify`: as backed up, then
/// `pg_amcheck`) and `--latest` restore a cluster equal to the source.
#[test]
fn a_base_backup_read_as_files_under_pgbench_load_restores_the_same_data() {
    let s = Setup::start();
    let pgbench = s.source.bin_dir().join("pgbench");
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        s.source.port()
    );
    let out = Command::new(&pgbench)
        .args(["-i", "-s", "4", "-q", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
    s.sql("CREATE TABLE cold AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g;");
    s.haven(&["tenant", "backup", "acme"])
        .ok("the first base backup");

    // pgbench writes before, during and after the second base backup.
    let mut load = Command::new(&pgbench)
        .args(["-n", "-c", "2", "-T", "600", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("pgbench to commit", Duration::from_secs(30), || {
        s.sql("SELECT count(*) > 50 FROM pgbench_history;") == "t"
    });
    let backup = s.haven(&["tenant", "backup", "acme", "--json"]);
    let _ = load.kill();
    let _ = load.wait();
    backup.ok("the base backup under load");
    s.archive_now();

    // The second snapshot of the data directory reused the cold files of the first.
    let snaps = s.haven(&[
        "snapshots",
        "--json",
        "--repo",
        &s.path("repo"),
        "--password-file",
        &s.path("password"),
    ]);
    let snaps: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    let bases: Vec<&serde_json::Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["paths"][0].as_str() == Some(&s.source.data_dir().display().to_string()))
        .collect();
    assert_eq!(bases.len(), 2, "two base backups as files: {snaps}");
    let second = &bases[1]["summary"];
    let (unchanged, files) = (
        second["files_unchanged"].as_u64().unwrap(),
        second["files"].as_u64().unwrap(),
    );
    assert!(
        unchanged > 0 && unchanged < files,
        "cold files reused, written ones read again: {second}"
    );

    let drill = s.haven(&["tenant", "verify", "acme", "--json"]);
    assert_eq!(
        outcome(&drill),
        "passed",
        "verify:\n{}\n{}",
        drill.stdout,
        drill.stderr
    );
    assert!(
        drill.stdout.contains("pg_amcheck: every table"),
        "{}",
        drill.stdout
    );

    let fingerprint = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || '/' || \
                       (SELECT count(*) FROM pgbench_history) || '/' || \
                       (SELECT sum(tbalance) FROM pgbench_tellers) || '/' || \
                       (SELECT count(*) FROM cold);";
    let source = s.sql(fingerprint);
    let _server = s.restore_passed(&["--component", "db", "--latest"]);
    assert_eq!(
        s.restored_sql(fingerprint),
        source,
        "the restored cluster's data"
    );
}
