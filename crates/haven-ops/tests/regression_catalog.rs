//! Regression tests for the daemon's catalog (issue 10).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use haven_ops::daemon::clock::ManualClock;
use haven_ops::daemon::view::{DaemonView, JobKind};
use haven_ops::daemon::{Daemon, DaemonOptions};
use haven_ops::Config;

#[path = "common/webhook.rs"]
mod webhook;
use webhook::Receiver;

#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A config `name.toml` in `root`: tenant `acme` on its own repository `repo-NAME`, a
/// failing `ledger` component while `broken` exists, the shared `state` directory.
fn config(root: &Path, name: &str, hook: &str, broken: &Path) -> Config {
    let data = root.join(format!("data-{name}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), name).unwrap();
    std::fs::write(root.join("password"), "pw").unwrap();
    let path = root.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[daemon]
state-dir = "{state}"

[alerts.ops]
kind = "webhook"
url = "{hook}"

[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
schedule = "0 3 * * *"
retention = {{ keep-last = 50 }}
retries = {{ attempts = 1 }}
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
[tenants.acme.components.ledger]
kind = "command"
backup = "if [ -e {broken} ]; then echo ledger offline >&2; exit 1; fi; echo ledger"
"#,
            state = root.join("state").display(),
            repo = root.join(format!("repo-{name}")).display(),
            data = data.display(),
            broken = broken.display(),
        ),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

fn start(config: Config, clock: &Arc<ManualClock>) -> Daemon {
    Daemon::start(
        config,
        DaemonOptions {
            clock: clock.clone(),
            lock_wait: Duration::from_secs(30),
            dr_runner: None,
        },
    )
    .unwrap()
}

fn run_backup(view: &Arc<dyn DaemonView>) -> String {
    let id = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("the backup", || {
        let s = view.job(id).unwrap().summary.status;
        s != "queued" && s != "running"
    });
    view.job(id).unwrap().summary.status
}

/// Two configs with a tenant of the same name on two repositories share one state
/// directory: the second daemon must not see the first's points, jobs, first-seen time
/// or alert state (an alert firing for the first must not silence the second's).
#[test]
fn same_tenant_name_on_another_repository_shares_nothing_in_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let broken = root.join("broken");
    let hook_a = Receiver::start();
    let hook_b = Receiver::start();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap(),
    ));

    // The first config: one good backup (a point), then a failing one (an alert fires).
    let a = start(config(root, "a", &hook_a.url, &broken), &clock);
    let view = a.view();
    assert_eq!(run_backup(&view), "succeeded");
    assert_eq!(view.points("acme").unwrap().len(), 1);
    std::fs::write(&broken, "").unwrap();
    assert_eq!(run_backup(&view), "failed");
    wait_for("the first config's failure alert", || {
        hook_a
            .received()
            .iter()
            .any(|b| b["kind"] == "backup-failed" && b["state"] == "firing")
    });
    let ids = |v: &Arc<dyn DaemonView>| -> Vec<String> {
        v.points("acme")
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect()
    };
    let a_points = ids(&view);
    let a_jobs: Vec<i64> = view.jobs(Some("acme"), 10).iter().map(|j| j.id).collect();
    assert!(!a_points.is_empty());
    a.stop(Duration::from_secs(10));

    // The second config, ten days later, same state directory, same tenant name.
    clock.set(Utc.with_ymd_and_hms(2026, 11, 30, 2, 0, 0).unwrap());
    let b = start(config(root, "b", &hook_b.url, &broken), &clock);
    let view = b.view();
    assert!(
        view.points("acme").unwrap().is_empty(),
        "the first config's points are seen"
    );
    assert!(
        view.jobs(Some("acme"), 10).is_empty(),
        "the first config's jobs are seen"
    );
    let status = view.tenant("acme").unwrap();
    assert!(status.last_backup.is_none(), "{status:?}");
    assert!(
        status.effective_rpo_seconds.is_some_and(|s| s < 3600.0),
        "the first config's first-seen time is inherited: {status:?}"
    );
    assert_eq!(run_backup(&view), "failed");
    wait_for("the second config's own failure alert", || {
        hook_b
            .received()
            .iter()
            .any(|b| b["kind"] == "backup-failed" && b["state"] == "firing")
    });
    b.stop(Duration::from_secs(10));

    // The first config again: its history is still there.
    let a = start(config(root, "a", &hook_a.url, &broken), &clock);
    let view = a.view();
    assert_eq!(ids(&view), a_points, "the first config's points are kept");
    let jobs: Vec<i64> = view.jobs(Some("acme"), 100).iter().map(|j| j.id).collect();
    assert!(
        a_jobs.iter().all(|id| jobs.contains(id)),
        "{a_jobs:?} not all in {jobs:?}"
    );
    a.stop(Duration::from_secs(10));
}

/// A catalog of schema version 1 (keyed by tenant name alone) is migrated: the first
/// daemon to bind its tenants adopts their rows; another repository's tenant of the same
/// name sees none of them.
#[test]
fn a_version_1_catalog_is_migrated_and_adopted_by_the_tenant_that_binds_it() {
    use haven_ops::catalog::{Catalog, SCHEMA_VERSION};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.sqlite");
    let t = "2026-11-20T02:00:00.000000000Z";
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch(include_str!("../src/catalog/v1.sql"))
            .unwrap();
        c.execute_batch(&format!(
            "PRAGMA application_id = {}; PRAGMA user_version = 1;
             INSERT INTO jobs (kind, tenant, triggered_by, status, created)
                 VALUES ('backup', 'acme', 'manual', 'succeeded', '{t}');
             INSERT INTO points VALUES ('acme', 'p1', '{t}', '{t}', 'complete', '{{}}', 1, 1, 1.0, 'recorded');
             INSERT INTO alerts VALUES ('rpo:acme:files', 'firing', '{t}', NULL, NULL, 'late');
             INSERT INTO meta VALUES ('first_seen:acme', '{t}');
             INSERT INTO meta VALUES ('last_slot:backup:acme', '{t}');
             INSERT INTO meta VALUES ('retried:1', '1');",
            haven_ops::catalog::APPLICATION_ID
        ))
        .unwrap();
    }
    let catalog = Catalog::open(&file).unwrap();
    let version: i64 = rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 2) };

    catalog
        .bind_repositories([("acme", "/srv/repo-a")])
        .unwrap();
    assert_eq!(catalog.points("acme").unwrap().len(), 1);
    assert!(catalog.alert("rpo:acme:files").unwrap().is_some());
    assert!(catalog.tenant_meta("acme", "first_seen").unwrap().is_some());
    assert!(catalog
        .last_slot(haven_ops::daemon::view::JobKind::Backup, "acme")
        .unwrap()
        .is_some());
    assert_eq!(catalog.get_meta("retried:1").unwrap().as_deref(), Some("1"));
    assert_eq!(catalog.jobs(&Default::default()).unwrap().len(), 1);

    // Another repository's `acme`: nothing.
    catalog
        .bind_repositories([("acme", "/srv/repo-b")])
        .unwrap();
    assert!(catalog.points("acme").unwrap().is_empty());
    assert!(catalog.alert("rpo:acme:files").unwrap().is_none());
    assert!(catalog.alerts(false).unwrap().is_empty());
    assert!(catalog.tenant_meta("acme", "first_seen").unwrap().is_none());
    assert!(catalog.jobs(&Default::default()).unwrap().is_empty());
    // And back: the rows were adopted by the first, not lost.
    catalog
        .bind_repositories([("acme", "/srv/repo-a")])
        .unwrap();
    assert_eq!(catalog.points("acme").unwrap().len(), 1);
    assert_eq!(catalog.alerts(false).unwrap().len(), 1);
}
