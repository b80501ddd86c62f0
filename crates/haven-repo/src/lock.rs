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
//! minutes while its holder runs. An unreadable lock file conflicts with everything. Taking a lock: write ours, then list the others; on
//! conflict, remove ours and wait or fail. A lock is stale (ignored, and removed by
//! prune and `unlock`) when it was not refreshed for 30 minutes, or when it names a
//! process of this host that no longer exists (a `kill -9`).

use std::sync::{Arc, Condvar, Mutex};
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

/// Every lock this process holds, by the time its file was last written. A lock whose
/// refreshes have failed for so long that others may judge it stale is lost: the holder
/// must stop before it commits anything ([`ensure_held`]).
static HELD: Mutex<Vec<Arc<Mutex<Instant>>>> = Mutex::new(Vec::new());

/// Fail if any lock this process holds may have gone stale for others (its refreshes
/// failed for longer than `STALE_AFTER - REFRESH_INTERVAL`). Called before writing a
/// snapshot and before prune deletes anything.
pub fn ensure_held() -> Result<()> {
    let limit = STALE_AFTER - REFRESH_INTERVAL;
    for fresh in HELD.lock().expect("held locks").iter() {
        let age = fresh.lock().expect("lock freshness").elapsed();
        if age > limit {
            return Err(RepoError::Locked(format!(
                "the repository lock could not be refreshed for {} s, so another haven may have taken over; stopping without committing. Check access to the repository and run the command again",
                age.as_secs()
            )));
        }
    }
    Ok(())
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
    /// When the lock file was last written; shared with [`HELD`].
    fresh: Arc<Mutex<Instant>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepoLock")
    }
}

fn write_lock(repo: &Repository, info: &LockInfo) -> Result<String> {
    let name = FileId::random().to_hex();
    repo.save_object_named(
        FileKind::Lock,
        &name,
        &codec::encode(ObjectKind::Lock, info),
    )?;
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
        let info = LockInfo {
            exclusive,
            host: crate::host::hostname(),
            pid: std::process::id(),
            user: crate::host::username(),
            purpose: purpose.to_string(),
            time_unix: chrono::Utc::now().timestamp(),
        };
        let started = Instant::now();
        loop {
            let name = write_lock(repo, &info)?;
            let conflict = find_conflict(list_locks(repo)?, &name, exclusive);
            let Some(holder) = conflict else {
                return Ok(Self::start_refresher(repo.clone(), name, info));
            };
            repo.backend.remove(FileKind::Lock, &name)?;
            if started.elapsed() >= wait {
                return Err(holder.into_error(repo.location()));
            }
            let jitter = u64::from(crate::crypto::random_bytes::<1>()[0]) * 4;
            std::thread::sleep(Duration::from_millis(200 + jitter));
        }
    }

    fn start_refresher(repo: Repository, name: String, info: LockInfo) -> RepoLock {
        let name = Arc::new(Mutex::new(name));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let fresh = Arc::new(Mutex::new(Instant::now()));
        HELD.lock().expect("held locks").push(fresh.clone());
        let (r, n, s, f) = (repo.clone(), name.clone(), stop.clone(), fresh.clone());
        let refresher = std::thread::spawn(move || {
            let (m, cv) = &*s;
            let mut stopped = m.lock().expect("lock stop flag");
            loop {
                let (guard, timeout) = cv
                    .wait_timeout_while(stopped, REFRESH_INTERVAL, |stop| !*stop)
                    .expect("lock stop flag");
                stopped = guard;
                if *stopped {
                    return;
                }
                if timeout.timed_out() {
                    let fresh = LockInfo {
                        time_unix: chrono::Utc::now().timestamp(),
                        ..info.clone()
                    };
                    let written = Instant::now();
                    if let Ok(new_name) = write_lock(&r, &fresh) {
                        *f.lock().expect("lock freshness") = written;
                        let old = std::mem::replace(&mut *n.lock().expect("lock name"), new_name);
                        let _ = r.backend.remove(FileKind::Lock, &old);
                    }
                }
            }
        });
        RepoLock {
            repo,
            name,
            fresh,
            stop,
            refresher: Some(refresher),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        HELD.lock()
            .expect("held locks")
            .retain(|f| !Arc::ptr_eq(f, &self.fresh));
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
