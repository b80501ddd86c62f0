//! The daemon's clock. Everything the scheduler decides depends on `now()`, and every
//! wait goes through the clock, so tests drive a [`ManualClock`] instead of waiting for
//! real time: advancing it wakes the scheduler at once.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// How long (in real time) to wait on a condition variable to reach `deadline` by
    /// this clock. Callers wake early when notified and re-check their state anyway.
    fn real_wait(&self, deadline: DateTime<Utc>) -> Duration;

    /// Sleep for `d` by this clock, returning early when `stop()` becomes true.
    fn sleep(&self, d: Duration, stop: &dyn Fn() -> bool);
}

/// Real time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn real_wait(&self, deadline: DateTime<Utc>) -> Duration {
        let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        left.min(Duration::from_secs(60))
    }

    fn sleep(&self, d: Duration, stop: &dyn Fn() -> bool) {
        let end = std::time::Instant::now() + d;
        while !stop() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }
}

/// A clock that only moves when told to (tests). Waits poll it every few milliseconds of
/// real time, so advancing it takes effect at once.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().expect("clock") = t;
    }

    pub fn advance(&self, d: chrono::Duration) {
        *self.now.lock().expect("clock") += d;
    }
}

const POLL: Duration = Duration::from_millis(5);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock")
    }

    fn real_wait(&self, _deadline: DateTime<Utc>) -> Duration {
        POLL
    }

    fn sleep(&self, d: Duration, stop: &dyn Fn() -> bool) {
        let end = self.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        while !stop() && self.now() < end {
            std::thread::sleep(POLL);
        }
    }
}
