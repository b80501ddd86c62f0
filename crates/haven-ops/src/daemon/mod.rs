//! `haven serve`: the daemon. It backs every tenant up on its schedule, retries failed
//! components, applies retention, runs restore drills, watches each tenant's RPO, and
//! alerts; the HTTP API reads it through [`view::DaemonView`].
//!
//! ```text
//! scheduler thread (scheduler.rs)
//!   at start: jobs a killed daemon left running -> interrupted, queued again (retry);
//!             one catch-up run per tenant whose last slot passed while it was down (late)
//!   loop: due cron slots -> queue (one queued run per tenant and kind, coalesced)
//!         dispatch: at most `concurrency` jobs, one per tenant -> worker threads (worker.rs)
//!         RPO watch + alert reminders (watch.rs)
//!         wait on the clock until the next slot, a finished job, or a trigger
//! worker: backup_tenant_with_retries / verify_tenant / apply_retention,
//!         log lines and progress -> catalog; result -> catalog, alerts
//! ```
//! Main types: [`Daemon`] (start, stop), [`clock::Clock`] (injectable time),
//! [`view::DaemonView`] (implemented in status.rs). The catalog (SQLite, `catalog.rs`) is a
//! cache and a history: the recovery points are rebuilt from the repository when it is
//! missing.

pub mod clock;
mod scheduler;
mod status;
pub mod view;
mod watch;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alerts::Alerter;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::schedule::Schedule;
use crate::OpsError;

use clock::Clock;
use view::JobKind;

/// A job waiting for a run slot.
#[derive(Debug, Clone)]
struct Queued {
    id: i64,
    tenant: String,
    kind: JobKind,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// By tenant: one job per tenant at a time.
    running: BTreeMap<String, worker::Running>,
    /// Next cron slot per (tenant, kind); retention uses the tenant too.
    next: BTreeMap<(String, JobKind), DateTime<Utc>>,
    workers: Vec<JoinHandle<()>>,
}

/// Everything the daemon's threads share.
struct Shared {
    config: Config,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    wake: Condvar,
    stopping: AtomicBool,
    /// Set when `stop` gave up waiting: workers still running record nothing more.
    abandoned: AtomicBool,
    alerter: Mutex<Alerter>,
    /// Parsed schedules: backup and (optional) verify per tenant, and retention.
    schedules: BTreeMap<(String, JobKind), Schedule>,
    /// How long workers wait for a repository lock held by someone else.
    lock_wait: Duration,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn notify(&self) {
        self.wake.notify_all();
    }
}

/// The running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    scheduler: Option<JoinHandle<()>>,
}

/// How the daemon is started (tests inject a clock and a short lock wait).
pub struct DaemonOptions {
    pub clock: Arc<dyn Clock>,
    pub lock_wait: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            clock: Arc::new(clock::SystemClock),
            lock_wait: Duration::from_secs(600),
        }
    }
}

impl Daemon {
    /// Open the catalog in the state directory and start scheduling.
    pub fn start(config: Config, opts: DaemonOptions) -> Result<Daemon, OpsError> {
        let state_dir = &config.daemon.state_dir;
        std::fs::create_dir_all(state_dir).map_err(|e| {
            OpsError::Invalid(format!(
                "cannot create the state directory {}: {e}; set [daemon] state-dir in {}",
                state_dir.display(),
                config.file.display()
            ))
        })?;
        let clock = opts.clock.clone();
        let catalog =
            Catalog::open(&state_dir.join("catalog.sqlite"))?.with_clock(move || clock.now());
        // A tenant is its name and its repository: another config's tenant of the same
        // name on another repository, in the same state directory, shares nothing.
        let repos: Vec<(String, String)> = config
            .tenants
            .values()
            .map(|t| {
                let url = &config.repository_of(t).url;
                (t.name.clone(), crate::location::canonical_location(url))
            })
            .collect();
        catalog.bind_repositories(repos.iter().map(|(t, r)| (t.as_str(), r.as_str())))?;
        let mut schedules = BTreeMap::new();
        let parse = |expr: &str| Schedule::parse(expr).map_err(OpsError::Invalid);
        for (name, t) in &config.tenants {
            schedules.insert((name.clone(), JobKind::Backup), parse(&t.plan.schedule)?);
            schedules.insert(
                (name.clone(), JobKind::Retention),
                parse(&config.daemon.retention_schedule)?,
            );
            if let Some(v) = &t.plan.verify_schedule {
                schedules.insert((name.clone(), JobKind::Verify), parse(v)?);
            }
        }
        let alerter = watch::new_alerter(&config, &catalog);
        let shared = Arc::new(Shared {
            config,
            catalog,
            clock: opts.clock,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            alerter: Mutex::new(alerter),
            schedules,
            lock_wait: opts.lock_wait,
        });
        scheduler::recover(&shared)?;
        let s = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name("haven-scheduler".into())
            .spawn(move || scheduler::run(&s))
            .map_err(|e| OpsError::Invalid(format!("starting the scheduler thread: {e}")))?;
        Ok(Daemon {
            shared,
            scheduler: Some(scheduler),
        })
    }

    /// The state directory in use (the catalog and other daemon state), for the start
    /// message: several configs may share one (the default), each tenant keyed by its
    /// repository.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.shared.config.daemon.state_dir
    }

    /// The view the HTTP API serves.
    pub fn view(&self) -> Arc<dyn view::DaemonView> {
        Arc::new(status::StatusView(self.shared.clone()))
    }

    /// Stop scheduling; wait up to `grace` for running jobs to finish. Jobs still running
    /// then are marked interrupted in the catalog (they are retried at the next start)
    /// and abandoned: the repository's write ordering keeps it consistent.
    pub fn stop(mut self, grace: Duration) -> Vec<i64> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.notify();
        if let Some(s) = self.scheduler.take() {
            let _ = s.join();
        }
        let deadline = std::time::Instant::now() + grace;
        loop {
            let state = self.shared.state.lock().expect("daemon state");
            if state.running.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = self
                .shared
                .wake
                .wait_timeout(state, left.min(Duration::from_millis(100)));
        }
        let state = self.shared.state.lock().expect("daemon state");
        self.shared.abandoned.store(true, Ordering::SeqCst);
        // Running jobs are abandoned; queued ones never started: both run at the next start.
        let abandoned: Vec<i64> = state
            .running
            .values()
            .map(|r| r.id)
            .chain(state.queue.iter().map(|q| q.id))
            .collect();
        for id in &abandoned {
            worker::mark_interrupted(&self.shared, *id);
        }
        if !state.running.is_empty() {
            // The abandoned jobs' programs (dump tools, hooks) lead their own process
            // groups: stop them rather than leave them running after the daemon.
            haven_sources::process::kill_all();
        }
        abandoned
    }
}
