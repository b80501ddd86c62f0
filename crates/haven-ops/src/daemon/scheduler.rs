//! The scheduler loop: cron slots become queued jobs, queued jobs become workers (at most
//! `concurrency` at once, one per tenant), and the RPO watch runs between.
//!
//! Catch-up: the catalog remembers the last slot run per tenant and kind
//! (`tenant_meta` `last_slot:<kind>`). At start, if a slot passed since then (the daemon was
//! down), one run is queued for the most recent missed slot, however many were missed,
//! and recorded as late. A tenant seen for the first time starts at the next slot.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::view::{JobKind, ViewError};
use super::{watch, worker, Queued, Shared};
use crate::catalog::{JobFilter, JobStatus, NewJob, Trigger};
use crate::OpsError;

/// How often the RPO watch runs (by the daemon's clock).
const WATCH_EVERY: chrono::Duration = chrono::Duration::seconds(10);

/// A slot run later than this after its time counts as late.
const LATE_AFTER: chrono::Duration = chrono::Duration::seconds(60);

pub(super) fn kind_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Backup => "backup",
        JobKind::Verify => "verify",
        JobKind::Retention => "retention",
        JobKind::Drill => "drill",
    }
}

/// Queue a job unless one of the same tenant and kind is queued already (then its id is
/// returned): a backlog never grows beyond one run per tenant and kind.
pub(super) fn enqueue(
    shared: &Shared,
    tenant: &str,
    kind: JobKind,
    trigger: Trigger,
    scheduled_for: Option<DateTime<Utc>>,
    late: bool,
) -> Result<i64, ViewError> {
    if !shared.config().tenants.contains_key(tenant) {
        return Err(ViewError::UnknownTenant(tenant.to_string()));
    }
    let mut state = shared.state.lock().expect("daemon state");
    if let Some(q) = state
        .queue
        .iter()
        .find(|q| q.tenant == tenant && q.kind == kind)
    {
        return Ok(q.id);
    }
    let id = shared
        .catalog
        .create_job(&NewJob {
            kind,
            tenant: tenant.to_string(),
            trigger,
            scheduled_for,
            late,
        })
        .map_err(|e| ViewError::Unavailable(format!("the catalog refused the job: {e}")))?
        .0;
    state.queue.push_back(Queued {
        id,
        tenant: tenant.to_string(),
        kind,
        runbook: None,
    });
    drop(state);
    shared.notify();
    Ok(id)
}

/// At start: retry what a previous daemon left unfinished, queue catch-up runs, and
/// compute the next slots.
pub(super) fn recover(shared: &Arc<Shared>) -> Result<(), OpsError> {
    let now = shared.clock.now();
    let config = shared.config();
    for tenant in config.tenants.keys() {
        rebuild_if_new(shared, tenant, shared.catalog.created())?;
    }
    // Jobs a killed daemon left running, and jobs a stopping daemon abandoned: run again.
    shared.catalog.mark_running_as_interrupted()?;
    let interrupted = shared.catalog.jobs(&JobFilter {
        status: Some(JobStatus::Interrupted),
        limit: 1000,
        ..Default::default()
    })?;
    for job in interrupted {
        let key = format!("retried:{}", job.id);
        // An interrupted drill is not retried: its run is in the catalog for `haven dr
        // resume`, and the next slot drills again.
        if shared.catalog.get_meta(&key)?.is_some()
            || !config.tenants.contains_key(&job.tenant)
            || job.kind == JobKind::Drill
        {
            continue;
        }
        let _ = enqueue(
            shared,
            &job.tenant,
            job.kind,
            Trigger::Retry,
            job.scheduled_for,
            job.late,
        );
        shared.catalog.set_meta(&key, "1")?;
    }
    let mut next = std::collections::BTreeMap::new();
    for ((tenant, kind), schedule) in shared.schedules().iter() {
        let last = shared.catalog.last_slot(*kind, tenant).ok().flatten();
        match last {
            Some(last) => {
                if let Some(slot) = schedule.due_slot(last, now) {
                    let _ = enqueue(shared, tenant, *kind, Trigger::CatchUp, Some(slot), true);
                    if *kind == JobKind::Backup {
                        watch::backup_missed(shared, tenant, slot, now);
                    }
                    shared.catalog.set_last_slot(*kind, tenant, slot)?;
                }
            }
            None => {
                let mark = schedule.last_at_or_before(now).unwrap_or(now);
                shared.catalog.set_last_slot(*kind, tenant, mark)?;
            }
        }
        if shared.catalog.tenant_meta(tenant, "first_seen")?.is_none() {
            shared
                .catalog
                .set_tenant_meta(tenant, "first_seen", &now.to_rfc3339())?;
        }
        if let Some(n) = schedule.next_after(now) {
            next.insert((tenant.clone(), *kind), n);
        }
    }
    shared.state.lock().expect("daemon state").next = next;
    super::drills::recover(shared, now);
    Ok(())
}

/// A new (or deleted) catalog, or a tenant new to it (on this repository: see the
/// catalog's keying): the tenant's recovery points come back from its repository.
pub(super) fn rebuild_if_new(shared: &Shared, tenant: &str, always: bool) -> Result<(), OpsError> {
    let unseen = shared.catalog.tenant_meta(tenant, "first_seen")?.is_none();
    if !always && !unseen {
        return Ok(());
    }
    match worker::refresh_points(shared, tenant) {
        Ok(_) => {}
        // No repository yet: the first backup creates it.
        Err(OpsError::Repo(haven_repo::RepoError::NotARepository(_))) => {}
        Err(e) => eprintln!(
            "haven: warning: rebuilding the recovery points of {tenant} from its repository: {e}"
        ),
    }
    Ok(())
}

pub(super) fn run(shared: &Arc<Shared>) {
    let mut last_watch: Option<DateTime<Utc>> = None;
    while !shared.stopping() {
        let now = shared.clock.now();
        queue_due_slots(shared, now);
        super::drills::queue_due(shared, now);
        dispatch(shared);
        if last_watch.is_none_or(|t| now >= t + WATCH_EVERY) {
            watch::check(shared, now);
            super::drills::check_rto(shared, now);
            last_watch = Some(now);
        }
        super::probe::due(shared, now);
        let probe = super::probe::next_due(shared);
        let state = shared.state.lock().expect("daemon state");
        if shared.stopping() {
            break;
        }
        let mut deadline = last_watch.unwrap_or(now) + WATCH_EVERY;
        if let Some(p) = probe {
            deadline = deadline.min(p);
        }
        if let Some(n) = state.next.values().min() {
            deadline = deadline.min(*n);
        }
        if let Some(n) = super::drills::next_slot(&state) {
            deadline = deadline.min(n);
        }
        let wait = shared.clock.real_wait(deadline);
        let _ = shared.wake.wait_timeout(state, wait).expect("daemon state");
    }
}

fn queue_due_slots(shared: &Shared, now: DateTime<Utc>) {
    let due: Vec<(String, JobKind)> = {
        let state = shared.state.lock().expect("daemon state");
        state
            .next
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect()
    };
    let schedules = shared.schedules();
    for (tenant, kind) in due {
        let Some(schedule) = schedules.get(&(tenant.clone(), kind)) else {
            // Removed by a reload since.
            let mut state = shared.state.lock().expect("daemon state");
            state.next.remove(&(tenant, kind));
            continue;
        };
        // Several slots may have passed (a long job, a jumped clock): run once, for the
        // most recent one.
        let slot = schedule.last_at_or_before(now).unwrap_or(now);
        let late = now - slot > LATE_AFTER;
        let trigger = if late {
            Trigger::CatchUp
        } else {
            Trigger::Schedule
        };
        match enqueue(shared, &tenant, kind, trigger, Some(slot), late) {
            Ok(_) => {
                if let Err(e) = shared.catalog.set_last_slot(kind, &tenant, slot) {
                    eprintln!("haven: warning: recording the slot of {tenant}: {e}");
                }
            }
            Err(e) => eprintln!(
                "haven: warning: could not queue the {} of {tenant}: {e}",
                kind_name(kind)
            ),
        }
        let mut state = shared.state.lock().expect("daemon state");
        match schedule.next_after(now) {
            Some(n) => state.next.insert((tenant, kind), n),
            None => state.next.remove(&(tenant, kind)),
        };
    }
}

/// Start queued jobs while there is room: `concurrency` in all, one per tenant.
fn dispatch(shared: &Arc<Shared>) {
    let concurrency = shared.config().daemon.concurrency;
    let mut state = shared.state.lock().expect("daemon state");
    while state.running.len() < concurrency {
        let Some(pos) = state
            .queue
            .iter()
            .position(|q| !state.running.contains_key(&q.tenant))
        else {
            break;
        };
        let job = state.queue.remove(pos).expect("queued job");
        let running = worker::Running::new(job.id, job.kind);
        state.running.insert(job.tenant.clone(), running.clone());
        let handle = worker::spawn(shared.clone(), job, running);
        state.workers.retain(|h| !h.is_finished());
        state.workers.push(handle);
    }
}
