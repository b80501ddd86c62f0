//! The daemon's catalog on a real SQLite file: schema creation and reopening, a job's
//! life (attempts, log, progress), jobs a killed daemon left running, recovery points
//! recorded and rebuilt from a real repository after the file was deleted, alert and meta
//! state, and files that are not Haven catalogs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use haven_ops::backup::Observer;
use haven_ops::catalog::{
    AlertRow, AlertState, Catalog, CatalogError, JobFilter, JobKind, JobOutcome, JobStatus, NewJob,
    PointSource, Trigger, VerifyRecord, SCHEMA_VERSION,
};
use haven_ops::point::{ComponentRecord, PointStatus, RecoveryPoint};
use haven_ops::{backup_tenant, Config};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new(t: &str) -> Self {
        TestClock(Arc::new(Mutex::new(at(t))))
    }
    fn set(&self, t: &str) {
        *self.0.lock().unwrap() = at(t);
    }
    fn attach(&self, catalog: Catalog) -> Catalog {
        let me = self.clone();
        catalog.with_clock(move || *me.0.lock().unwrap())
    }
}

fn new_job(kind: JobKind, tenant: &str, trigger: Trigger) -> NewJob {
    NewJob {
        kind,
        tenant: tenant.into(),
        trigger,
        scheduled_for: None,
        late: false,
    }
}

fn catalog_path(dir: &Path) -> PathBuf {
    dir.join("state").join("catalog.sqlite")
}

#[test]
fn schema_is_created_then_reopened_with_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let path = catalog_path(tmp.path());
    let catalog = Catalog::open(&path).unwrap();
    assert!(catalog.created(), "a new file gets the schema");
    catalog.set_meta("greeting", "hello").unwrap();
    let id = catalog
        .create_job(&new_job(JobKind::Backup, "acme", Trigger::Manual))
        .unwrap();
    drop(catalog);

    let again = Catalog::open(&path).unwrap();
    assert!(!again.created(), "reopening keeps the schema");
    assert_eq!(
        again.get_meta("greeting").unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(again.get_meta("missing").unwrap(), None);
    assert_eq!(again.job(id).unwrap().unwrap().status, JobStatus::Queued);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let (version, app, mode): (i64, i64, String) = raw
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), \
                    (SELECT application_id FROM pragma_application_id), \
                    (SELECT journal_mode FROM pragma_journal_mode)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(app, 0x4856_4e43);
    assert_eq!(mode, "wal");
}

#[test]
fn a_job_goes_through_attempts_with_log_and_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new("2026-11-21T03:00:00Z");
    let catalog = clock.attach(Catalog::open(&catalog_path(tmp.path())).unwrap());
    let id = catalog
        .create_job(&NewJob {
            kind: JobKind::Backup,
            tenant: "acme".into(),
            trigger: Trigger::CatchUp,
            scheduled_for: Some(at("2026-11-21T02:00:00Z")),
            late: true,
        })
        .unwrap();
    let queued = catalog.job(id).unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.attempts, queued.late),
        (JobStatus::Queued, 0, true)
    );
    assert_eq!(queued.created, at("2026-11-21T03:00:00Z"));
    assert_eq!(queued.scheduled_for, Some(at("2026-11-21T02:00:00Z")));

    assert_eq!(catalog.start_job(id).unwrap(), 1);
    catalog.append_log(id, "db (postgres): backing up").unwrap();
    catalog.update_progress(id, 100, 1000, Some("db")).unwrap();
    let running = catalog.job(id).unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.started, Some(at("2026-11-21T03:00:00Z")));
    assert_eq!(
        (
            running.progress_done,
            running.progress_total,
            running.component.as_deref()
        ),
        (100, 1000, Some("db"))
    );

    clock.set("2026-11-21T03:00:10Z");
    let per_component = serde_json::json!({"db": "connection refused"});
    catalog
        .finish_attempt(
            id,
            JobStatus::Failed,
            Some("db: connection refused"),
            Some(&per_component),
        )
        .unwrap();
    catalog.append_log(id, "retrying in 10 s").unwrap();
    clock.set("2026-11-21T03:00:20Z");
    assert_eq!(catalog.start_job(id).unwrap(), 2);
    catalog.append_log(id, "db: done").unwrap();
    clock.set("2026-11-21T03:01:00Z");
    catalog
        .finish_job(
            id,
            &JobOutcome {
                point: Some("0123456789abcdef".into()),
                bytes: Some(5000),
                bytes_added: Some(1200),
                ..JobOutcome::succeeded()
            },
        )
        .unwrap();

    let done = catalog.job(id).unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.finished, Some(at("2026-11-21T03:01:00Z")));
    assert_eq!(done.seconds, Some(60.0), "measured from the first start");
    assert_eq!(done.point.as_deref(), Some("0123456789abcdef"));
    assert_eq!((done.bytes, done.bytes_added), (Some(5000), Some(1200)));
    assert_eq!(done.error, None);
    assert_eq!(done.component, None);

    let attempts = catalog.attempts(id).unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, JobStatus::Failed);
    assert_eq!(attempts[0].error.as_deref(), Some("db: connection refused"));
    assert_eq!(attempts[0].details, Some(per_component));
    assert_eq!(attempts[0].finished, Some(at("2026-11-21T03:00:10Z")));
    assert_eq!(attempts[1].status, JobStatus::Succeeded);
    assert_eq!(attempts[1].started, at("2026-11-21T03:00:20Z"));

    let log = catalog.job_log(id, 0).unwrap();
    let lines: Vec<&str> = log.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(
        lines,
        ["db (postgres): backing up", "retrying in 10 s", "db: done"]
    );
    assert_eq!(log[1].time, at("2026-11-21T03:00:10Z"));
    let newer = catalog.job_log(id, log[0].seq).unwrap();
    assert_eq!(
        newer.len(),
        2,
        "a reader can ask for the lines after the ones it has"
    );

    let err = catalog.start_job(id).unwrap_err().to_string();
    assert!(err.contains("is succeeded and cannot be started"), "{err}");
    let err = catalog
        .finish_job(
            id,
            &JobOutcome {
                status: JobStatus::Running,
                ..JobOutcome::succeeded()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot finish as running"), "{err}");

    // A failed verify of another tenant, and the filters and counts over both.
    let v = catalog
        .create_job(&new_job(JobKind::Verify, "other", Trigger::Schedule))
        .unwrap();
    catalog.start_job(v).unwrap();
    catalog
        .finish_job(v, &JobOutcome::failed("fingerprint mismatch"))
        .unwrap();
    let all = catalog.jobs(&JobFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        [v, id],
        "newest first"
    );
    let acme = catalog
        .jobs(&JobFilter {
            tenant: Some("acme".into()),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(acme.len(), 1);
    let failed = catalog
        .jobs(&JobFilter {
            status: Some(JobStatus::Failed),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(failed[0].error.as_deref(), Some("fingerprint mismatch"));
    assert_eq!(
        catalog
            .jobs(&JobFilter {
                limit: 1,
                ..JobFilter::default()
            })
            .unwrap()
            .len(),
        1
    );
    let counts = catalog.job_counts("acme").unwrap();
    assert_eq!(
        (
            counts.backup_failures,
            counts.backup_retries,
            counts.verify_failures
        ),
        (0, 1, 0)
    );
    assert_eq!(catalog.job_counts("other").unwrap().verify_failures, 1);

    // The history is pruned by age; unfinished jobs stay.
    let q = catalog
        .create_job(&new_job(JobKind::Retention, "acme", Trigger::Schedule))
        .unwrap();
    assert_eq!(catalog.prune_jobs(at("2026-11-22T00:00:00Z")).unwrap(), 2);
    assert!(catalog.job(id).unwrap().is_none());
    assert!(
        catalog.job_log(id, 0).unwrap().is_empty(),
        "the log goes with its job"
    );
    assert!(catalog.job(q).unwrap().is_some());
}

#[test]
fn jobs_left_running_by_a_killed_daemon_are_marked_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = catalog_path(tmp.path());
    let catalog = Catalog::open(&path).unwrap();
    let running = catalog
        .create_job(&new_job(JobKind::Backup, "acme", Trigger::Schedule))
        .unwrap();
    let queued = catalog
        .create_job(&new_job(JobKind::Verify, "acme", Trigger::Manual))
        .unwrap();
    let done = catalog
        .create_job(&new_job(JobKind::Backup, "beta", Trigger::Schedule))
        .unwrap();
    catalog.start_job(running).unwrap();
    catalog.start_job(done).unwrap();
    catalog.finish_job(done, &JobOutcome::succeeded()).unwrap();
    drop(catalog); // the daemon is killed

    let catalog = Catalog::open(&path).unwrap();
    assert_eq!(catalog.mark_running_as_interrupted().unwrap(), [running]);
    let job = catalog.job(running).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Interrupted);
    assert!(job.finished.is_some());
    assert!(job.error.unwrap().contains("daemon stopped"));
    assert_eq!(
        catalog.attempts(running).unwrap()[0].status,
        JobStatus::Interrupted
    );
    assert_eq!(
        catalog.job(queued).unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        catalog.job(done).unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    assert!(catalog.mark_running_as_interrupted().unwrap().is_empty());
}

fn point(id: &str, started: &str, status: PointStatus) -> RecoveryPoint {
    // From JSON, as a manifest is read: fields added later take their defaults.
    let failed = status == PointStatus::Failed;
    let component: ComponentRecord = serde_json::from_value(serde_json::json!({
        "kind": "files",
        "source": "/srv/acme",
        "status": if failed { "failed" } else { "ok" },
        "error": failed.then_some("disk gone"),
        "snapshot": null,
        "bytes": 1000,
        "bytes_added": 10,
        "seconds": 1.5,
        "fingerprint": null,
        "paths": ["/srv/acme"],
    }))
    .unwrap();
    RecoveryPoint {
        format: 1,
        id: id.into(),
        tenant: "acme".into(),
        started: at(started),
        finished: at(started) + chrono::Duration::seconds(30),
        status,
        components: BTreeMap::from([("uploads".to_string(), component)]),
    }
}

#[test]
fn points_are_recorded_and_the_latest_complete_one_found() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&catalog_path(tmp.path())).unwrap();
    assert!(catalog.latest_complete_point("acme").unwrap().is_none());
    let old = point("aaaa", "2026-11-20T03:00:00Z", PointStatus::Complete);
    let good = point("bbbb", "2026-11-21T03:00:00Z", PointStatus::Complete);
    let bad = point("cccc", "2026-11-22T03:00:00Z", PointStatus::Failed);
    for p in [&bad, &old, &good] {
        catalog.record_point(p, PointSource::Recorded).unwrap();
    }
    let listed = catalog.points("acme").unwrap();
    assert_eq!(
        listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["aaaa", "bbbb", "cccc"],
        "oldest first"
    );
    let latest = catalog.latest_complete_point("acme").unwrap().unwrap();
    assert_eq!(
        latest.id, "bbbb",
        "the newer failed point is not restorable"
    );
    assert_eq!(
        (latest.bytes, latest.bytes_added, latest.seconds),
        (1000, 10, 30.0)
    );
    assert_eq!(latest.components, good.components);
    assert_eq!(latest.source, PointSource::Recorded);
    assert!(catalog.points("beta").unwrap().is_empty());

    assert_eq!(
        catalog
            .remove_points("acme", &["aaaa".into(), "zzzz".into()])
            .unwrap(),
        1
    );
    assert_eq!(catalog.points("acme").unwrap().len(), 2);
}

#[test]
fn verifies_alerts_and_slots_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&catalog_path(tmp.path())).unwrap();
    assert!(catalog.latest_verify("acme").unwrap().is_none());
    for (t, passed) in [
        ("2026-11-20T04:00:00Z", true),
        ("2026-11-21T04:00:00Z", false),
    ] {
        catalog
            .record_verify(&VerifyRecord {
                job: None,
                tenant: "acme".into(),
                point: "bbbb".into(),
                time: at(t),
                passed,
                restore_seconds: 12.5,
                report: serde_json::json!({"components": [{"name": "db", "outcome": "passed"}]}),
            })
            .unwrap();
    }
    let latest = catalog.latest_verify("acme").unwrap().unwrap();
    assert_eq!(
        (latest.time, latest.passed),
        (at("2026-11-21T04:00:00Z"), false)
    );
    assert_eq!(latest.report["components"][0]["name"], "db");
    assert_eq!(catalog.verifies("acme", 10).unwrap().len(), 2);

    let mut alert = AlertRow {
        key: "rpo:acme:db".into(),
        state: AlertState::Firing,
        first_fired: at("2026-11-21T05:00:00Z"),
        last_sent: Some(at("2026-11-21T05:00:01Z")),
        resolved_at: None,
        message: "acme/db: last backup 26 h ago (target 24 h)".into(),
    };
    catalog.set_alert(&alert).unwrap();
    assert_eq!(catalog.alert("rpo:acme:db").unwrap().as_ref(), Some(&alert));
    assert_eq!(catalog.alerts(true).unwrap().len(), 1);
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(at("2026-11-21T06:00:00Z"));
    catalog.set_alert(&alert).unwrap();
    assert_eq!(
        catalog.alert("rpo:acme:db").unwrap().unwrap().state,
        AlertState::Resolved
    );
    assert!(catalog.alerts(true).unwrap().is_empty());
    assert_eq!(catalog.alerts(false).unwrap().len(), 1);
    assert!(catalog.delete_alert("rpo:acme:db").unwrap());
    assert!(catalog.alert("rpo:acme:db").unwrap().is_none());

    assert_eq!(catalog.last_slot(JobKind::Backup, "acme").unwrap(), None);
    let slot = at("2026-11-21T03:00:00Z");
    catalog
        .set_last_slot(JobKind::Backup, "acme", slot)
        .unwrap();
    assert_eq!(
        catalog.last_slot(JobKind::Backup, "acme").unwrap(),
        Some(slot)
    );
    assert_eq!(catalog.last_slot(JobKind::Verify, "acme").unwrap(), None);
    assert!(catalog
        .tenant_meta("acme", "last_slot:backup")
        .unwrap()
        .is_some());
}

#[test]
fn clones_are_used_from_several_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&catalog_path(tmp.path())).unwrap();
    let id = catalog
        .create_job(&new_job(JobKind::Backup, "acme", Trigger::Manual))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = catalog.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    c.append_log(id, &format!("thread {t} line {i}")).unwrap();
                    c.update_progress(id, i, 50, None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(catalog.job_log(id, 0).unwrap().len(), 200);
}

#[test]
fn a_deleted_catalog_is_rebuilt_from_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("data/a.txt"), "first").unwrap();
    fs::write(root.join("password"), "correct horse battery staple").unwrap();
    let text = format!(
        r#"
[repositories.main]
url = "{root}/repo"
password-file = "password"

[tenants.acme]
repository = "main"
[tenants.acme.components.uploads]
kind = "files"
paths = ["{root}/data"]
pre = "test ! -e {root}/break"
"#,
        root = root.display()
    );
    let config = Config::parse(&root.join("haven.toml"), &text).unwrap();
    let backup =
        || backup_tenant(&config, "acme", Duration::from_secs(5), &Observer::quiet()).unwrap();
    let first = backup();
    fs::write(root.join("break"), "").unwrap();
    let failed = backup();
    fs::remove_file(root.join("break")).unwrap();
    fs::write(root.join("data/b.txt"), "second").unwrap();
    let last = backup();
    assert_eq!(
        [first.status, failed.status, last.status],
        [
            PointStatus::Complete,
            PointStatus::Failed,
            PointStatus::Complete
        ]
    );

    let path = catalog_path(root);
    let catalog = Catalog::open(&path).unwrap();
    for p in [&first, &failed, &last] {
        catalog.record_point(p, PointSource::Recorded).unwrap();
    }
    let recorded = catalog.points("acme").unwrap();
    assert_eq!(recorded.len(), 3);
    assert_eq!(
        catalog.latest_complete_point("acme").unwrap().unwrap().id,
        last.id
    );
    drop(catalog);

    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", path.display()));
        if f.exists() {
            fs::remove_file(f).unwrap();
        }
    }
    let catalog = Catalog::open(&path).unwrap();
    assert!(catalog.created(), "the daemon learns that it must rebuild");
    assert!(catalog.points("acme").unwrap().is_empty());

    let rc = &config.repositories["main"];
    let (repo, _) = haven_ops::open_repository(rc, false).unwrap();
    let repo = haven_repo::read::ReadView::open(repo).unwrap();
    let summary = catalog.rebuild_points(&repo, "acme").unwrap();
    assert_eq!(summary.points, 3);
    assert!(summary.damaged.is_empty(), "{:?}", summary.damaged);
    let rebuilt = catalog.points("acme").unwrap();
    assert!(rebuilt.iter().all(|p| p.source == PointSource::Rebuilt));
    let strip = |points: Vec<_>| -> Vec<_> {
        points
            .into_iter()
            .map(|mut p: haven_ops::catalog::CatalogPoint| {
                p.source = PointSource::Recorded;
                p
            })
            .collect()
    };
    assert_eq!(strip(rebuilt), recorded, "the same points come back");
    assert_eq!(
        catalog.latest_complete_point("acme").unwrap().unwrap().id,
        last.id
    );

    // Rebuilding replaces: a point the repository does not have disappears.
    catalog
        .record_point(
            &point("ffff", "2030-01-01T00:00:00Z", PointStatus::Complete),
            PointSource::Recorded,
        )
        .unwrap();
    catalog.rebuild_points(&repo, "acme").unwrap();
    assert_eq!(catalog.points("acme").unwrap().len(), 3);
}

#[test]
fn files_that_are_not_haven_catalogs_are_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();

    let text = tmp.path().join("notes.txt");
    fs::write(
        &text,
        "this is not a database, just some notes that are long enough to fill a header page",
    )
    .unwrap();
    let err = Catalog::open(&text).unwrap_err();
    assert!(matches!(err, CatalogError::Foreign { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("notes.txt") && msg.contains("not an SQLite database"),
        "{msg}"
    );

    let other = tmp.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');")
            .unwrap();
    }
    let before = fs::read(&other).unwrap();
    let msg = Catalog::open(&other).unwrap_err().to_string();
    assert!(
        msg.contains("other.db is not a Haven catalog") && msg.contains("another application"),
        "{msg}"
    );
    assert_eq!(
        fs::read(&other).unwrap(),
        before,
        "a foreign database is not modified"
    );
    assert!(!tmp.path().join("other.db-wal").exists());

    let newer = catalog_path(tmp.path());
    drop(Catalog::open(&newer).unwrap());
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let err = Catalog::open(&newer).unwrap_err();
    assert!(
        matches!(err, CatalogError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("catalog.sqlite")
            && msg.contains("schema version 99")
            && msg.contains("upgrade haven"),
        "{msg}"
    );
}
