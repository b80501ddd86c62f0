//! Drills from the daemon, on an injected clock: a runbook's `drill-schedule` queues a
//! drill job that calls the daemon's `DrRunner`; a failed drill alerts
//! `drill:TENANT:RUNBOOK` to a real webhook receiver and the next good one resolves it; a
//! drill slower than the runbook's `rto` alerts `rto:TENANT:RUNBOOK` until a faster one;
//! the view starts a drill at once and answers with its run id, lists the runs and shows
//! readiness; a config reload moves a runbook's drill schedule. The runner here records its calls and writes the `dr_runs` rows as the
//! engine does (the scheduling test; the engine has its own tests).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use haven_ops::daemon::clock::ManualClock;
use haven_ops::daemon::view::{JobKind, RunbookMode, ViewError};
use haven_ops::daemon::{Daemon, DaemonOptions};
use haven_ops::dr_runner::{DrRunner, RunOptions};
use haven_ops::location::canonical_location;
use haven_ops::{Config, OpsError};

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

fn at(d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, min, 0).unwrap()
}

/// Writes a drill's `dr_runs` row as the engine would: running at the start, then the
/// next scripted (state, seconds).
struct RecordingRunner {
    catalog: PathBuf,
    repo: String,
    clock: Arc<ManualClock>,
    outcomes: Mutex<VecDeque<(&'static str, f64)>>,
    /// (runbook, actor) of every call.
    calls: Mutex<Vec<(String, String)>>,
}

impl DrRunner for RecordingRunner {
    fn drill(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError> {
        let rb = &config.runbooks[runbook];
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((runbook.to_string(), options.actor.clone()));
            calls.len()
        };
        let id = format!("dr-test-{n}");
        let conn = rusqlite::Connection::open(&self.catalog).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let now = haven_ops::daemon::clock::Clock::now(&*self.clock);
        conn.execute(
            "INSERT INTO dr_runs (id, runbook, tenant, repo, into_tenant, mode, point, state, \
             started, actor, owner_pid, plan) \
             VALUES (?1, ?2, ?3, ?4, '', 'drill', NULL, 'running', ?5, ?6, ?7, '{}')",
            rusqlite::params![
                id,
                runbook,
                rb.tenant,
                self.repo,
                now.to_rfc3339(),
                options.actor,
                std::process::id()
            ],
        )
        .unwrap();
        started(&id);
        let (state, seconds) = self.outcomes.lock().unwrap().pop_front().unwrap();
        conn.execute(
            "UPDATE dr_runs SET state = ?2, seconds = ?3, finished = ?4, \
             error = CASE WHEN ?2 = 'failed' THEN 'step smoke: HTTP 503 from the restored site' END \
             WHERE id = ?1",
            rusqlite::params![id, state, seconds, now.to_rfc3339()],
        )
        .unwrap();
        Ok(id)
    }

    fn run(
        &self,
        _config: &Config,
        runbook: &str,
        _options: &RunOptions,
        _started: &dyn Fn(&str),
    ) -> Result<String, OpsError> {
        Err(OpsError::Invalid(format!(
            "runbook {runbook}: a run of it is in progress"
        )))
    }
}

/// Tenants acme and acme-dr (files) and runbook acme-failover (rto 1m) drilled on
/// `drill_schedule`; backups and retention far away.
fn config_text(root: &std::path::Path, hook: &str, drill_schedule: &str) -> String {
    format!(
        r#"
[daemon]
state-dir = "state"
retention-schedule = "0 0 1 1 *"
[alerts.ops]
kind = "webhook"
url = "{hook}"
[repositories.main]
url = "{root}/repo"
password-file = "password"
[tenants.acme]
repository = "main"
schedule = "0 0 1 1 *"
[tenants.acme.components.files]
kind = "files"
paths = ["{root}/data"]
[tenants.acme-dr]
repository = "main"
schedule = "0 0 1 1 *"
[tenants.acme-dr.components.files]
kind = "files"
paths = ["{root}/dr"]
[runbooks.acme-failover]
tenant = "acme"
into = "acme-dr"
rto = "1m"
drill-schedule = "{drill_schedule}"
[[runbooks.acme-failover.steps]]
name = "restore"
kind = "restore"
"#,
        hook = hook,
        root = root.display()
    )
}

#[test]
fn scheduled_drills_alert_on_failure_and_slow_rto_and_the_view_starts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let text = config_text(root, &hook.url, "0 4 * * *");
    let path = root.join("haven.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(root.join("password"), "pw").unwrap();
    let config = Config::load(&path).unwrap();
    let clock = Arc::new(ManualClock::new(at(20, 2, 0)));
    let runner = Arc::new(RecordingRunner {
        catalog: root.join("state/catalog.sqlite"),
        repo: canonical_location(&config.repositories["main"].url),
        clock: clock.clone(),
        outcomes: Mutex::new(VecDeque::from([
            ("failed", 5.0),
            ("succeeded", 90.0),
            ("succeeded", 30.0),
        ])),
        calls: Mutex::default(),
    });
    let daemon = Daemon::start(
        config,
        DaemonOptions {
            clock: clock.clone(),
            lock_wait: Duration::from_secs(30),
            dr_runner: Some(runner.clone()),
        },
    )
    .unwrap();
    let view = daemon.view();
    let drill_jobs = || {
        view.jobs(Some("acme"), 50)
            .into_iter()
            .filter(|j| j.kind == JobKind::Drill)
            .collect::<Vec<_>>()
    };
    let alerts = |kind: &str, state: &str| {
        hook.received()
            .into_iter()
            .filter(|b| b["kind"] == kind && b["state"] == state)
            .collect::<Vec<_>>()
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(drill_jobs().is_empty(), "no drill before its slot");

    // The slot: a drill job runs the runner, which fails.
    clock.set(at(20, 4, 0));
    wait_for("the failed drill job", || {
        drill_jobs().first().is_some_and(|j| j.status == "failed")
    });
    assert_eq!(
        runner.calls.lock().unwrap().as_slice(),
        [(
            "acme-failover".to_string(),
            "haven-daemon (drill-schedule)".to_string()
        )]
    );
    let job = &drill_jobs()[0];
    assert_eq!(
        (job.trigger.as_str(), job.tenant.as_str()),
        ("schedule", "acme")
    );
    assert!(
        job.error.as_deref().unwrap().contains("HTTP 503"),
        "{job:?}"
    );
    wait_for("the drill-failed alert", || {
        !alerts("drill-failed", "firing").is_empty()
    });
    let fired = alerts("drill-failed", "firing");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["key"], "drill:acme:acme-failover");
    assert!(
        alerts("rto-exceeded", "firing").is_empty(),
        "a failed drill predicts nothing"
    );

    // The next day's drill succeeds but takes 90 s against an rto of 1m.
    clock.set(at(21, 4, 0));
    wait_for("the second drill", || {
        drill_jobs().len() == 2 && drill_jobs()[0].status == "succeeded"
    });
    wait_for("the drill alert resolved and the RTO alert", || {
        !alerts("drill-failed", "resolved").is_empty()
            && !alerts("rto-exceeded", "firing").is_empty()
    });
    let rto = &alerts("rto-exceeded", "firing")[0];
    assert_eq!(rto["key"], "rto:acme:acme-failover");
    assert!(rto["summary"].as_str().unwrap().contains("90 s"), "{rto}");

    // The view: a drill started now answers with its run id; 30 s resolves the RTO alert.
    let id = view
        .start_runbook("acme-failover", RunbookMode::Drill, None)
        .unwrap();
    assert_eq!(id, "dr-test-3");
    wait_for("the RTO alert resolved", || {
        !alerts("rto-exceeded", "resolved").is_empty()
    });
    assert_eq!(runner.calls.lock().unwrap()[2].1, "api");
    let runs = view.dr_runs(10).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["dr-test-3", "dr-test-2", "dr-test-1"]
    );
    assert_eq!(view.dr_run("dr-test-2").unwrap().run.seconds, Some(90.0));
    assert!(matches!(
        view.dr_run("dr-nope"),
        Err(ViewError::UnknownRun(_))
    ));
    let readiness = view.readiness().unwrap();
    let acme = readiness.iter().find(|r| r.tenant == "acme").unwrap();
    let rb = &acme.runbooks[0];
    assert_eq!(rb.predicted_rto.as_ref().unwrap().seconds(), 30.0);
    assert!(!rb.rto_exceeded);
    assert_eq!(rb.drill_schedule.as_deref(), Some("0 4 * * *"));

    // Refusals: an unknown runbook; a run the engine refuses; drills are not per tenant.
    assert!(matches!(
        view.start_runbook("nope", RunbookMode::Drill, None),
        Err(ViewError::UnknownRunbook(_))
    ));
    match view.start_runbook("acme-failover", RunbookMode::Run, None) {
        Err(ViewError::Conflict(m)) => assert!(m.contains("in progress"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        view.trigger("acme", JobKind::Drill),
        Err(ViewError::BadRequest(_))
    ));
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_reload_moves_a_runbooks_drill_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    std::fs::write(root.join("password"), "pw").unwrap();
    let path = root.join("haven.toml");
    std::fs::write(&path, config_text(root, &hook.url, "0 4 * * *")).unwrap();
    let config = Config::load(&path).unwrap();
    let clock = Arc::new(ManualClock::new(at(20, 2, 0)));
    let runner = Arc::new(RecordingRunner {
        catalog: root.join("state/catalog.sqlite"),
        repo: canonical_location(&config.repositories["main"].url),
        clock: clock.clone(),
        outcomes: Mutex::new(VecDeque::from([("succeeded", 10.0), ("succeeded", 10.0)])),
        calls: Mutex::default(),
    });
    let daemon = Daemon::start(
        config,
        DaemonOptions {
            clock: clock.clone(),
            lock_wait: Duration::from_secs(30),
            dr_runner: Some(runner.clone()),
        },
    )
    .unwrap();
    let view = daemon.view();
    // Drills move from 04:00 to 03:00; the reload is at 02:00.
    std::fs::write(&path, config_text(root, &hook.url, "0 3 * * *")).unwrap();
    view.reload().unwrap();
    clock.set(at(20, 3, 0));
    wait_for("the drill at the new slot", || {
        runner.calls.lock().unwrap().len() == 1
    });
    let drills = view
        .jobs(Some("acme"), 10)
        .into_iter()
        .filter(|j| j.kind == JobKind::Drill)
        .collect::<Vec<_>>();
    assert_eq!(drills[0].scheduled_for, Some(at(20, 3, 0)));
    // The old slot passes without a drill.
    clock.set(at(20, 4, 30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runner.calls.lock().unwrap().len(),
        1,
        "the old schedule still drills"
    );
    daemon.stop(Duration::from_secs(10));
}
