//! The `postgres` component against real throwaway PostgreSQL servers: backup into memory,
//! restore into new databases (on another server, parallel and streamed), fingerprints
//! taken in the dump's snapshot while a writer inserts, refusal to overwrite, scratch
//! databases, and the errors of a wrong port, a wrong password and a missing pg_dump.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use haven_sources::postgres::{PostgresComponent, PostgresConfig};
use haven_sources::process;
use haven_sources::servers::postgres::PostgresServer;
use haven_sources::{Fingerprint, RestoreOptions, SourceError, StreamComponent};

fn component(server: &PostgresServer, db: &str, jobs: Option<usize>) -> PostgresComponent {
    PostgresComponent::new(PostgresConfig {
        url: server.url(db),
        jobs,
        bin_dir: Some(server.bin_dir().to_path_buf()),
        keep_owners: false,
        timeout: None,
        mode: Default::default(),
        wal: Default::default(),
        synchronous: false,
        slot: None,
        slot_max_lag: None,
        data_dir: None,
        base_backup: Default::default(),
    })
}

/// A database with pgbench's tables at `scale` plus tables of awkward values and names.
fn fill(server: &PostgresServer, db: &str, scale: u32) {
    server.create_database(db).unwrap();
    process::Tool::new(
        server.bin_dir().join("pgbench"),
        "pgbench -i",
        "install postgresql-contrib",
    )
    .args(["-i", "-q", "-s", &scale.to_string()])
    .arg(server.url(db))
    .run()
    .unwrap();
    server
        .psql(
            db,
            r#"
            CREATE TABLE odd (id serial PRIMARY KEY, label text, note text, data bytea,
                              amount numeric, at timestamptz, f float8, span interval);
            INSERT INTO odd (label, note, data, amount, at, f, span) VALUES
              ('größe ✓ 日本', NULL, '\x00ff10', 1.50, '2024-02-29 12:00:00+02', 0.1, '1 day 2 hours'),
              (NULL, E'line1\nline2', NULL, NULL, NULL, 'NaN', NULL),
              ('emoji 🐘', E'tab\there', '\x', -3, '1999-12-31 23:59:59.999999+00', 1e300, '-5 min');
            CREATE SCHEMA "We ird";
            CREATE TABLE "We ird"."t|x" (v int, w text);
            INSERT INTO "We ird"."t|x" SELECT g, repeat('x', g % 7) FROM generate_series(1, 1000) g;
            CREATE VIEW odd_labels AS SELECT label FROM odd;
            "#,
        )
        .unwrap();
}

fn backup(c: &PostgresComponent) -> (Vec<u8>, Fingerprint) {
    backup_with(c, |_| {})
}

/// Back up into memory; `during` runs inside the sink before the dump is read.
fn backup_with(c: &PostgresComponent, during: impl FnOnce(&mut Vec<u8>)) -> (Vec<u8>, Fingerprint) {
    let work = tempfile::tempdir().unwrap();
    let mut dump = vec![];
    let mut during = Some(during);
    let fp = c
        .backup(
            &mut |r| {
                (during.take().unwrap())(&mut dump);
                r.read_to_end(&mut dump)
                    .map(|_| ())
                    .map_err(|e| SourceError::io("storing the dump", e))
            },
            work.path(),
        )
        .unwrap();
    (dump, fp)
}

fn restore(c: &PostgresComponent, dump: &[u8], force: bool) -> Result<(), SourceError> {
    let work = tempfile::tempdir().unwrap();
    c.restore(
        &mut |w: &mut dyn Write| {
            w.write_all(dump)
                .map_err(|e| SourceError::io("feeding the dump", e))?;
            Ok(dump.len() as u64)
        },
        work.path(),
        &RestoreOptions { force },
    )
}

fn assert_same(recorded: &Fingerprint, actual: &Fingerprint) {
    let diff = recorded.differences(actual, 20);
    assert!(diff.is_empty(), "fingerprints differ:\n{}", diff.join("\n"));
    assert_eq!(recorded, actual);
}

fn databases(server: &PostgresServer) -> String {
    server
        .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1;")
        .unwrap()
}

#[test]
fn a_backup_restores_into_new_databases_on_another_server_with_the_recorded_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let source = PostgresServer::start(&tmp.path().join("source")).unwrap();
    fill(&source, "app", 5);
    let src = component(&source, "app", None);
    let (dump, recorded) = backup(&src);
    assert_eq!(
        recorded.facts["table public.pgbench_accounts"]
            .split(' ')
            .next(),
        Some("rows=500000")
    );
    assert!(
        recorded.facts["table public.odd"].starts_with("rows=3 sum="),
        "{recorded:?}"
    );
    assert!(
        recorded.facts["table We ird.t|x"].starts_with("rows=1000 "),
        "{recorded:?}"
    );
    assert_eq!(recorded.summary, "6 tables, 501058 rows");

    // The source moves on; the recorded fingerprint must not.
    source
        .psql(
            "app",
            "DELETE FROM pgbench_accounts WHERE aid <= 10; UPDATE odd SET label = 'changed' WHERE id = 1;",
        )
        .unwrap();
    let moved = src.fingerprint().unwrap();
    assert_eq!(recorded.differences(&moved, 10).len(), 2, "{moved:?}");

    let target = PostgresServer::start(&tmp.path().join("target")).unwrap();
    for (db, jobs) in [("parallel", 2), ("streamed", 1)] {
        assert!(!databases(&target).contains(db));
        let dst = component(&target, db, Some(jobs));
        restore(&dst, &dump, false).unwrap();
        assert_same(&recorded, &dst.fingerprint().unwrap());
        assert_eq!(
            target
                .psql(
                    db,
                    "SELECT label, encode(data, 'hex') FROM odd WHERE id = 1;"
                )
                .unwrap(),
            "größe ✓ 日本|00ff10\n"
        );
        assert_eq!(
            target
                .psql(db, "SELECT count(*) FROM odd_labels WHERE label IS NULL;")
                .unwrap(),
            "1\n"
        );
        let probe = dst.probe().unwrap();
        assert!(probe.starts_with("answers: PostgreSQL "), "{probe}");
        assert!(
            probe.contains(&format!("database {db} with 6 tables")),
            "{probe}"
        );
    }
}

#[test]
fn the_fingerprint_describes_the_dumped_snapshot_while_a_writer_inserts() {
    let tmp = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&tmp.path().join("pg")).unwrap();
    fill(&server, "app", 2);
    let src = component(&server, "app", None);
    let stop = AtomicBool::new(false);
    let inserts = AtomicUsize::new(0);
    let (dump, recorded) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                server
                    .psql(
                        "app",
                        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                         SELECT 1, 1, g, g, now() FROM generate_series(1, 50) g; \
                         UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 42;",
                    )
                    .unwrap();
                inserts.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Writes committed after the backup started, before its dump is read: they must be
        // in neither the dump nor the fingerprint.
        let result = backup_with(&src, |_| {
            let before = inserts.load(Ordering::SeqCst);
            process::wait_until("the writer", std::time::Duration::from_secs(20), || {
                Ok(inserts.load(Ordering::SeqCst) >= before + 2)
            })
            .unwrap();
        });
        stop.store(true, Ordering::SeqCst);
        result
    });
    let now = src.fingerprint().unwrap();
    assert!(
        !recorded.differences(&now, 10).is_empty(),
        "the writer changed nothing after the snapshot, so this test proves nothing"
    );
    let copy = component(&server, "copy", None);
    restore(&copy, &dump, false).unwrap();
    assert_same(&recorded, &copy.fingerprint().unwrap());
}

#[test]
fn a_changed_row_changes_the_fingerprint_and_names_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&tmp.path().join("pg")).unwrap();
    fill(&server, "app", 1);
    let (dump, recorded) = backup(&component(&server, "app", None));
    let copy = component(&server, "copy", Some(1));
    restore(&copy, &dump, false).unwrap();
    assert_same(&recorded, &copy.fingerprint().unwrap());

    // Same row count, one value changed.
    server
        .psql(
            "copy",
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7;",
        )
        .unwrap();
    let diff = recorded.differences(&copy.fingerprint().unwrap(), 10);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].starts_with("table public.pgbench_accounts: rows=100000 sum="),
        "{diff:?}"
    );

    // Two rows exchanging their values keep the count and the multiset of other tables.
    server
        .psql(
            "copy",
            "UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid = 7; \
             UPDATE odd SET note = 'x' WHERE id = 2;",
        )
        .unwrap();
    let diff = recorded.differences(&copy.fingerprint().unwrap(), 10);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].starts_with("table public.odd: rows=3 sum="),
        "{diff:?}"
    );
}

#[test]
fn restoring_into_a_database_that_holds_tables_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&tmp.path().join("pg")).unwrap();
    fill(&server, "app", 1);
    let (dump, recorded) = backup(&component(&server, "app", None));

    server.create_database("busy").unwrap();
    server
        .psql(
            "busy",
            "CREATE TABLE precious (v int); INSERT INTO precious VALUES (1);",
        )
        .unwrap();
    let busy = component(&server, "busy", None);
    let err = restore(&busy, &dump, false).unwrap_err();
    assert!(matches!(err, SourceError::TargetNotEmpty { .. }), "{err}");
    assert!(
        err.to_string().contains("database busy holds 1 relations"),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        server.psql("busy", "SELECT v FROM precious;").unwrap(),
        "1\n"
    );

    restore(&busy, &dump, true).unwrap();
    assert_same(&recorded, &busy.fingerprint().unwrap());
    assert!(server.psql("busy", "SELECT v FROM precious;").is_err());

    // An existing but empty database is restored into as it is.
    server.create_database("empty").unwrap();
    let empty = component(&server, "empty", Some(1));
    restore(&empty, &dump, false).unwrap();
    assert_same(&recorded, &empty.fingerprint().unwrap());
}

#[test]
fn a_scratch_database_is_created_restorable_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&tmp.path().join("pg")).unwrap();
    fill(&server, "app", 1);
    let src = component(&server, "app", None);
    let (dump, recorded) = backup(&src);
    let work = tempfile::tempdir().unwrap();
    let scratch = src.scratch(work.path()).unwrap();
    let target = scratch.component();
    let name = target.describe().rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with("haven_verify_"), "{name}");
    assert!(databases(&server).contains(&name));
    let feed_work = tempfile::tempdir().unwrap();
    target
        .restore(
            &mut |w: &mut dyn Write| {
                w.write_all(&dump).unwrap();
                Ok(dump.len() as u64)
            },
            feed_work.path(),
            &RestoreOptions::default(),
        )
        .unwrap();
    assert_same(&recorded, &target.fingerprint().unwrap());
    // A session left open on the scratch database does not keep it from being dropped.
    let mut open = std::process::Command::new(server.bin_dir().join("psql"))
        .args(["-X", "-q", "-d", &server.url(&name)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    process::wait_until(
        "the open session",
        std::time::Duration::from_secs(10),
        || {
            Ok(server
                .psql(
                    "postgres",
                    &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}';"),
                )?
                .trim()
                == "1")
        },
    )
    .unwrap();
    drop(scratch);
    assert!(!databases(&server).contains(&name));
    drop(open.stdin.take());
    let _ = open.wait();
    assert!(databases(&server).contains("app"));
}

#[test]
fn an_unreachable_server_is_named_with_its_host_and_port() {
    let port = process::free_port().unwrap();
    let c = PostgresComponent::new(PostgresConfig {
        url: format!("postgresql://postgres:hunter2@127.0.0.1:{port}/app"),
        jobs: None,
        bin_dir: None,
        keep_owners: false,
        timeout: None,
        mode: Default::default(),
        wal: Default::default(),
        synchronous: false,
        slot: None,
        slot_max_lag: None,
        data_dir: None,
        base_backup: Default::default(),
    });
    assert_eq!(
        c.describe(),
        format!("postgresql://postgres@127.0.0.1:{port}/app")
    );
    let err = c.probe().unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let work = tempfile::tempdir().unwrap();
    let err = c
        .backup(&mut |_| panic!("nothing to store"), work.path())
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    let err = restore(&c, b"", false).unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
}

#[test]
fn wrong_credentials_are_access_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let server =
        PostgresServer::start_with_password(&tmp.path().join("pg"), "right-horse").unwrap();
    let with = |user: &str, password: &str| {
        PostgresComponent::new(PostgresConfig {
            url: server.url_as(user, Some(password), "postgres"),
            jobs: None,
            bin_dir: Some(server.bin_dir().to_path_buf()),
            keep_owners: false,
            timeout: None,
            mode: Default::default(),
            wal: Default::default(),
            synchronous: false,
            slot: None,
            slot_max_lag: None,
            data_dir: None,
            base_backup: Default::default(),
        })
    };
    let probe = with("postgres", "right-horse").probe().unwrap();
    assert!(probe.contains("database postgres with 0 tables"), "{probe}");
    for (user, password) in [("postgres", "wrong-battery"), ("nobody", "right-horse")] {
        let err = with(user, password).probe().unwrap_err();
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{user}@127.0.0.1:{}", server.port())),
            "{text}"
        );
        assert!(!text.contains(password), "{text}");
        let err = with(user, password).fingerprint().unwrap_err();
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err}");
    }
}

#[test]
fn pg_dump_missing_from_bin_dir_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    let only_psql = tmp.path().join("only-psql");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&only_psql).unwrap();
    let psql = haven_sources::servers::postgres::find_bin_dir()
        .unwrap()
        .join("psql");
    std::os::unix::fs::symlink(psql, only_psql.join("psql")).unwrap();
    for dir in [&empty, &only_psql] {
        let c = PostgresComponent::new(PostgresConfig {
            url: "postgresql://postgres@127.0.0.1:1/app".into(),
            jobs: None,
            bin_dir: Some(dir.clone()),
            keep_owners: false,
            timeout: None,
            mode: Default::default(),
            wal: Default::default(),
            synchronous: false,
            slot: None,
            slot_max_lag: None,
            data_dir: None,
            base_backup: Default::default(),
        });
        let err = c
            .backup(&mut |_| panic!("nothing to store"), tmp.path())
            .unwrap_err();
        match &err {
            SourceError::MissingTool { tool, hint } => {
                assert_eq!(tool, "pg_dump");
                assert!(hint.contains("postgresql-client"), "{hint}");
                assert!(hint.contains(&dir.display().to_string()), "{hint}");
            }
            other => panic!("expected MissingTool, got {other}"),
        }
        let err = restore(&c, b"", false).unwrap_err();
        assert!(
            matches!(&err, SourceError::MissingTool { tool, .. } if tool == "pg_restore"),
            "{err}"
        );
    }
}

#[test]
fn a_truncated_dump_fails_the_restore_and_a_failing_sink_fails_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&tmp.path().join("pg")).unwrap();
    fill(&server, "app", 1);
    let src = component(&server, "app", None);
    let (dump, _) = backup(&src);
    let half = &dump[..dump.len() / 2];
    for (db, jobs) in [("streamed", 1), ("parallel", 2)] {
        let err = restore(&component(&server, db, Some(jobs)), half, false).unwrap_err();
        assert!(matches!(err, SourceError::Failed { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "pg_restore into postgresql://postgres@127.0.0.1:{}/{db}",
                server.port()
            )),
            "{err}"
        );
    }
    let err = restore(
        &component(&server, "garbage", Some(1)),
        b"not a dump at all",
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("pg_restore"), "{err}");

    let work = tempfile::tempdir().unwrap();
    let err = src
        .backup(
            &mut |r| {
                let mut first = [0u8; 1000];
                r.read_exact(&mut first).unwrap();
                Err(SourceError::failed("storing the dump", "the disk is full"))
            },
            work.path(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("the disk is full"), "{err}");
    // Neither pg_dump nor the snapshot's session is left behind.
    process::wait_until(
        "the backup's sessions to end",
        std::time::Duration::from_secs(10),
        || {
            Ok(server
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app';",
                )?
                .trim()
                == "0")
        },
    )
    .unwrap();
}
