//! Repository locks.
//!
//! | operation                         | lock      | conflicts with |
//! |-----------------------------------|-----------|----------------|
//! | backup, key add/remove/passwd     | shared    | exclusive      |
//! | restore, ls, snapshots, check     | shared    | exclusive      |
//! | forget (without prune)            | shared    | exclusive      |
//! | prune                             | exclusive | everything     |
//!
//! Prune is the only operation that deletes data a running operation might use, so it
//! alone is exclusive. A lock is an encrypted file in `locks/`, refreshed every five
//! minutes while its holder runs. An unreadable lock file conflicts with everything.
//! Taking a lock: write ours (stamped with the time of that write), then list the
//! others; on conflict, remove ours and wait or fail. A lock is stale (ignored, and
//! removed by prune and `unlock`) when it was not refreshed for 30 minutes, or when it
//! names a process of this host that no longer exists (a `kill -9`).
//!
//! Main types: [`RepoLock`] (a held lock; its refresher thread; dropping releases it)
//! and its `LockState`, which knows when the lock file was last written and whether
//! the lock was lost. Loss is sticky. The commit points ([`ensure_held`]) ask only the
//! locks taken through the same opened [`Repository`] (`HeldLocks`).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use haven_store::FileKind;

use crate::codec::{self, ObjectKind};
use crate::error::{RepoError, Result};
use crate::id::FileId;
use crate::repository::Repository;

pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
pub const STALE_AFTER: Duration = Duration::from_secs(1800);

/// How often a holder refreshes its lock, and after how long without a refresh others
/// judge it stale. Production uses [`LockTiming::default`]; tests shorten both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTiming {
    pub refresh_interval: Duration,
    pub stale_after: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            refresh_interval: REFRESH_INTERVAL,
            stale_after: STALE_AFTER,
        }
    }
}

impl LockTiming {
    /// How long a holder may go without a successful refresh before it must assume
    /// another haven already judges its lock stale.
    fn hold_limit(&self) -> Duration {
        self.stale_after.saturating_sub(self.refresh_interval)
    }
}

/// What one held lock knows about itself: when its file was last written, and whether
/// it was lost. Loss is sticky: once others may have judged the lock stale (or its file
/// was removed by `unlock` or a prune elsewhere), a later successful refresh does not
/// undo what another haven may have done meanwhile.
#[derive(Debug)]
struct LockState {
    location: String,
    timing: LockTiming,
    inner: Mutex<Freshness>,
}

#[derive(Debug)]
struct Freshness {
    written: Instant,
    lost: Option<String>,
}

impl LockState {
    fn check(&self) -> Result<()> {
        let mut f = self.inner.lock().expect("lock freshness");
        let age = f.written.elapsed();
        if f.lost.is_none() && age > self.timing.hold_limit() {
            f.lost = Some(format!(
                "it could not be refreshed for {} s, so another haven may have judged it stale",
                age.as_secs()
            ));
        }
        match &f.lost {
            None => Ok(()),
            Some(why) => Err(RepoError::LockLost {
                location: self.location.clone(),
                reason: why.clone(),
            }),
        }
    }

    fn lose(&self, why: String) {
        let mut f = self.inner.lock().expect("lock freshness");
        if f.lost.is_none() {
            f.lost = Some(why);
        }
    }

    fn refreshed(&self, at: Instant) {
        self.inner.lock().expect("lock freshness").written = at;
    }
}

/// The locks taken through one opened [`Repository`] and its clones (an
/// [`crate::IndexedRepository`] made from it shares them). Commit points ask these, and
/// only these, whether they are still held: a lock lost by one job of the daemon does
/// not stop another job, whose repository was opened separately.
#[derive(Debug, Default)]
pub(crate) struct HeldLocks(Mutex<Vec<Weak<LockState>>>);

impl HeldLocks {
    fn register(&self, state: &Arc<LockState>) {
        let mut held = self.0.lock().expect("held locks");
        held.retain(|w| w.strong_count() > 0);
        held.push(Arc::downgrade(state));
    }

    fn ensure_held(&self) -> Result<()> {
        let held: Vec<Arc<LockState>> = self
            .0
            .lock()
            .expect("held locks")
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        held.iter().try_for_each(|s| s.check())
    }
}

/// Fail if a lock taken through `repo` (or a clone of it) was lost: its refreshes
/// failed for longer than `stale_after - refresh_interval` at some point, or its file
/// was removed by someone else. Called before writing a snapshot and before prune
/// deletes anything.
pub fn ensure_held(repo: &Repository) -> Result<()> {
    repo.held_locks.ensure_held()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub user: String,
    pub purpose: String,
    pub time_unix: i64,
}

impl LockInfo {
    pub fn is_stale(&self) -> bool {
        // Saturating: a damaged time far in the past must not overflow (found by `fuzz/`).
        let age = chrono::Utc::now()
            .timestamp()
            .saturating_sub(self.time_unix);
        age > STALE_AFTER.as_secs() as i64
            || (self.host != "unknown"
                && self.host == crate::host::hostname()
                && !crate::host::process_alive(self.pid))
    }

    fn describe(&self) -> String {
        let since = chrono::DateTime::from_timestamp(self.time_unix, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        format!(
            "{} (pid {} on host {}, lock refreshed {})",
            self.purpose, self.pid, self.host, since
        )
    }
}

/// A held lock; dropping it stops the refresher and removes the lock file.
pub struct RepoLock {
    repo: Repository,
    name: Arc<Mutex<String>>,
    state: Arc<LockState>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepoLock")
    }
}

/// Write a lock file under a new name. A write that failed may still have landed on
/// some mirror sites: it is removed again (best effort), so a refused command leaves no
/// lock behind to block others.
fn write_lock(repo: &Repository, info: &LockInfo) -> Result<String> {
    let name = FileId::random().to_hex();
    let written = repo.save_object_named(
        FileKind::Lock,
        &name,
        &codec::encode(ObjectKind::Lock, info),
    );
    if let Err(e) = written {
        let _ = repo.backend.remove(FileKind::Lock, &name);
        return Err(e);
    }
    Ok(name)
}

/// Every lock file with its content; unreadable ones are reported as `None`.
pub fn list_locks(repo: &Repository) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = vec![];
    for f in repo.backend.list(FileKind::Lock)? {
        match repo.load_object::<LockInfo>(FileKind::Lock, ObjectKind::Lock, &f.name) {
            Ok(info) => out.push((f.name, Some(info))),
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(_) => out.push((f.name, None)),
        }
    }
    Ok(out)
}

/// Remove stale locks (or all locks with `all`); returns how many.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<usize> {
    let mut n = 0;
    for (name, info) in list_locks(repo)? {
        if all || info.as_ref().is_none_or(|i| i.is_stale()) {
            repo.backend.remove(FileKind::Lock, &name)?;
            n += 1;
        }
    }
    Ok(n)
}

/// What keeps a lock from being taken.
enum Conflict {
    /// A live lock that conflicts with ours: its description.
    Holder(String),
    /// Only an unreadable lock file (damaged, or written by a newer haven): its name.
    Unreadable(String),
}

impl Conflict {
    fn into_error(self, location: String) -> RepoError {
        match self {
            Conflict::Holder(holder) => RepoError::Locked(format!(
                "the repository at {location} is in use by {holder}; wait for it to finish, or retry with --lock-wait 10m (if that process is gone, `haven unlock` removes its lock)"
            )),
            Conflict::Unreadable(name) => RepoError::UnreadableLock {
                location,
                name: name.chars().take(8).collect(),
            },
        }
    }
}

/// The lock that keeps us (`ours`, just written) from holding: a readable one is named
/// first. An unreadable lock conflicts with everything: ignoring it could let a prune
/// run beside a backup.
fn find_conflict(
    locks: Vec<(String, Option<LockInfo>)>,
    ours: &str,
    exclusive: bool,
) -> Option<Conflict> {
    let mut unreadable = None;
    for (other, info) in locks {
        match info {
            _ if other == ours => {}
            None => {
                unreadable.get_or_insert(other);
            }
            Some(i) if !i.is_stale() && (exclusive || i.exclusive) => {
                return Some(Conflict::Holder(i.describe()))
            }
            Some(_) => {}
        }
    }
    unreadable.map(Conflict::Unreadable)
}

impl RepoLock {
    /// Take a lock, waiting up to `wait` for conflicting holders to finish.
    pub fn acquire(
        repo: &Repository,
        exclusive: bool,
        purpose: &str,
        wait: Duration,
    ) -> Result<RepoLock> {
        Self::acquire_with(repo, exclusive, purpose, wait, LockTiming::default())
    }

    /// [`RepoLock::acquire`] with a chosen refresh interval and staleness limit.
    pub fn acquire_with(
        repo: &Repository,
        exclusive: bool,
        purpose: &str,
        wait: Duration,
        timing: LockTiming,
    ) -> Result<RepoLock> {
        let stamp = || LockInfo {
            exclusive,
            host: crate::host::hostname(),
            pid: std::process::id(),
            user: crate::host::username(),
            purpose: purpose.to_string(),
            time_unix: chrono::Utc::now().timestamp(),
        };
        let started = Instant::now();
        loop {
            // Stamped at every attempt: after a long wait the lock must be as fresh as
            // its file, or others would judge it stale the moment it is written.
            let info = stamp();
            let written = Instant::now();
            let name = write_lock(repo, &info)?;
            let conflict = find_conflict(list_locks(repo)?, &name, exclusive);
            let Some(holder) = conflict else {
                return Ok(Self::start_refresher(
                    repo.clone(),
                    name,
                    info,
                    written,
                    timing,
                ));
            };
            repo.backend.remove(FileKind::Lock, &name)?;
            if started.elapsed() >= wait {
                return Err(holder.into_error(repo.location()));
            }
            let jitter = u64::from(crate::crypto::random_bytes::<1>()[0]) * 4;
            std::thread::sleep(Duration::from_millis(200 + jitter));
        }
    }

    /// Whether this lock still holds: `Err` once it was lost (see [`ensure_held`]).
    pub fn ensure_held(&self) -> Result<()> {
        self.state.check()
    }

    fn start_refresher(
        repo: Repository,
        name: String,
        info: LockInfo,
        written: Instant,
        timing: LockTiming,
    ) -> RepoLock {
        let name = Arc::new(Mutex::new(name));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let state = Arc::new(LockState {
            location: repo.location(),
            timing,
            inner: Mutex::new(Freshness {
                written,
                lost: None,
            }),
        });
        repo.held_locks.register(&state);
        let (r, n, s, st) = (repo.clone(), name.clone(), stop.clone(), state.clone());
        let refresher = std::thread::spawn(move || {
            let (m, cv) = &*s;
            let mut stopped = m.lock().expect("lock stop flag");
            loop {
                let (guard, timeout) = cv
                    .wait_timeout_while(stopped, timing.refresh_interval, |stop| !*stop)
                    .expect("lock stop flag");
                stopped = guard;
                if *stopped {
                    return;
                }
                if timeout.timed_out() && !refresh(&r, &n, &info, &st) {
                    // Lost for good: write no new lock file, the commit points refuse.
                    return;
                }
            }
        });
        RepoLock {
            repo,
            name,
            state,
            stop,
            refresher: Some(refresher),
        }
    }
}

/// One refresh: make sure our file is still there, write a new one with a fresh time,
/// remove the old one. Returns false once the lock is lost.
fn refresh(repo: &Repository, name: &Mutex<String>, info: &LockInfo, state: &LockState) -> bool {
    let old = name.lock().expect("lock name").clone();
    // Any other read error (the store unreachable) is left to the write below.
    if matches!(repo.backend.read(FileKind::Lock, &old), Err(e) if e.is_not_found()) {
        state.lose(format!(
            "its lock file {} was removed by someone else (`haven unlock`, or a prune that judged it stale)",
            &old[..old.len().min(8)]
        ));
        return false;
    }
    if state.check().is_err() {
        return false;
    }
    let fresh = LockInfo {
        time_unix: chrono::Utc::now().timestamp(),
        ..info.clone()
    };
    let written = Instant::now();
    if let Ok(new_name) = write_lock(repo, &fresh) {
        state.refreshed(written);
        *name.lock().expect("lock name") = new_name;
        let _ = repo.backend.remove(FileKind::Lock, &old);
    }
    state.check().is_ok()
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.stop;
            *m.lock().expect("lock stop flag") = true;
            cv.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.name.lock().expect("lock name").clone();
        let _ = self.repo.backend.remove(FileKind::Lock, &name);
    }
}
