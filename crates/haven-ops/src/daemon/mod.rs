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
//!         RPO watch + alert reminders (watch.rs); probes of `probe-every` (probe.rs)
//!         wait on the clock until the next slot, a finished job, or a trigger
//!         drills due on runbooks' drill-schedule -> queued as drill jobs (drills.rs)
//! worker: backup_tenant_with_retries (of failover::effective_tenant) / verify_tenant /
//!         apply_retention / DrRunner::drill, log lines and progress -> catalog;
//!         result -> catalog, alerts; unreachable components -> source-down at once (watch.rs)
//! reload (reload.rs, SIGHUP or the API): Config::load again -> swap config, schedules,
//!         alert sinks; a job keeps the Arc<Config> it started with
//! receivers (receivers.rs): one thread per `wal = "stream"` component, WAL into the
//!         repository each second; alert wal:TENANT:COMPONENT
//! ```
//! Main types: [`Daemon`] (start, stop), [`clock::Clock`] (injectable time),
//! [`view::DaemonView`] (implemented in status.rs). The catalog (SQLite, `catalog.rs`) is a
//! cache and a history: the recovery points are rebuilt from the repository when it is
//! missing.

pub mod clock;
mod drills;
mod probe;
mod receivers;
mod reload;
mod scheduler;
mod status;
pub mod view;
mod watch;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
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
    /// The runbook of a drill job.
    runbook: Option<String>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// By tenant: one job per tenant at a time.
    running: BTreeMap<String, worker::Running>,
    /// Next cron slot per (tenant, kind); retention uses the tenant too.
    next: BTreeMap<(String, JobKind), DateTime<Utc>>,
    /// Next drill slot per runbook (`drills.rs`).
    drill_next: BTreeMap<String, DateTime<Utc>>,
    workers: Vec<JoinHandle<()>>,
}

/// Parsed schedules: backup and (optional) verify per tenant, and retention.
type Schedules = BTreeMap<(String, JobKind), Schedule>;

/// Everything the daemon's threads share.
struct Shared {
    /// Swapped whole by a reload; each job keeps the one it started with.
    config: RwLock<Arc<Config>>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    wake: Condvar,
    stopping: AtomicBool,
    /// Set when `stop` gave up waiting: workers still running record nothing more.
    abandoned: AtomicBool,
    alerter: Mutex<Alerter>,
    schedules: RwLock<Arc<Schedules>>,
    /// One reload at a time (SIGHUP and the API may ask together).
    reloading: Mutex<()>,
    /// How long workers wait for a repository lock held by someone else.
    lock_wait: Duration,
    /// Runbooks with a `drill-schedule`: their tenant and schedule (swapped by a reload).
    drill_schedules: RwLock<Arc<drills::DrillSchedules>>,
    /// Runs drills and runbooks (`None`: drills are not run, the API refuses runs).
    dr_runner: Option<Arc<dyn crate::dr_runner::DrRunner>>,
    /// By tenant: its components whose systems did not answer (component -> error),
    /// behind `source-down:TENANT`.
    sources_down: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// `probe-every`, per tenant.
    probes: Mutex<BTreeMap<String, probe::ProbeState>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn notify(&self) {
        self.wake.notify_all();
    }

    /// The config in force now.
    fn config(&self) -> Arc<Config> {
        self.config.read().expect("daemon config").clone()
    }

    fn schedules(&self) -> Arc<Schedules> {
        self.schedules.read().expect("daemon schedules").clone()
    }
}

/// The cron schedules of every tenant's jobs, by (tenant, kind).
fn parse_schedules(config: &Config) -> Result<Schedules, OpsError> {
    let parse = |expr: &str| Schedule::parse(expr).map_err(OpsError::Invalid);
    let mut schedules = BTreeMap::new();
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
    Ok(schedules)
}

/// Every tenant with the identity of its repository (the catalog's keying).
fn repositories(config: &Config) -> Vec<(String, String)> {
    config
        .tenants
        .values()
        .map(|t| {
            let url = &config.repository_of(t).url;
            (t.name.clone(), crate::location::canonical_location(url))
        })
        .collect()
}

/// The running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    /// Fixed at start (a reload cannot move the catalog).
    state_dir: std::path::PathBuf,
    scheduler: Option<JoinHandle<()>>,
    receivers: Option<receivers::Receivers>,
}

/// How the daemon is started (tests inject a clock and a short lock wait).
pub struct DaemonOptions {
    pub clock: Arc<dyn Clock>,
    pub lock_wait: Duration,
    /// The runbook engine (the `haven` binary gives haven-dr's); drills and the API's
    /// runbook runs need it.
    pub dr_runner: Option<Arc<dyn crate::dr_runner::DrRunner>>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            clock: Arc::new(clock::SystemClock),
            lock_wait: Duration::from_secs(600),
            dr_runner: None,
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
        let repos = repositories(&config);
        catalog.bind_repositories(repos.iter().map(|(t, r)| (t.as_str(), r.as_str())))?;
        let schedules = parse_schedules(&config)?;
        let drill_schedules = drills::schedules(&config);
        let alerter = watch::new_alerter(&config, &catalog);
        let state_dir = config.daemon.state_dir.clone();
        let shared = Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            catalog,
            clock: opts.clock,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            alerter: Mutex::new(alerter),
            schedules: RwLock::new(Arc::new(schedules)),
            reloading: Mutex::new(()),
            lock_wait: opts.lock_wait,
            drill_schedules: RwLock::new(Arc::new(drill_schedules)),
            dr_runner: opts.dr_runner,
            sources_down: Mutex::default(),
            probes: Mutex::default(),
        });
        scheduler::recover(&shared)?;
        let s = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name("haven-scheduler".into())
            .spawn(move || scheduler::run(&s))
            .map_err(|e| OpsError::Invalid(format!("starting the scheduler thread: {e}")))?;
        let receivers = receivers::start(&shared);
        Ok(Daemon {
            shared,
            state_dir,
            scheduler: Some(scheduler),
            receivers: Some(receivers),
        })
    }

    /// The state directory in use (the catalog and other daemon state), for the start
    /// message: several configs may share one (the default), each tenant keyed by its
    /// repository.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Read the config file again and run with it from now on (SIGHUP, `POST
    /// /api/v1/reload`): see [`reload`]. A config that does not load is refused with its
    /// error (file, line, key) and the running one stays.
    pub fn reload(&self) -> Result<view::ReloadReport, OpsError> {
        reload::reload(&self.shared)
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
        if let Some(r) = self.receivers.take() {
            r.stop();
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
