//! Check: is everything every snapshot needs present and intact?
//!
//! Works on a [`ReadView`]: the snapshots were listed before the index was loaded.
//! Structure (always): index files decrypt; every indexed pack exists and its header
//! (read with two ranged reads, or from the whole pack with `read_data`) lists exactly
//! the blobs the index says, where it says;
//! every snapshot decrypts; every tree of every snapshot loads; every blob a tree names
//! is indexed. With `read_data`: every pack is read whole, re-hashed against its name,
//! and every blob decrypted, decompressed and re-hashed against its id (in parallel).
//! With a [`Subset`] (`--read-data-subset`) only the packs of that slice are read whole,
//! the others' headers as without `read_data`.
//! Findings are problems (the repository is damaged) or notes (harmless leftovers, such
//! as packs of an interrupted backup, that `prune` removes).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use haven_store::FileKind;

use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::index::IndexedRepository;
use crate::pack::{self, PackBlob};
use crate::progress::Progress;
use crate::read::ReadView;
use crate::walk;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Packs read whole and verified.
    pub packs_read: u64,
    /// With a subset: the ids of the packs read (a user can see which slice was checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packs_read_ids: Vec<PackId>,
}

/// Packs with their stored sizes.
type PackSizes = Vec<(PackId, u64)>;

/// Which packs `check` reads whole (besides the structure checks it always does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    Subset(Subset),
}

/// A slice of the packs: `n/t` (slice n of t, every pack in exactly one slice, so t runs
/// with n = 1..t read everything once) or a random `p%` of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    Slice { n: u64, of: u64 },
    Percent(f64),
}

impl Subset {
    /// Parse `n/t` (1 <= n <= t) or `p%` (0 < p <= 100).
    pub fn parse(text: &str) -> std::result::Result<Subset, String> {
        let bad = || {
            format!("--read-data-subset {text:?}: give n/t (slice n of t, e.g. 1/10) or a percentage (e.g. 5%)")
        };
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Percent(p));
        }
        let (n, t) = text.split_once('/').ok_or_else(bad)?;
        let (n, of): (u64, u64) = (
            n.trim().parse().map_err(|_| bad())?,
            t.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || of == 0 || n > of {
            return Err(bad());
        }
        Ok(Subset::Slice { n, of })
    }

    /// Whether `pack` is in the slice. Pack ids are keyed hashes: their first eight
    /// bytes spread evenly over the slices.
    fn holds(&self, pack: &PackId) -> bool {
        match *self {
            Subset::Slice { n, of } => {
                let x = u64::from_le_bytes(pack.0[..8].try_into().expect("8 bytes"));
                x % of == n - 1
            }
            Subset::Percent(p) => {
                let x = u64::from_le_bytes(crate::crypto::random_bytes::<8>());
                (x as f64 / u64::MAX as f64) * 100.0 < p
            }
        }
    }
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn compare_header(
    pack: &PackId,
    header: &[PackBlob],
    expected: &[PackBlob],
    problems: &mut Vec<String>,
) {
    let listed: HashMap<BlobId, &PackBlob> = header.iter().map(|b| (b.id, b)).collect();
    for e in expected {
        match listed.get(&e.id) {
            Some(h) if *h == e => {}
            Some(_) => problems.push(format!(
                "pack {}: blob {} is listed at a different place than the index says",
                pack.short(),
                e.id.short()
            )),
            None => problems.push(format!(
                "pack {}: does not hold blob {} that the index places there",
                pack.short(),
                e.id.short()
            )),
        }
    }
}

/// Check the snapshots of `view` against its index (listed before it was loaded, so a
/// backup committing meanwhile is never reported as damage).
pub fn check(view: &ReadView, read_data: bool, progress: Arc<Progress>) -> Result<CheckReport> {
    let data = if read_data {
        ReadData::All
    } else {
        ReadData::None
    };
    check_data(view, data, progress)
}

/// [`check`], reading whole the packs `data` selects.
pub fn check_data(view: &ReadView, data: ReadData, progress: Arc<Progress>) -> Result<CheckReport> {
    let repo = &view.repo.without_disk_cache();
    let mut r = CheckReport::default();
    for (name, why) in &repo.index.damaged {
        r.problems
            .push(format!("index file {}: {why}", &name[..8.min(name.len())]));
    }
    let stored = repo.repo.stored_packs()?;
    let expected = repo.index.by_pack();
    crate::debug::phase("check: reading pack headers");
    let mut present = vec![];
    for (pack, blobs) in &expected {
        match stored.get(pack) {
            Some(&size) => present.push((*pack, size)),
            None => r.problems.push(format!(
                "pack {} is missing: {} blobs the index lists there are lost",
                pack.short(),
                blobs.len()
            )),
        }
    }
    // Packs read whole below have their header compared there.
    let (to_read, headers_only): (PackSizes, PackSizes) =
        present.iter().partition(|(pack, _)| match data {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset(s) => s.holds(pack),
        });
    {
        let headers = crate::parallel::map(repo.pack_readers(), &headers_only, |(pack, size)| {
            repo.repo.read_pack_header(pack, *size)
        });
        for ((pack, _), header) in headers_only.iter().zip(headers) {
            match header {
                Ok(header) => compare_header(pack, &header, &expected[pack], &mut r.problems),
                Err(e) => r.problems.push(format!("pack {}: {e}", pack.short())),
            }
        }
    }
    for pack in stored.keys().filter(|p| !expected.contains_key(p)) {
        r.notes.push(format!("pack {} is in no index (left by an interrupted backup or prune); `haven prune` removes it", pack.short()));
    }
    r.packs = present.len() as u64;

    crate::debug::phase("check: snapshots and trees");
    let (snapshots, damaged) = (&view.snapshots, &view.damaged);
    for (name, why) in damaged {
        r.problems
            .push(format!("snapshot {}: {why}", &name[..8.min(name.len())]));
    }
    r.snapshots = snapshots.len() as u64;
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    for s in snapshots {
        check_snapshot_trees(
            repo,
            &s.id.short(),
            &s.snapshot.tree,
            &mut seen_trees,
            &mut r,
        );
    }
    r.trees = seen_trees.len() as u64;

    for (name, info) in crate::lock::list_locks(&repo.repo)? {
        let short: String = name.chars().take(8).collect();
        match info {
            None => r.notes.push(format!(
                "lock {short} is unreadable (damaged, or from a newer haven) and blocks every other command; if no other haven is running, `haven unlock` removes it"
            )),
            Some(i) if i.is_stale() => r.notes.push(format!(
                "lock {short} is stale; `haven unlock` removes it"
            )),
            Some(_) => {}
        }
    }
    crate::debug::phase("check: structure done");
    if !to_read.is_empty() {
        read_all_packs(repo, &to_read, &expected, &mut r, &progress);
        if matches!(data, ReadData::Subset(_)) {
            r.packs_read_ids = to_read.iter().map(|(p, _)| *p).collect();
        }
    }
    Ok(r)
}

fn check_snapshot_trees(
    repo: &IndexedRepository,
    snap: &str,
    root: &BlobId,
    seen: &mut HashSet<BlobId>,
    r: &mut CheckReport,
) {
    let problems = std::cell::RefCell::new(vec![]);
    walk::walk_distinct(
        repo,
        root,
        seen,
        &mut |path, node| {
            for b in node.content.iter().filter(|b| !repo.index.contains(b)) {
                problems.borrow_mut().push(format!(
                    "snapshot {snap}: {}: data blob {} is not in the index",
                    path.display(),
                    b.short()
                ));
            }
        },
        &mut |path, e| {
            problems
                .borrow_mut()
                .push(format!("snapshot {snap}: tree of {}: {e}", path.display()))
        },
    );
    r.problems.extend(problems.into_inner());
}

fn read_all_packs(
    repo: &IndexedRepository,
    packs: &[(PackId, u64)],
    expected: &HashMap<PackId, Vec<PackBlob>>,
    r: &mut CheckReport,
    progress: &Progress,
) {
    progress.add_total(packs.len() as u64, packs.iter().map(|(_, s)| s).sum());
    progress.totals_final.store(true, Ordering::Relaxed);
    let results = Mutex::new((vec![], 0u64, 0u64));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    // Several verifiers; one sequential reader for a local folder (cold parallel reads
    // are slower there), several for a remote store.
    let (tx, rx) = bounded::<(&PackId, u64, Result<Vec<u8>, String>)>(1);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, results) = (rx.clone(), &results);
            s.spawn(move || {
                for (pack, size, data) in rx {
                    let (problems, blobs) = verify_pack(
                        repo,
                        pack,
                        data,
                        expected.get(pack).map(|v| v.as_slice()).unwrap_or(&[]),
                    );
                    progress.add_done(1, size);
                    let mut g = results.lock().expect("results");
                    g.0.extend(problems);
                    g.1 += blobs;
                    g.2 += size;
                }
            });
        }
        for _ in 0..repo.pack_readers() {
            let (tx, next) = (tx.clone(), &next);
            s.spawn(move || {
                while let Some((pack, size)) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let data = repo
                        .repo
                        .backend
                        .read(FileKind::Pack, &pack.to_hex())
                        .map_err(|e| e.to_string());
                    if tx.send((pack, *size, data)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
    });
    let (problems, blobs, bytes) = results.into_inner().expect("results");
    r.problems.extend(problems);
    r.blobs_read = blobs;
    r.bytes_read = bytes;
    r.packs_read = packs.len() as u64;
}

/// Read one pack whole and verify everything in it; returns problems and blobs read.
fn verify_pack(
    repo: &IndexedRepository,
    pack: &PackId,
    data: Result<Vec<u8>, String>,
    expected: &[PackBlob],
) -> (Vec<String>, u64) {
    let mut problems = vec![];
    let mut data = match data {
        Ok(d) => d,
        Err(e) => return (vec![format!("pack {}: {e}", pack.short())], 0),
    };
    if repo.repo.key.id_of(&data) != pack.0 {
        problems.push(format!(
            "pack {}: its content does not match its name (changed or truncated bytes)",
            pack.short()
        ));
    }
    match pack::parse_pack(&repo.repo.key, &data) {
        Ok(header) => compare_header(pack, &header, expected, &mut problems),
        Err(e) => problems.push(format!("pack {}: {e}", pack.short())),
    }
    // The pack's hash and header were checked above: blobs can now be opened in place.
    let mut scratch = Vec::new();
    let mut n = 0;
    for b in expected {
        let (start, end) = (b.offset as usize, b.offset as usize + b.length as usize);
        let Some(sealed) = data.get_mut(start..end) else {
            problems.push(format!(
                "pack {}: blob {} lies beyond the end of the pack (truncated)",
                pack.short(),
                b.id.short()
            ));
            continue;
        };
        if let Err(e) = pack::open_blob_in_place(&repo.repo.key, b, sealed, &mut scratch) {
            problems.push(format!("pack {}: blob {}: {e}", pack.short(), b.id.short()));
        }
        n += 1;
    }
    (problems, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_pack_exactly_once_and_bad_subsets_are_refused() {
        let packs: Vec<PackId> = (0..500)
            .map(|_| PackId(crate::crypto::random_bytes()))
            .collect();
        let slices: Vec<Subset> = (1..=7).map(|n| Subset::Slice { n, of: 7 }).collect();
        for p in &packs {
            assert_eq!(slices.iter().filter(|s| s.holds(p)).count(), 1);
        }
        assert_eq!(Subset::parse("3/10"), Ok(Subset::Slice { n: 3, of: 10 }));
        assert_eq!(Subset::parse("2.5%"), Ok(Subset::Percent(2.5)));
        for bad in ["0/10", "11/10", "1/0", "x", "0%", "101%", "1/", "-5%"] {
            let e = Subset::parse(bad).unwrap_err();
            assert!(e.contains("n/t"), "{bad}: {e}");
        }
        let all = Subset::Percent(100.0);
        assert!(packs.iter().all(|p| all.holds(p)));
    }
}
