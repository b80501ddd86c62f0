//! The RPO watch (a dead man's switch) and the daemon's alert conditions.
//!
//! For every tenant and component, effective RPO = now − the newest complete recovery
//! point holding it (or − the time the daemon first saw the tenant, when there is none
//! yet). Above the tenant's `rpo`, the condition `rpo:TENANT:COMPONENT` fires — whatever
//! the cause: failed runs, skipped runs, a scheduler that never started them. It resolves
//! by itself after the next good backup. Other conditions: `backup:TENANT` (the last run
//! failed after its retries), `missed:TENANT` (a slot passed while the daemon was down;
//! resolved by the next good backup), `verify:TENANT` (the last drill failed) and
//! `retention:TENANT` (the last retention run failed; resolved by the next good one).
//! Drills raise `drill:TENANT:RUNBOOK` and `rto:TENANT:RUNBOOK` (`drills.rs`) through
//! [`raise`] and [`clear`].
//! Delivery, deduplication and reminders are the [`crate::alerts`] engine's.

use chrono::{DateTime, Utc};

use super::view::JobKind;
use super::Shared;
use crate::alerts::{Alert, AlertError, AlertKind, AlertRecord, AlertState, AlertStore, Alerter};
use crate::backup::Unreachable;
use crate::catalog::{self, AlertRow, Catalog};
use crate::config::Config;

pub(super) fn new_alerter(config: &Config, catalog: &Catalog) -> Alerter {
    Alerter::new(
        config.alerts.clone(),
        config.daemon.reminder,
        Box::new(CatalogAlerts(catalog.clone())),
    )
}

/// The alert engine's state kept in the catalog's `alerts` table, so a restarted daemon
/// neither repeats nor forgets a notification.
struct CatalogAlerts(Catalog);

fn store_error(e: catalog::CatalogError) -> AlertError {
    AlertError::Store(e.to_string())
}

fn to_record(row: AlertRow) -> AlertRecord {
    AlertRecord {
        key: row.key,
        state: match row.state {
            catalog::AlertState::Firing => AlertState::Firing,
            catalog::AlertState::Resolved => AlertState::Resolved,
        },
        first_fired: row.first_fired,
        last_sent: row.last_sent,
        resolved_at: row.resolved_at,
        message: row.message,
    }
}

impl AlertStore for CatalogAlerts {
    fn get(&self, key: &str) -> Result<Option<AlertRecord>, AlertError> {
        Ok(self.0.alert(key).map_err(store_error)?.map(to_record))
    }

    fn put(&mut self, r: &AlertRecord) -> Result<(), AlertError> {
        let row = AlertRow {
            key: r.key.clone(),
            state: match r.state {
                AlertState::Firing => catalog::AlertState::Firing,
                AlertState::Resolved => catalog::AlertState::Resolved,
            },
            first_fired: r.first_fired,
            last_sent: r.last_sent,
            resolved_at: r.resolved_at,
            message: r.message.clone(),
        };
        self.0.set_alert(&row).map_err(store_error)
    }

    fn all(&self) -> Result<Vec<AlertRecord>, AlertError> {
        Ok(self
            .0
            .alerts(false)
            .map_err(store_error)?
            .into_iter()
            .map(to_record)
            .collect())
    }
}

/// Sinks that get a tenant's alerts: its own list, else every declared sink.
fn sinks_for(shared: &Shared, tenant: &str) -> Vec<String> {
    let config = shared.config();
    crate::alerts::sinks_for(
        config
            .tenants
            .get(tenant)
            .and_then(|t| t.plan.alerts.as_deref()),
        &config.alerts,
    )
}

pub(super) fn raise(
    shared: &Shared,
    kind: AlertKind,
    tenant: &str,
    component: Option<&str>,
    summary: String,
    details: String,
    now: DateTime<Utc>,
) {
    let key = Alert::key_for(kind, tenant, component);
    let alert = Alert::firing(key, kind, tenant, component, summary, details, now);
    let sinks = sinks_for(shared, tenant);
    let mut alerter = shared.alerter.lock().expect("alerter");
    for e in alerter.fire(alert, &sinks, now) {
        eprintln!("haven: warning: alert delivery: {e}");
    }
}

pub(super) fn clear(
    shared: &Shared,
    kind: AlertKind,
    tenant: &str,
    component: Option<&str>,
    now: DateTime<Utc>,
) {
    let key = Alert::key_for(kind, tenant, component);
    let mut alerter = shared.alerter.lock().expect("alerter");
    for e in alerter.resolve(&key, now) {
        eprintln!("haven: warning: alert delivery: {e}");
    }
}

pub(super) fn backup_failed(shared: &Shared, tenant: &str, why: &str, now: DateTime<Utc>) {
    raise(
        shared,
        AlertKind::BackupFailed,
        tenant,
        None,
        format!("backup of tenant {tenant} failed"),
        why.to_string(),
        now,
    );
}

/// A scheduled backup slot passed while the daemon was down (it now runs late).
pub(super) fn backup_missed(
    shared: &Shared,
    tenant: &str,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    raise(
        shared,
        AlertKind::BackupMissed,
        tenant,
        None,
        format!(
            "the backup of tenant {tenant} scheduled for {} was missed while the daemon was down; it runs now, late",
            slot.format("%Y-%m-%d %H:%M UTC")
        ),
        "Haven runs one catch-up backup for the most recent missed slot.".to_string(),
        now,
    );
}

pub(super) fn backup_succeeded(shared: &Shared, tenant: &str, now: DateTime<Utc>) {
    clear(shared, AlertKind::BackupFailed, tenant, None, now);
    clear(shared, AlertKind::BackupMissed, tenant, None, now);
    check_tenant(shared, tenant, now);
}

pub(super) fn verify_failed(shared: &Shared, tenant: &str, why: &str, now: DateTime<Utc>) {
    raise(
        shared,
        AlertKind::VerifyFailed,
        tenant,
        None,
        format!("restore drill of tenant {tenant} failed validation"),
        why.to_string(),
        now,
    );
}

pub(super) fn verify_passed(shared: &Shared, tenant: &str, now: DateTime<Utc>) {
    clear(shared, AlertKind::VerifyFailed, tenant, None, now);
}

pub(super) fn retention_failed(shared: &Shared, tenant: &str, why: &str, now: DateTime<Utc>) {
    raise(
        shared,
        AlertKind::RetentionFailed,
        tenant,
        None,
        format!("retention of tenant {tenant} failed: old points are not removed and the repository keeps growing"),
        why.to_string(),
        now,
    );
}

pub(super) fn retention_succeeded(shared: &Shared, tenant: &str, now: DateTime<Utc>) {
    clear(shared, AlertKind::RetentionFailed, tenant, None, now);
}

/// Components of `tenant` whose systems did not answer: alert `source-down:TENANT` at
/// once, naming every one known so far (one notification per tenant: later components
/// join the condition's details, the engine sends nothing new while it holds).
pub(super) fn source_down(
    shared: &Shared,
    tenant: &str,
    found: &[Unreachable],
    now: DateTime<Utc>,
) {
    let down: Vec<(String, String)> = {
        let mut all = shared.sources_down.lock().expect("sources down");
        let mine = all.entry(tenant.to_string()).or_default();
        for u in found {
            mine.insert(u.component.clone(), u.detail.clone());
        }
        mine.iter().map(|(c, d)| (c.clone(), d.clone())).collect()
    };
    let names: Vec<&str> = down.iter().map(|(c, _)| c.as_str()).collect();
    let details: Vec<String> = down.iter().map(|(c, d)| format!("{c}: {d}")).collect();
    raise(
        shared,
        AlertKind::SourceDown,
        tenant,
        None,
        format!(
            "tenant {tenant}: source down: {} do{} not answer",
            names.join(", "),
            if names.len() == 1 { "es" } else { "" }
        ),
        format!(
            "{}\nBackups of them fail until they answer (the daemon keeps retrying). If the site is lost, fail over (`haven dr run RUNBOOK`): the daemon then backs the tenant up from its new servers.",
            details.join("\n")
        ),
        now,
    );
}

/// A backup of `tenant` reached these components: `source-down:TENANT` resolves once
/// none of its components is known to be down.
pub(super) fn sources_reached(shared: &Shared, tenant: &str, reached: &[&str], now: DateTime<Utc>) {
    let still_down = {
        let mut all = shared.sources_down.lock().expect("sources down");
        let mine = all.entry(tenant.to_string()).or_default();
        for c in reached {
            mine.remove(*c);
        }
        !mine.is_empty()
    };
    if !still_down {
        clear(shared, AlertKind::SourceDown, tenant, None, now);
    }
}

/// The names of the components `tenant` is backed up from now (another tenant's after a
/// failover, see [`crate::failover`]).
fn component_names(shared: &Shared, tenant: &str) -> Vec<String> {
    let config = shared.config();
    match crate::failover::effective_tenant(&config, &shared.catalog, tenant) {
        Ok(t) => t.components.keys().cloned().collect(),
        Err(_) => config
            .tenants
            .get(tenant)
            .map(|t| t.components.keys().cloned().collect())
            .unwrap_or_default(),
    }
}

/// Effective RPO of each component of `tenant` at `now`: (component, seconds, breached).
pub(super) fn effective_rpo(
    shared: &Shared,
    tenant: &str,
    now: DateTime<Utc>,
) -> Vec<(String, Option<DateTime<Utc>>, f64, bool)> {
    let Some(target) = shared.config().tenants.get(tenant).map(|t| t.plan.rpo) else {
        return vec![];
    };
    let target = target.as_secs_f64();
    let first_seen = shared
        .catalog
        .tenant_meta(tenant, "first_seen")
        .ok()
        .flatten()
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    let points = shared.catalog.points(tenant).unwrap_or_default();
    component_names(shared, tenant)
        .into_iter()
        .map(|name| {
            let last = points
                .iter()
                .filter(|p| {
                    p.status == crate::point::PointStatus::Complete
                        && p.components.contains_key(&name)
                })
                .map(|p| p.started)
                .max();
            let since = last.unwrap_or(first_seen);
            let seconds = (now - since).num_milliseconds().max(0) as f64 / 1000.0;
            (name, last, seconds, seconds > target)
        })
        .collect()
}

/// Slack before a breach is alerted while a backup of the tenant is queued or running
/// (the run about to refresh the point): `max(target / 10, min(target / 2, 10 min))`.
/// A 24 h RPO gets 2.4 h, 1 h gets 10 min, 10 min gets 5 min, 2 min gets 1 min: a short
/// RPO is alerted within a minute or two of its breach instead of after a 10-minute
/// floor. A run stuck beyond that is alerted like any other breach.
pub(crate) fn grace(target: std::time::Duration) -> f64 {
    let t = target.as_secs_f64();
    (t / 10.0).max((t / 2.0).min(600.0))
}

/// Points made outside the daemon (`haven tenant backup` by hand) reach the catalog
/// when a breach is about to be alerted: the repository is read again, at most every
/// 10 minutes per tenant.
fn refresh_before_alerting(shared: &Shared, tenant: &str, now: DateTime<Utc>) -> bool {
    let key = "points_refreshed";
    let recent = shared
        .catalog
        .tenant_meta(tenant, key)
        .ok()
        .flatten()
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .is_some_and(|t| now - t.with_timezone(&Utc) < chrono::Duration::minutes(10));
    if recent {
        return false;
    }
    let _ = shared
        .catalog
        .set_tenant_meta(tenant, key, &now.to_rfc3339());
    super::worker::refresh_points(shared, tenant).is_ok()
}

fn backup_in_progress(shared: &Shared, tenant: &str) -> bool {
    let state = shared.state.lock().expect("daemon state");
    state
        .running
        .get(tenant)
        .is_some_and(|r| r.kind == JobKind::Backup)
        || state
            .queue
            .iter()
            .any(|q| q.tenant == tenant && q.kind == JobKind::Backup)
}

fn check_tenant(shared: &Shared, tenant: &str, now: DateTime<Utc>) {
    let Some(target) = shared.config().tenants.get(tenant).map(|t| t.plan.rpo) else {
        return;
    };
    let mut rpo = effective_rpo(shared, tenant, now);
    if rpo.iter().any(|r| r.3) && refresh_before_alerting(shared, tenant, now) {
        rpo = effective_rpo(shared, tenant, now);
    }
    let running = backup_in_progress(shared, tenant);
    for (component, last, seconds, breached) in rpo {
        if breached && running && seconds <= target.as_secs_f64() + grace(target) {
            continue; // the run in progress is about to refresh it
        }
        if breached {
            let last = match last {
                Some(t) => format!(
                    "the newest complete recovery point is from {}",
                    t.format("%Y-%m-%d %H:%M UTC")
                ),
                None => "there is no complete recovery point yet".to_string(),
            };
            raise(
                shared,
                AlertKind::RpoBreached,
                tenant,
                Some(&component),
                format!(
                    "tenant {tenant} component {component}: RPO breached ({} since the last good backup, target {})",
                    crate::plan::format_span(std::time::Duration::from_secs(seconds as u64)),
                    crate::plan::format_span(target)
                ),
                format!("{last}; backups failed, were skipped or never ran. Check `haven tenant points {tenant}` and the daemon's jobs."),
                now,
            );
        } else {
            clear(
                shared,
                AlertKind::RpoBreached,
                tenant,
                Some(&component),
                now,
            );
        }
    }
}

/// Every tenant's RPO, then reminders and retries of undelivered alerts.
pub(super) fn check(shared: &Shared, now: DateTime<Utc>) {
    for tenant in shared.config().tenants.keys() {
        check_tenant(shared, tenant, now);
    }
    let mut alerter = shared.alerter.lock().expect("alerter");
    for e in alerter.tick(now) {
        eprintln!("haven: warning: alert delivery: {e}");
    }
}
