//! Config reload without a restart (SIGHUP, `POST /api/v1/reload`).
//!
//! ```text
//! Config::load(the same file) ──error──> refused (file, line, key); the running config stays
//!        │ ok
//!        v
//! bind repositories (old and new tenants) -> swap config, schedules, alert sinks
//!   -> next slots: kept for unchanged schedules; recomputed from now for added or
//!      changed ones (no catch-up for them); dropped for removed ones
//!   -> queued jobs of removed tenants end `failed` (nothing to back up any more)
//! ```
//! Jobs already running finish with the config they started with; every job started
//! afterwards reads the new one. What only a restart can change (`state-dir`, `listen`,
//! the API token) is kept and named in the report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::view::{JobKind, ReloadReport};
use super::{parse_schedules, repositories, scheduler, watch, Shared};
use crate::catalog::{JobId, JobOutcome};
use crate::config::Config;
use crate::OpsError;

/// The cron expression behind each (tenant, kind) schedule.
fn expressions(config: &Config) -> BTreeMap<(String, JobKind), String> {
    let mut out = BTreeMap::new();
    for (name, t) in &config.tenants {
        out.insert((name.clone(), JobKind::Backup), t.plan.schedule.clone());
        out.insert(
            (name.clone(), JobKind::Retention),
            config.daemon.retention_schedule.clone(),
        );
        if let Some(v) = &t.plan.verify_schedule {
            out.insert((name.clone(), JobKind::Verify), v.clone());
        }
    }
    out
}

pub(super) fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, OpsError> {
    let _one = shared.reloading.lock().expect("reload");
    let old = shared.config();
    let mut new = Config::load(&old.file)?;
    // `--work-dir` (or HAVEN_WORK_DIR) given at start still applies.
    if new.work_dir.is_none() {
        new.work_dir = old.work_dir.clone();
    }
    let schedules = parse_schedules(&new)?;
    let mut notes = vec![];
    if new.daemon.state_dir != old.daemon.state_dir {
        notes.push(format!(
            "state-dir {} takes a restart; the catalog stays in {}",
            new.daemon.state_dir.display(),
            old.daemon.state_dir.display()
        ));
        new.daemon.state_dir = old.daemon.state_dir.clone();
    }
    if new.daemon.listen != old.daemon.listen {
        notes.push(format!(
            "listen {} takes a restart; the API stays on {}",
            new.daemon.listen, old.daemon.listen
        ));
    }
    if (&new.daemon.api_token, &new.daemon.api_token_file)
        != (&old.daemon.api_token, &old.daemon.api_token_file)
    {
        notes.push("the API token is read at start: a new one takes a restart".into());
    }

    // Removed tenants keep their binding: a job of theirs may still be running.
    let mut bound: BTreeMap<String, String> = repositories(&old).into_iter().collect();
    bound.extend(repositories(&new));
    shared
        .catalog
        .bind_repositories(bound.iter().map(|(t, r)| (t.as_str(), r.as_str())))?;

    let added: Vec<String> = new
        .tenants
        .keys()
        .filter(|t| !old.tenants.contains_key(*t))
        .cloned()
        .collect();
    let removed: Vec<String> = old
        .tenants
        .keys()
        .filter(|t| !new.tenants.contains_key(*t))
        .cloned()
        .collect();
    let changed: Vec<String> = new
        .tenants
        .iter()
        .filter(|(name, t)| {
            old.tenants.get(*name).is_some_and(|o| {
                o != *t
                    || old.repositories.get(&o.repository) != new.repositories.get(&t.repository)
            })
        })
        .map(|(name, _)| name.clone())
        .collect();

    let (old_exprs, new_exprs) = (expressions(&old), expressions(&new));
    let new = Arc::new(new);
    *shared.config.write().expect("daemon config") = new.clone();
    *shared.schedules.write().expect("daemon schedules") = Arc::new(schedules);
    *shared.alerter.lock().expect("alerter") = watch::new_alerter(&new, &shared.catalog);
    super::drills::reload(shared, &new, shared.clock.now());

    let now = shared.clock.now();
    // A tenant new to the catalog on its repository (added, or moved to another
    // repository): its points come back from the repository, its RPO counts from now.
    for tenant in added.iter().chain(&changed) {
        scheduler::rebuild_if_new(shared, tenant, false)?;
        if shared.catalog.tenant_meta(tenant, "first_seen")?.is_none() {
            shared
                .catalog
                .set_tenant_meta(tenant, "first_seen", &now.to_rfc3339())?;
        }
    }
    // Added or changed schedules start from now: their past slots are not caught up.
    let schedules = shared.schedules();
    let mut next = BTreeMap::new();
    for (key, schedule) in schedules.iter() {
        if old_exprs.get(key) == new_exprs.get(key) {
            continue;
        }
        let (tenant, kind) = key;
        let mark = schedule.last_at_or_before(now).unwrap_or(now);
        shared.catalog.set_last_slot(*kind, tenant, mark)?;
        next.insert(key.clone(), schedule.next_after(now));
    }
    let removed_set: BTreeSet<&String> = removed.iter().collect();
    let dropped: Vec<i64> = {
        let mut state = shared.state.lock().expect("daemon state");
        state.next.retain(|key, _| schedules.contains_key(key));
        for (key, n) in next {
            match n {
                Some(n) => state.next.insert(key, n),
                None => state.next.remove(&key),
            };
        }
        let dropped = state
            .queue
            .iter()
            .filter(|q| removed_set.contains(&q.tenant))
            .map(|q| q.id)
            .collect();
        state.queue.retain(|q| !removed_set.contains(&q.tenant));
        dropped
    };
    for id in dropped {
        let outcome = JobOutcome::failed("its tenant was removed from the config by a reload");
        if let Err(e) = shared.catalog.finish_job(JobId(id), &outcome) {
            eprintln!("haven: warning: recording job {id} as dropped: {e}");
        }
    }
    shared.notify();
    Ok(ReloadReport {
        file: new.file.display().to_string(),
        tenants: new.tenants.len(),
        added,
        removed,
        changed,
        notes,
    })
}
