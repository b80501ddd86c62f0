//! Drills and runbook runs from the daemon, through its [`DrRunner`]:
//!
//! ```text
//! runbook drill-schedule ──due slot (queue_due)──> job kind drill, queued for the runbook's tenant
//!     worker ──run_job──> DrRunner::drill ──> dr_runs row ──> job outcome
//! API POST /runbooks/{name}/run|drill ──start──> own thread ──DrRunner──> run id (202)
//! every drill's end ──finished──> drill:TENANT:RUNBOOK (DrillFailed) raised or resolved
//! each watch tick ──check_rto──> rto:TENANT:RUNBOOK (RtoExceeded) raised or resolved
//! ```
//! A scheduled drill is a job like a backup: one job per tenant at a time, so a drill and
//! a backup of one tenant never overlap. A slot missed while the daemon was down is not
//! caught up (the readiness report shows the age of the last drill). Runs and drills the
//! API starts do not wait in the queue (a failover must not wait behind the dead site's
//! backup retries); the engine refuses a second run of a runbook in progress. When the
//! daemon stops, a run on such a thread is abandoned: its state is in the catalog, and
//! `haven dr resume` continues it.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::view::{JobKind, RunbookMode, ViewError};
use super::{watch, Queued, Shared};
use crate::alerts::AlertKind;
use crate::backup::Observer;
use crate::catalog::{JobOutcome, NewJob, Trigger};
use crate::config::Config;
use crate::dr_runner::RunOptions;
use crate::readiness::{self, RunbookFacts};
use crate::schedule::Schedule;

/// How long `POST /api/v1/runbooks/{name}/run` waits for the engine to record the run.
const START_WAIT: Duration = Duration::from_secs(30);

/// By runbook (with a `drill-schedule`): its tenant and schedule.
pub(super) type DrillSchedules = BTreeMap<String, (String, Schedule)>;

/// Each runbook with a `drill-schedule`: its tenant and schedule.
pub(super) fn schedules(config: &Config) -> DrillSchedules {
    readiness::runbook_facts(config)
        .into_iter()
        .filter_map(|rb| rb.drill_schedule.map(|s| (rb.name, (rb.tenant, s))))
        .collect()
}

fn drill_schedules(shared: &Shared) -> Arc<DrillSchedules> {
    shared
        .drill_schedules
        .read()
        .expect("drill schedules")
        .clone()
}

/// At start: the next drill slot of every scheduled runbook.
pub(super) fn recover(shared: &Shared, now: DateTime<Utc>) {
    let schedules = drill_schedules(shared);
    if shared.dr_runner.is_none() && !schedules.is_empty() {
        eprintln!(
            "haven: warning: runbooks {} have a drill-schedule, but this daemon has no runbook engine: no drill runs",
            schedules.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return;
    }
    let next = schedules
        .iter()
        .filter_map(|(rb, (_, s))| s.next_after(now).map(|n| (rb.clone(), n)))
        .collect();
    shared.state.lock().expect("daemon state").drill_next = next;
}

/// After a config reload: the runbooks' drill schedules as the new config says, each
/// next slot from now (a drill slot is never caught up).
pub(super) fn reload(shared: &Shared, config: &Config, now: DateTime<Utc>) {
    *shared.drill_schedules.write().expect("drill schedules") = Arc::new(schedules(config));
    recover(shared, now);
}

/// The earliest next drill slot, for the scheduler's wait.
pub(super) fn next_slot(state: &super::State) -> Option<DateTime<Utc>> {
    state.drill_next.values().min().copied()
}

/// Queue the drills whose slot has come.
pub(super) fn queue_due(shared: &Shared, now: DateTime<Utc>) {
    let due: Vec<String> = {
        let state = shared.state.lock().expect("daemon state");
        state
            .drill_next
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(rb, _)| rb.clone())
            .collect()
    };
    let schedules = drill_schedules(shared);
    for runbook in due {
        let Some((tenant, schedule)) = schedules.get(&runbook) else {
            continue;
        };
        let slot = schedule.last_at_or_before(now).unwrap_or(now);
        if let Err(e) = enqueue(shared, &runbook, tenant, Trigger::Schedule, Some(slot)) {
            eprintln!("haven: warning: could not queue the drill of runbook {runbook}: {e}");
        }
        let mut state = shared.state.lock().expect("daemon state");
        match schedule.next_after(now) {
            Some(n) => state.drill_next.insert(runbook, n),
            None => state.drill_next.remove(&runbook),
        };
    }
}

/// Queue a drill of `runbook` unless one is queued already.
fn enqueue(
    shared: &Shared,
    runbook: &str,
    tenant: &str,
    trigger: Trigger,
    scheduled_for: Option<DateTime<Utc>>,
) -> Result<i64, ViewError> {
    let mut state = shared.state.lock().expect("daemon state");
    if let Some(q) = state
        .queue
        .iter()
        .find(|q| q.runbook.as_deref() == Some(runbook))
    {
        return Ok(q.id);
    }
    let id = shared
        .catalog
        .create_job(&NewJob {
            kind: JobKind::Drill,
            tenant: tenant.to_string(),
            trigger,
            scheduled_for,
            late: false,
        })
        .map_err(|e| ViewError::Unavailable(format!("the catalog refused the job: {e}")))?
        .0;
    state.queue.push_back(Queued {
        id,
        tenant: tenant.to_string(),
        kind: JobKind::Drill,
        runbook: Some(runbook.to_string()),
    });
    drop(state);
    shared.notify();
    Ok(id)
}

/// The worker's part of a drill job.
pub(super) fn run_job(shared: &Shared, job: &Queued, observer: &Observer) -> JobOutcome {
    let Some(runbook) = job.runbook.as_deref() else {
        return JobOutcome::failed("a drill job without a runbook (a catalog from a newer haven?)");
    };
    let Some(runner) = shared.dr_runner.clone() else {
        return JobOutcome::failed("this daemon has no runbook engine");
    };
    observer.line(&format!("drill of runbook {runbook}"));
    let options = RunOptions {
        point: None,
        dry_run: false,
        actor: "haven-daemon (drill-schedule)".into(),
    };
    let started = |id: &str| observer.line(&format!("drill run {id} started"));
    let result = runner.drill(&shared.config(), runbook, &options, &started);
    finished(shared, &job.tenant, runbook, result, observer)
}

/// After a drill (scheduled or from the API): its outcome from the catalog, the drill
/// alert raised or resolved, the RTO alert re-checked.
fn finished(
    shared: &Shared,
    tenant: &str,
    runbook: &str,
    result: Result<String, crate::OpsError>,
    observer: &Observer,
) -> JobOutcome {
    let now = shared.clock.now();
    let outcome = match result {
        Ok(id) => match shared.catalog.dr_run_detail(&id) {
            Ok(Some(d)) if d.run.state == "succeeded" => {
                observer.line(&format!(
                    "drill run {id} succeeded in {:.1} s",
                    d.run.seconds.unwrap_or_default()
                ));
                let mut o = JobOutcome::succeeded();
                o.point = d.run.point;
                o
            }
            Ok(Some(d)) => {
                let why = d.run.error.unwrap_or_else(|| "no error recorded".into());
                let mut o = JobOutcome::failed(format!("drill run {id} {}: {why}", d.run.state));
                o.point = d.run.point;
                o
            }
            Ok(None) => JobOutcome::failed(format!(
                "drill run {id} is not in the catalog (was it written to another state directory?)"
            )),
            Err(e) => JobOutcome::failed(format!("reading drill run {id}: {e}")),
        },
        Err(e) => JobOutcome::failed(format!("the drill could not run: {e}")),
    };
    match &outcome.error {
        None => watch::clear(shared, AlertKind::DrillFailed, tenant, Some(runbook), now),
        Some(why) => watch::raise(
            shared,
            AlertKind::DrillFailed,
            tenant,
            Some(runbook),
            format!("disaster-recovery drill of runbook {runbook} (tenant {tenant}) failed"),
            format!("{why}. See `haven dr status` and `haven dr report {tenant}`."),
            now,
        ),
    }
    check_rto_of(shared, tenant, now);
    outcome
}

/// Raise or resolve `rto:TENANT:RUNBOOK` for every runbook of every tenant.
pub(super) fn check_rto(shared: &Shared, now: DateTime<Utc>) {
    let tenants: std::collections::BTreeSet<String> = readiness::runbook_facts(&shared.config())
        .into_iter()
        .filter(|rb| rb.rto.is_some() && shared.config().tenants.contains_key(&rb.tenant))
        .map(|rb| rb.tenant)
        .collect();
    for tenant in tenants {
        check_rto_of(shared, &tenant, now);
    }
}

fn check_rto_of(shared: &Shared, tenant: &str, now: DateTime<Utc>) {
    let facts: Vec<RunbookFacts> = readiness::runbook_facts(&shared.config());
    let report = match readiness::report_with(
        &shared.config(),
        &shared.catalog,
        &facts,
        now,
        Some(tenant),
    ) {
        Ok(mut r) if !r.is_empty() => r.remove(0),
        Ok(_) => return,
        Err(e) => {
            eprintln!("haven: warning: readiness of tenant {tenant}: {e}");
            return;
        }
    };
    for rb in &report.runbooks {
        match (&rb.predicted_rto, rb.rto_target_seconds) {
            (Some(p), Some(target)) if rb.rto_exceeded => watch::raise(
                shared,
                AlertKind::RtoExceeded,
                tenant,
                Some(&rb.name),
                format!(
                    "runbook {}: predicted RTO of tenant {tenant} is {:.0} s, above its rto of {target} s",
                    rb.name,
                    p.seconds()
                ),
                format!(
                    "Predicted RTO: {}. Make the restore faster or raise the runbook's rto.",
                    p.describe()
                ),
                now,
            ),
            _ => watch::clear(shared, AlertKind::RtoExceeded, tenant, Some(&rb.name), now),
        }
    }
}

/// `POST /api/v1/runbooks/{name}/run|drill`: start on a thread of its own, answer with
/// the run id once the engine has recorded the run.
pub(super) fn start(
    shared: &Arc<Shared>,
    runbook: &str,
    mode: RunbookMode,
    point: Option<String>,
) -> Result<String, ViewError> {
    if shared.stopping() {
        return Err(ViewError::Unavailable("the daemon is stopping".into()));
    }
    let Some(rb) = readiness::runbook_facts(&shared.config())
        .into_iter()
        .find(|r| r.name == runbook)
    else {
        return Err(ViewError::UnknownRunbook(runbook.to_string()));
    };
    let Some(runner) = shared.dr_runner.clone() else {
        return Err(ViewError::Unavailable(
            "this daemon has no runbook engine; run `haven dr run` on the command line".into(),
        ));
    };
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let s = shared.clone();
    let options = RunOptions {
        point,
        dry_run: mode == RunbookMode::DryRun,
        actor: "api".into(),
    };
    std::thread::Builder::new()
        .name(format!("haven-dr-{runbook}"))
        .spawn(move || {
            let early = tx.clone();
            let started = move |id: &str| {
                let _ = early.send(Ok(id.to_string()));
            };
            let result = match mode {
                RunbookMode::Drill => runner.drill(&s.config(), &rb.name, &options, &started),
                RunbookMode::Run | RunbookMode::DryRun => {
                    runner.run(&s.config(), &rb.name, &options, &started)
                }
            };
            let _ = tx.send(
                result
                    .as_ref()
                    .map(String::clone)
                    .map_err(|e| e.to_string()),
            );
            if mode == RunbookMode::Drill && !s.abandoned.load(std::sync::atomic::Ordering::SeqCst)
            {
                let _ = finished(&s, &rb.tenant, &rb.name, result, &Observer::quiet());
            }
        })
        .map_err(|e| ViewError::Unavailable(format!("starting the run's thread: {e}")))?;
    match rx.recv_timeout(START_WAIT) {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => Err(ViewError::Conflict(format!(
            "runbook {runbook} could not start: {e}"
        ))),
        Err(_) => Err(ViewError::Unavailable(format!(
            "runbook {runbook} did not start within {} s; see `haven dr status`",
            START_WAIT.as_secs()
        ))),
    }
}
