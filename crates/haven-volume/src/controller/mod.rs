//! The controller: a candidate for serving one volume (`haven volume serve`).
//!
//! ```text
//! Controller::start ─▶ thread: loop {
//!   campaign (etcd lease, TTL 3 s; lost: poll every TTL/3)
//!   take_over (takeover.rs: seal in-sync replicas with the epoch, guarded txn, gen + 1,
//!              reconcile unsettled regions, settle)
//!   serve: the Volume (volume.rs) is published for the NBD server; beside it
//!          keep-alive thread (every TTL/3; a failure stops serving at once) and
//!          resync thread (resync.rs: out replicas back in, one at a time)
//!   until fenced, superseded, the lease lost or stop ─▶ Volume stops (requests answer
//!   ESHUTDOWN), lease resigned, back to campaign
//! }
//! ```
//! Leases do not fence: a paused controller may still believe it serves. The replicas'
//! epoch check does (invariant 3): a request of an older epoch is refused, and the old
//! controller stops at its first refusal. Main types: [`Controller`], [`Volume`] (the
//! [`crate::nbd::BlockDevice`] of one epoch), [`take_over`], [`ResyncWorker`];
//! [`fanout`] holds the pure rules of the write path.

pub mod admin;
pub mod fanout;

mod copy;
mod exports;
mod locks;
mod member;
mod resync;
mod takeover;
mod volume;

pub use exports::ControllerExports;
pub use resync::{ResyncWorker, Step};
pub use takeover::{take_over, TakeoverError, TakeoverOptions};
pub use volume::{ResyncProgress, Volume, VolumeStatus};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::coord::{Coord, CoordError, Leadership};

/// Default lease TTL of a serving controller.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// How a candidate runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub volume: String,
    /// This candidate's name (stored in the controller key; shown by `volume status`).
    pub candidate: String,
    /// Lease TTL (whole seconds, at least 1).
    pub lease_ttl: Duration,
    pub takeover: TakeoverOptions,
}

impl ControllerConfig {
    pub fn new(volume: &str, candidate: &str) -> ControllerConfig {
        ControllerConfig {
            volume: volume.to_string(),
            candidate: candidate.to_string(),
            lease_ttl: DEFAULT_LEASE,
            takeover: TakeoverOptions::default(),
        }
    }
}

/// What a candidate is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Role {
    /// Waiting for the lease; `leader`: who holds it (name, epoch), when known.
    Standby {
        leader: Option<(String, u64)>,
    },
    TakingOver {
        epoch: u64,
    },
    Serving {
        epoch: u64,
    },
    Stopped,
}

/// A candidate's status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControllerStatus {
    pub volume: String,
    pub candidate: String,
    pub role: Role,
    /// The serving volume's state (while serving).
    pub serving: Option<VolumeStatus>,
    /// The last failure (campaign, takeover, serving), for the operator.
    pub last_error: Option<String>,
}

/// Errors of [`Controller::start`].
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error("cannot start the controller thread: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug)]
struct Inner {
    coord: Coord,
    config: ControllerConfig,
    stop: AtomicBool,
    /// On stop: give the lease up (a clean stop) or let it expire (a crash, for tests).
    resign: AtomicBool,
    serving: Mutex<Option<Arc<Volume>>>,
    role: Mutex<Role>,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running candidate. Dropping it stops it (and resigns the lease).
pub struct Controller {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("volume", &self.inner.config.volume)
            .field("candidate", &self.inner.config.candidate)
            .finish()
    }
}

impl Controller {
    /// Starts the candidate's loop. Fails when the volume does not exist (or etcd does
    /// not answer).
    pub fn start(coord: Coord, config: ControllerConfig) -> Result<Controller, ControllerError> {
        if coord.volume(&config.volume)?.is_none() {
            return Err(CoordError::NoVolume(config.volume.clone()).into());
        }
        let inner = Arc::new(Inner {
            coord,
            config,
            stop: AtomicBool::new(false),
            resign: AtomicBool::new(true),
            serving: Mutex::new(None),
            role: Mutex::new(Role::Standby { leader: None }),
            last_error: Mutex::new(None),
        });
        let thread = {
            let inner = Arc::clone(&inner);
            thread::Builder::new()
                .name(format!("controller {}", inner.config.volume))
                .spawn(move || run(&inner))
                .map_err(ControllerError::Thread)?
        };
        Ok(Controller {
            inner,
            thread: Some(thread),
        })
    }

    /// The volume while this candidate serves it.
    pub fn serving(&self) -> Option<Arc<Volume>> {
        lock(&self.inner.serving).clone()
    }

    /// Waits until this candidate serves (or `deadline` passes).
    pub fn wait_serving(&self, deadline: Instant) -> Option<Arc<Volume>> {
        loop {
            if let Some(v) = self.serving().filter(|v| !v.is_stopped()) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn status(&self) -> ControllerStatus {
        ControllerStatus {
            volume: self.inner.config.volume.clone(),
            candidate: self.inner.config.candidate.clone(),
            role: lock(&self.inner.role).clone(),
            serving: self.serving().map(|v| v.status()),
            last_error: lock(&self.inner.last_error).clone(),
        }
    }

    /// Stops serving (requests answer ESHUTDOWN), resigns the lease so that another
    /// candidate takes over at once, and waits for the loop to end.
    pub fn stop(mut self) {
        self.halt(true);
    }

    /// Stops like a crash: serving ends but the lease is left to expire, so another
    /// candidate takes over only after the TTL (what a `kill -9` does; for tests).
    pub fn abandon(mut self) {
        self.halt(false);
    }

    fn halt(&mut self, resign: bool) {
        self.inner.resign.store(resign, Ordering::SeqCst);
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(v) = self.serving() {
            v.stop("the controller is stopping");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt(self.inner.resign.load(Ordering::SeqCst));
        }
    }
}

/// Sleeps up to `d`, returning early once the controller stops.
fn pause(inner: &Inner, d: Duration) {
    let until = Instant::now() + d;
    while !inner.stop.load(Ordering::SeqCst) && Instant::now() < until {
        thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

fn note_error(inner: &Inner, e: impl std::fmt::Display) {
    let text = e.to_string();
    eprintln!("haven: volume {}: {text}", inner.config.volume);
    *lock(&inner.last_error) = Some(text);
}

fn run(inner: &Inner) {
    let cfg = &inner.config;
    let poll = (cfg.lease_ttl / 3).max(Duration::from_millis(100));
    while !inner.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match inner
            .coord
            .campaign(&cfg.volume, &cfg.candidate, cfg.lease_ttl)
        {
            Ok(Some(leadership)) => {
                let outcome = session(inner, &leadership, started + leadership.ttl);
                if inner.resign.load(Ordering::SeqCst) {
                    let _ = inner.coord.resign(&leadership);
                }
                match outcome {
                    Ok(()) => {}
                    Err(e) => {
                        note_error(inner, &e);
                        // Let the other candidates try before this one does again.
                        pause(inner, cfg.lease_ttl);
                    }
                }
            }
            Ok(None) => {
                let leader = inner.coord.leader(&cfg.volume).ok().flatten();
                *lock(&inner.role) = Role::Standby { leader };
                pause(inner, poll);
            }
            Err(e) => {
                note_error(inner, &e);
                pause(inner, poll);
            }
        }
    }
    *lock(&inner.role) = Role::Stopped;
}

/// The lease as the keep-alive thread sees it, shared with the session.
struct LeaseWatch {
    /// The lease is certain until then.
    until: Mutex<Instant>,
    /// Why it was lost, once it was.
    lost: Mutex<Option<String>>,
    /// The volume, once taken over (the keep-alive tells it about the lease).
    volume: Mutex<Option<Arc<Volume>>>,
    done: AtomicBool,
}

/// One epoch: takeover, then serve until the volume stops. Ok when it served. The
/// lease is kept alive from the start, so a long reconcile does not lose it.
fn session(
    inner: &Inner,
    leadership: &Leadership,
    lease_until: Instant,
) -> Result<(), TakeoverError> {
    let watch = LeaseWatch {
        until: Mutex::new(lease_until),
        lost: Mutex::new(None),
        volume: Mutex::new(None),
        done: AtomicBool::new(false),
    };
    let period = (leadership.ttl / 3).max(Duration::from_millis(100));
    thread::scope(|s| {
        s.spawn(|| keep_alive(inner, leadership, &watch, period));
        let served = serve_epoch(inner, leadership, &watch);
        watch.done.store(true, Ordering::SeqCst);
        served
    })
}

fn serve_epoch(
    inner: &Inner,
    leadership: &Leadership,
    watch: &LeaseWatch,
) -> Result<(), TakeoverError> {
    let cfg = &inner.config;
    *lock(&inner.role) = Role::TakingOver {
        epoch: leadership.epoch,
    };
    eprintln!(
        "haven: volume {}: {} won the lease, epoch {}; taking over",
        cfg.volume, cfg.candidate, leadership.epoch
    );
    let until = *lock(&watch.until);
    let volume = Arc::new(take_over(
        &inner.coord,
        leadership.clone(),
        &cfg.takeover,
        until,
    )?);
    *lock(&watch.volume) = Some(Arc::clone(&volume));
    volume.extend_lease(*lock(&watch.until));
    if let Some(why) = lock(&watch.lost).clone() {
        volume.stop(why);
    }
    thread::scope(|s| {
        s.spawn(|| {
            let mut worker = ResyncWorker::new(Arc::clone(&volume));
            while !volume.is_stopped() {
                if worker.step() == Step::Idle {
                    pause_while(&volume, Duration::from_millis(500));
                }
            }
        });
        s.spawn(|| publish_progress(inner, leadership, &volume));
        *lock(&inner.serving) = Some(Arc::clone(&volume));
        *lock(&inner.role) = Role::Serving {
            epoch: leadership.epoch,
        };
        eprintln!(
            "haven: volume {}: serving, epoch {}",
            cfg.volume, leadership.epoch
        );
        while !volume.is_stopped() {
            if inner.stop.load(Ordering::SeqCst) {
                volume.stop("the controller is stopping");
            }
            thread::sleep(Duration::from_millis(20));
        }
        *lock(&inner.serving) = None;
    });
    let reason = volume.stop_reason().unwrap_or_default();
    eprintln!(
        "haven: volume {}: stopped serving epoch {}: {reason}",
        cfg.volume, leadership.epoch
    );
    if !inner.stop.load(Ordering::SeqCst) {
        *lock(&inner.last_error) = Some(reason);
    }
    Ok(())
}

/// Publishes the resyncs in progress for `volume status` when they change (at most once
/// a second), and once more when the last one ended. Best effort: an etcd hiccup only
/// delays it.
fn publish_progress(inner: &Inner, leadership: &Leadership, volume: &Volume) {
    let mut published: Option<Vec<ResyncProgress>> = None;
    while !volume.is_stopped() {
        let now = volume.status().resyncing;
        if published.as_ref() != Some(&now) {
            match inner.coord.publish_progress(leadership, &now) {
                Ok(()) => published = Some(now),
                Err(e) => note_error(inner, format!("publishing resync progress: {e}")),
            }
        }
        pause_while(volume, Duration::from_secs(1));
    }
}

fn pause_while(volume: &Volume, d: Duration) {
    let until = Instant::now() + d;
    while !volume.is_stopped() && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Refreshes the lease every `period` until the session ends; the first failure stops
/// serving (or the takeover's guarded transactions fail).
fn keep_alive(inner: &Inner, leadership: &Leadership, watch: &LeaseWatch, period: Duration) {
    let ended = || {
        watch.done.load(Ordering::SeqCst)
            || lock(&watch.volume).as_ref().is_some_and(|v| v.is_stopped())
    };
    loop {
        let next = Instant::now() + period;
        while !ended() && Instant::now() < next {
            thread::sleep(Duration::from_millis(20));
        }
        if ended() {
            return;
        }
        if !inner.resign.load(Ordering::SeqCst) && inner.stop.load(Ordering::SeqCst) {
            return; // abandoned: let the lease expire
        }
        let asked = Instant::now();
        match inner.coord.keep_alive_ttl(leadership) {
            Ok(ttl) => {
                let mut until = lock(&watch.until);
                *until = (*until).max(asked + ttl);
                if let Some(v) = lock(&watch.volume).as_ref() {
                    v.extend_lease(*until);
                }
            }
            Err(e) => {
                let why = format!("the lease could not be refreshed: {e}");
                *lock(&watch.lost) = Some(why.clone());
                if let Some(v) = lock(&watch.volume).as_ref() {
                    v.stop(why);
                }
                return;
            }
        }
    }
}
