//! Copying regions from a source replica to a target, verified by region checksums: the
//! one way data moves between replicas (takeover's reconcile, resync, rebuild).

use crate::region::{region_count, RegionMap, REGION_SIZE};
use crate::replica::{ReplicaClient, ReplicaError};
use crate::wire::WriteStamp;

/// Regions copied per read/write (4 MiB).
pub(super) const BATCH: u64 = 64;

/// Where a copy failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CopyError {
    #[error("reading the source: {0}")]
    Source(ReplicaError),
    #[error("writing the target: {0}")]
    Target(ReplicaError),
    #[error("region {region} differs after the copy (checksums compared)")]
    Mismatch { region: u64 },
}

impl CopyError {
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            CopyError::Source(ReplicaError::Fenced { .. })
                | CopyError::Target(ReplicaError::Fenced { .. })
        )
    }
}

/// What a copy write carries: never a seq above the settled mark, so a copy leaves no
/// unsettled region behind.
#[derive(Debug, Clone, Copy)]
pub(super) struct CopyStamp {
    pub epoch: u64,
    pub gen: u64,
    pub settled: u64,
}

/// The regions of `map`, as runs of consecutive regions of at most `max` each.
pub(super) fn runs(map: &RegionMap, max: u64) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = vec![];
    for region in map.iter() {
        match out.last_mut() {
            Some(run) if run.end == region && run.end - run.start < max => run.end += 1,
            _ => out.push(region..region + 1),
        }
    }
    out
}

/// Byte range of the regions `run` in a volume of `size` bytes.
pub(super) fn byte_range(run: &std::ops::Range<u64>, size: u64) -> (u64, u64) {
    let start = run.start * REGION_SIZE;
    let end = (run.end * REGION_SIZE).min(size);
    (start, end.saturating_sub(start))
}

pub(super) fn checksums(
    client: &mut ReplicaClient,
    epoch: u64,
    run: &std::ops::Range<u64>,
) -> Result<Vec<[u8; 32]>, ReplicaError> {
    client.region_checksums(epoch, run.start, (run.end - run.start) as u32)
}

/// Regions of `run` whose checksums differ between the two replicas.
pub(super) fn differing(
    source: &mut ReplicaClient,
    target: &mut ReplicaClient,
    epoch: u64,
    run: &std::ops::Range<u64>,
) -> Result<RegionMap, CopyError> {
    let a = checksums(source, epoch, run).map_err(CopyError::Source)?;
    let b = checksums(target, epoch, run).map_err(CopyError::Target)?;
    let mut map = RegionMap::new(run.end);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x != y {
            map.insert(run.start + i as u64);
        }
    }
    if a.len() != b.len() {
        for region in run.start + a.len().min(b.len()) as u64..run.end {
            map.insert(region);
        }
    }
    Ok(map)
}

/// Copies the regions `run` (at most [`BATCH`]) from `source` to `target`, then checks
/// that their checksums agree. The caller holds the regions' locks when writes go on.
pub(super) fn copy_run(
    source: &mut ReplicaClient,
    target: &mut ReplicaClient,
    stamp: CopyStamp,
    size: u64,
    run: &std::ops::Range<u64>,
) -> Result<(), CopyError> {
    let (offset, len) = byte_range(run, size);
    if len == 0 {
        return Ok(());
    }
    let data = source
        .read(stamp.epoch, offset, len as u32)
        .map_err(CopyError::Source)?;
    let copy = WriteStamp {
        epoch: stamp.epoch,
        gen: stamp.gen,
        seq: 0,
        settled: stamp.settled,
    };
    target
        .write(&copy, offset, &data, false)
        .map_err(CopyError::Target)?;
    let left = differing(source, target, stamp.epoch, run)?;
    let first = left.iter().next();
    match first {
        Some(region) => Err(CopyError::Mismatch { region }),
        None => Ok(()),
    }
}

/// Every region of a volume of `size` bytes.
pub(super) fn all_regions(size: u64) -> RegionMap {
    RegionMap::full(region_count(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_consecutive_and_capped() {
        let mut map = RegionMap::new(300);
        for r in [1, 2, 3, 7, 8, 100] {
            map.insert(r);
        }
        assert_eq!(runs(&map, 64), vec![1..4, 7..9, 100..101]);
        assert_eq!(runs(&map, 2), vec![1..3, 3..4, 7..9, 100..101]);
        assert_eq!(runs(&all_regions(3 * REGION_SIZE), 2), vec![0..2, 2..3]);
    }

    #[test]
    fn the_last_region_may_be_short() {
        let size = 2 * REGION_SIZE + 512;
        assert_eq!(byte_range(&(0..3), size), (0, size));
        assert_eq!(byte_range(&(2..3), size), (2 * REGION_SIZE, 512));
    }
}
