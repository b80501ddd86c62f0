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
use std::time::Duration;

use common::*;
use pitr_support::*;

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
