//! `probe-every`: between backups, a tenant's systems are probed so that a dead site is
//! alerted (`source-down:TENANT`, [`super::watch::source_down`]) without waiting for the
//! next backup slot.
//!
//! ```text
//! scheduler round (woken for the next due probe) -> due tenants (probe-every passed, no probe in
//!   flight, no backup of the tenant running: it finds a dead system itself)
//!   -> one thread per tenant: every component of failover::effective_tenant probed in
//!      parallel (each bounded by its connect timeout) -> unreachable ones -> source-down
//! ```
//! A probe never resolves the alert: a backup that reaches the components does.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::view::JobKind;
use super::{watch, Shared};

/// Per tenant: when it was last probed, and whether a probe is in flight.
#[derive(Debug, Default)]
pub(super) struct ProbeState {
    last: Option<DateTime<Utc>>,
    running: bool,
}

/// When the next probe is due (the scheduler wakes for it).
pub(super) fn next_due(shared: &Shared) -> Option<DateTime<Utc>> {
    let config = shared.config();
    let probes = shared.probes.lock().expect("probes");
    config
        .tenants
        .iter()
        .filter_map(|(name, t)| {
            let every = chrono::Duration::from_std(t.plan.probe_every?).ok()?;
            probes.get(name)?.last.map(|last| last + every)
        })
        .min()
}

/// Start the probes that are due.
pub(super) fn due(shared: &Arc<Shared>, now: DateTime<Utc>) {
    if shared.stopping() {
        return;
    }
    let config = shared.config();
    for (name, t) in &config.tenants {
        let Some(every) = t.plan.probe_every else {
            continue;
        };
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let backing_up = shared
            .state
            .lock()
            .expect("daemon state")
            .running
            .get(name)
            .is_some_and(|r| r.kind == JobKind::Backup);
        if backing_up {
            continue;
        }
        {
            let mut probes = shared.probes.lock().expect("probes");
            let p = probes.entry(name.clone()).or_default();
            if p.running || p.last.is_some_and(|last| now - last < every) {
                continue;
            }
            p.running = true;
            p.last = Some(now);
        }
        let (s, name, config) = (shared.clone(), name.clone(), config.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("haven-probe-{name}"))
            .spawn(move || {
                let t = crate::failover::effective_tenant(&config, &s.catalog, &name)
                    .unwrap_or_else(|_| config.tenants[&name].clone());
                let found = crate::backup::unreachable_components(&config, &t);
                if !found.is_empty() && !s.stopping() {
                    watch::source_down(&s, &name, &found, s.clock.now());
                }
                if let Some(p) = s.probes.lock().expect("probes").get_mut(&name) {
                    p.running = false;
                }
            });
        if let Err(e) = spawned {
            eprintln!("haven: warning: cannot start the probe thread: {e}");
        }
    }
}
