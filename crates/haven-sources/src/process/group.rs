//! Process groups and deadlines. Every child Haven starts leads its own process group
//! (so a shell script's background jobs and a tool's helpers are in it too); the group
//! is killed as a whole when the tool's deadline passes ([`Watchdog`]), when its handle
//! is dropped unfinished, and — through [`kill_all`] — when Haven itself is stopped by a
//! signal (the binary's handler calls it: a child in its own group does not get the
//! terminal's Ctrl-C).
//!
//! Live groups are kept in a process-wide set; a group leaves it right after its leader
//! has been waited for. A pgid is only signalled while it is in that set. The one window
//! left is between the reaping of the leader and its removal from the set: a group whose
//! other members still run keeps its pgid reserved, so only a group emptied in that
//! instant whose number a new process group takes at once could be hit.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register(pgid: u32) {
    live().insert(pgid as i32);
}

pub(crate) fn unregister(pgid: u32) {
    live().remove(&(pgid as i32));
}

/// SIGKILL every member of the group `pgid`, if it is one Haven started and still tracks.
pub(crate) fn kill(pgid: u32) {
    let set = live();
    kill_locked(&set, pgid as i32);
}

fn kill_locked(set: &BTreeSet<i32>, pgid: i32) {
    // Never 0 or 1 (kill(0) and kill(-1) mean "my group" and "everyone").
    if pgid > 1 && set.contains(&pgid) {
        if let Some(pid) = Pid::from_raw(pgid) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

/// Kill every process group Haven started and has not finished with: for a signal
/// handler that is about to end Haven.
pub fn kill_all() {
    let set = live();
    for pgid in set.iter() {
        kill_locked(&set, *pgid);
    }
}

#[derive(Debug, Default)]
struct WatchState {
    cancelled: bool,
    fired: bool,
}

/// Kills a process group when a deadline passes, unless cancelled first.
#[derive(Debug)]
pub(crate) struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(pgid: u32, timeout: Duration) -> Watchdog {
        let state: Arc<(Mutex<WatchState>, Condvar)> = Arc::default();
        let deadline = Instant::now() + timeout;
        let watched = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("haven-deadline-{pgid}"))
            .spawn(move || {
                let (lock, cv) = &*watched;
                let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if s.cancelled {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        s.fired = true;
                        kill(pgid);
                        return;
                    }
                    s = cv
                        .wait_timeout(s, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
            .ok();
        Watchdog { state, thread }
    }

    /// Stop watching; whether the deadline had passed (and the group was killed).
    pub fn cancel(&mut self) -> bool {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).cancelled = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock.lock().unwrap_or_else(|e| e.into_inner()).fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel();
    }
}
