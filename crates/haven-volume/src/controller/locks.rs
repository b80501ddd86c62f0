//! Region locks: a write holds the regions it touches from its fan-out to its last reply,
//! and a resync copy holds the regions it copies from the source's read to the checksum
//! comparison. So two writes to one region never reach the replicas in different orders
//! (which would leave in-sync replicas different), and no write interleaves with the copy
//! of its region (which could lose it on the resyncing replica).
//!
//! Locked ranges are few (one per request in flight, one per copy batch), so a list of
//! ranges under one mutex serves; acquisition is all-or-nothing, so there is no lock order.

use std::ops::Range;
use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct RegionLocks {
    held: Mutex<Vec<(u64, Range<u64>)>>,
    freed: Condvar,
    next: std::sync::atomic::AtomicU64,
}

/// Regions held until dropped.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    locks: &'a RegionLocks,
    id: u64,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

impl RegionLocks {
    /// Waits until no other holder has a region of `regions`, then holds them all. An
    /// empty range holds nothing.
    pub fn lock(&self, regions: Range<u64>) -> Held<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.iter().any(|(_, r)| overlaps(r, &regions)) {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.push((id, regions));
        Held { locks: self, id }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(id, _)| *id != self.id);
        drop(held);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn overlapping_ranges_wait_disjoint_ones_do_not() {
        let locks = RegionLocks::default();
        let a = locks.lock(0..4);
        let b = locks.lock(4..8);
        let _empty = locks.lock(2..2);
        let got = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _c = locks.lock(3..5);
                got.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!got.load(Ordering::SeqCst), "3..5 overlaps two held ranges");
            drop(a);
            drop(b);
        });
        assert!(got.load(Ordering::SeqCst));
    }
}
