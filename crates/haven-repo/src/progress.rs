//! Progress counters shared between a running verb and whoever displays them.
//! The engine only increments atomics; the CLI polls them for its progress bar.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    /// Files (or packs, for check) finished.
    pub items_done: AtomicU64,
    /// Bytes finished.
    pub bytes_done: AtomicU64,
    /// Total items and bytes, when known (a scan runs ahead of the work).
    pub items_total: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Set once the totals are final.
    pub totals_final: AtomicBool,
}

impl Progress {
    pub fn add_done(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_total(&self, items: u64, bytes: u64) {
        self.items_total.fetch_add(items, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.items_done.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
            self.items_total.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        )
    }
}
