//! A timeline for finding where time goes: with `HAVEN_DEBUG=1` in the environment,
//! [`phase`] prints the elapsed time since the process started to stderr. Never prints
//! secrets: callers pass fixed phase names and counts only.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> &'static (bool, Instant) {
    static START: OnceLock<(bool, Instant)> = OnceLock::new();
    START.get_or_init(|| {
        (
            std::env::var_os("HAVEN_DEBUG").is_some_and(|v| v != "0"),
            Instant::now(),
        )
    })
}

/// Record that a phase was reached.
pub fn phase(what: &str) {
    let (on, t0) = start();
    if *on {
        eprintln!("[haven {:8.3}s] {what}", t0.elapsed().as_secs_f64());
    }
}
