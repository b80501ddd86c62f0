//! The daemon with an injected clock: no test waits for real time to pass. A scheduled
//! run makes a recovery point; a failing component is retried with backoff and then
//! alerted; a daemon stopped across its slot catches up once, recorded as late; an RPO
//! breach alerts and resolves after the next good run; a deleted catalog is rebuilt from
//! the repository; a stopped daemon's running job is marked interrupted and retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use haven_ops::daemon::clock::ManualClock;
use haven_ops::daemon::view::{DaemonView, JobKind};
use haven_ops::daemon::{Daemon, DaemonOptions};
use haven_ops::Config;

mod common;
use common::smtp::SmtpServer;

#[path = "common/webhook.rs"]
mod webhook;
use webhook::Receiver;

/// Poll `cond` (real time, short steps) until it holds: a readiness check, not a sleep.
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

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config_path: PathBuf,
}

impl Setup {
    /// A config with one tenant `acme` (a files component plus `extra` TOML) and a webhook.
    fn new(tenant_keys: &str, extra: &str, hook: &str) -> Setup {
        Setup::with_sinks(tenant_keys, extra, hook, "")
    }

    /// As [`Setup::new`], with more sink tables.
    fn with_sinks(tenant_keys: &str, extra: &str, hook: &str, sinks: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("password"), "pw").unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.txt"), "hello").unwrap();
        let config_path = root.join("haven.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"
[daemon]
state-dir = "state"
concurrency = 2

[alerts.ops]
kind = "webhook"
url = "{hook}"
{sinks}

[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
# recovery points carry real time while the daemon runs on the test's clock
retention = {{ keep-last = 50 }}
{tenant_keys}
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
{extra}
"#,
                repo = root.join("repo").display(),
                data = data.display(),
            ),
        )
        .unwrap();
        Setup {
            _tmp: tmp,
            root,
            config_path,
        }
    }

    fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    fn start(&self, clock: &Arc<ManualClock>) -> Daemon {
        Daemon::start(
            self.config(),
            DaemonOptions {
                clock: clock.clone(),
                lock_wait: Duration::from_secs(30),
                dr_runner: None,
            },
        )
        .unwrap()
    }

    fn catalog(&self) -> PathBuf {
        self.root.join("state/catalog.sqlite")
    }
}

fn finished(view: &Arc<dyn DaemonView>, id: i64) -> bool {
    let s = view.job(id).unwrap().summary.status;
    s != "queued" && s != "running"
}

#[test]
fn a_scheduled_run_makes_a_recovery_point_and_a_stopped_daemon_catches_up_once() {
    let hook = Receiver::start();
    let s = Setup::new("schedule = \"0 3 * * *\"", "", &hook.url);
    let clock = Arc::new(ManualClock::new(at(2026, 11, 20, 2, 59)));
    let daemon = s.start(&clock);
    let view = daemon.view();
    assert!(
        view.jobs(Some("acme"), 10).is_empty(),
        "nothing runs before the slot"
    );
    let status = view.tenant("acme").unwrap();
    assert_eq!(status.next_run, Some(at(2026, 11, 20, 3, 0)));

    clock.set(at(2026, 11, 20, 3, 0) + chrono::Duration::seconds(1));
    wait_for("the scheduled backup", || {
        view.jobs(Some("acme"), 10)
            .first()
            .is_some_and(|j| finished(&view, j.id))
    });
    let job = &view.jobs(Some("acme"), 10)[0];
    assert_eq!(
        (job.status.as_str(), job.trigger.as_str(), job.late),
        ("succeeded", "schedule", false),
        "{job:?}"
    );
    assert_eq!(job.scheduled_for, Some(at(2026, 11, 20, 3, 0)));
    let points = view.points("acme").unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].status, "complete");
    assert_eq!(Some(points[0].id.clone()), job.point);
    let log = view.job(job.id).unwrap().log;
    assert!(
        log.iter()
            .any(|l| l.line.contains("files (files): backing up")),
        "{log:?}"
    );
    daemon.stop(Duration::from_secs(10));

    // Down for three days: three 03:00 slots pass. One catch-up run, marked late.
    clock.set(at(2026, 11, 23, 5, 0));
    let daemon = s.start(&clock);
    let view = daemon.view();
    let backups = || -> Vec<_> {
        view.jobs(Some("acme"), 10)
            .into_iter()
            .filter(|j| j.kind == JobKind::Backup)
            .collect()
    };
    wait_for("the catch-up run", || {
        let b = backups();
        b.len() == 2 && finished(&view, b[0].id)
    });
    let jobs = backups();
    let catch_up = &jobs[0];
    assert_eq!(
        (
            catch_up.trigger.as_str(),
            catch_up.late,
            catch_up.status.as_str()
        ),
        ("catch-up", true, "succeeded")
    );
    assert_eq!(
        catch_up.scheduled_for,
        Some(at(2026, 11, 23, 3, 0)),
        "the most recent missed slot"
    );
    // The missed slot was alerted, and the good catch-up run resolved it.
    wait_for("the missed-backup alert and its resolution", || {
        let r = hook.received();
        r.iter()
            .any(|b| b["kind"] == "backup-missed" && b["state"] == "firing")
            && r.iter()
                .any(|b| b["kind"] == "backup-missed" && b["state"] == "resolved")
    });
    // The scheduler keeps going without queueing the missed slots again.
    clock.set(at(2026, 11, 23, 6, 0));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        backups().len(),
        2,
        "missed slots are caught up once, not once each"
    );
    assert_eq!(
        view.tenant("acme").unwrap().next_run,
        Some(at(2026, 11, 24, 3, 0))
    );
    daemon.stop(Duration::from_secs(10));

    // The catalog is a cache: deleted, it is rebuilt from the repository.
    std::fs::remove_file(s.catalog()).unwrap();
    let _ = std::fs::remove_file(s.root.join("state/catalog.sqlite-wal"));
    let _ = std::fs::remove_file(s.root.join("state/catalog.sqlite-shm"));
    let daemon = s.start(&clock);
    let view = daemon.view();
    let rebuilt = view.points("acme").unwrap();
    assert_eq!(rebuilt.len(), 2, "both points are back: {rebuilt:?}");
    assert!(rebuilt.iter().all(|p| p.status == "complete"));
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_failing_component_is_retried_with_backoff_then_alerted_and_an_rpo_breach_resolves() {
    let hook = Receiver::start();
    let flag = tempfile::tempdir().unwrap();
    let broken = flag.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let smtp = SmtpServer::start(serde_json::json!({}));
    let s = Setup::with_sinks(
        "schedule = \"0 3 * * *\"\nrpo = \"2h\"\nretries = { attempts = 3, backoff = \"1m\" }",
        &format!(
            "[tenants.acme.components.ledger]\nkind = \"command\"\nbackup = \"if [ -e {} ]; then echo ledger offline >&2; exit 1; fi; echo ledger\"\n",
            broken.display()
        ),
        &hook.url,
        &format!(
            "[alerts.oncall]\nkind = \"smtp\"\nserver = \"{}\"\nfrom = \"haven@example.com\"\nto = [\"oncall@example.com\"]\ntls = \"none\"\n",
            smtp.server()
        ),
    );
    let clock = Arc::new(ManualClock::new(at(2026, 11, 20, 2, 0)));
    let daemon = s.start(&clock);
    let view = daemon.view();
    clock.set(at(2026, 11, 20, 3, 0));
    // Each retry waits its backoff on the daemon's clock: move the clock along.
    let job = loop {
        let jobs = view.jobs(Some("acme"), 10);
        if let Some(j) = jobs.first() {
            if finished(&view, j.id) {
                break j.clone();
            }
        }
        clock.advance(chrono::Duration::seconds(30));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(job.status, "failed", "{job:?}");
    let log: Vec<String> = view
        .job(job.id)
        .unwrap()
        .log
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert!(
        log.iter()
            .any(|l| l.contains("attempt 1 of 3 failed") && l.contains("ledger offline")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("attempt 2 of 3 failed") && l.contains("retrying in 2m")),
        "backoff doubles: {log:#?}"
    );
    assert!(job.error.as_deref().unwrap().contains("ledger offline"));
    wait_for("the failure alert", || {
        hook.received().iter().any(|b| b["kind"] == "backup-failed")
    });
    let fired: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|b| b["kind"] == "backup-failed")
        .collect();
    assert_eq!(fired.len(), 1, "one alert per condition: {fired:#?}");
    assert_eq!(fired[0]["state"], "firing");
    assert!(
        fired[0]["text"].as_str().unwrap().contains("acme"),
        "a Slack-compatible text field"
    );

    // No good point for longer than the RPO: the dead man's switch fires per component.
    clock.set(at(2026, 11, 20, 4, 30));
    wait_for("the RPO alert", || {
        hook.received()
            .iter()
            .any(|b| b["kind"] == "rpo-breached" && b["state"] == "firing")
    });
    let status = view.tenant("acme").unwrap();
    assert!(status.rpo_breached, "{status:?}");
    let subject = |m: &common::smtp::Mail| m.header("Subject").unwrap_or_default();
    wait_for(
        "one RPO e-mail per breached component (files, ledger)",
        || {
            smtp.mails()
                .iter()
                .filter(|m| subject(m).contains("FIRING") && subject(m).contains("RPO"))
                .count()
                == 2
        },
    );
    // Fixed, a manual backup succeeds and both conditions resolve.
    std::fs::remove_file(&broken).unwrap();
    let id = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("the manual backup", || finished(&view, id));
    assert_eq!(view.job(id).unwrap().summary.status, "succeeded");
    wait_for("the resolutions", || {
        let r = hook.received();
        r.iter()
            .any(|b| b["kind"] == "rpo-breached" && b["state"] == "resolved")
            && r.iter()
                .any(|b| b["kind"] == "backup-failed" && b["state"] == "resolved")
    });
    assert!(!view.tenant("acme").unwrap().rpo_breached);
    wait_for("the resolved e-mails", || {
        smtp.mails()
            .iter()
            .filter(|m| subject(m).contains("RESOLVED") && subject(m).contains("RPO"))
            .count()
            == 2
    });
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_job_running_when_the_daemon_stops_is_marked_interrupted_and_retried() {
    let hook = Receiver::start();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let s = Setup::new(
        "",
        &format!(
            "[tenants.acme.components.slow]\nkind = \"command\"\nbackup = \"while [ ! -e {} ]; do sleep 0.05; done; echo done\"\n",
            release.display()
        ),
        &hook.url,
    );
    let clock = Arc::new(ManualClock::new(at(2026, 11, 20, 12, 0)));
    let daemon = s.start(&clock);
    let view = daemon.view();
    let id = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("the job to reach its component", || {
        view.job(id).unwrap().summary.progress.component.as_deref() == Some("slow")
    });
    let abandoned = daemon.stop(Duration::from_millis(200));
    assert_eq!(abandoned, vec![id]);
    std::fs::write(&release, "").unwrap();

    let daemon = s.start(&clock);
    let view = daemon.view();
    assert_eq!(view.job(id).unwrap().summary.status, "interrupted");
    wait_for("the retry", || {
        view.jobs(Some("acme"), 10)
            .iter()
            .any(|j| j.trigger == "retry" && j.status == "succeeded")
    });
    assert!(view
        .points("acme")
        .unwrap()
        .iter()
        .any(|p| p.status == "complete"));
    daemon.stop(Duration::from_secs(10));
    let _ = Path::new("");
}
