//! Check: is everything every snapshot needs present and intact?
//!
//! Works on a [`ReadView`]: the snapshots were listed before the index was loaded.
//! Structure (always): index files decrypt; every indexed pack exists and its header
//! (read with two ranged reads, or from the whole pack with `read_data`) lists exactly
//! the blobs the index says, where it says;
//! every snapshot decrypts; every tree of every snapshot loads; every blob a tree names
//! is indexed. With `read_data`: every pack is read whole, re-hashed against its name,
//! and every blob decrypted, decompressed and re-hashed against its id (in parallel).
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
    // With `read_data` every pack is read whole below and its header compared there.
    if !read_data {
        let headers = crate::parallel::map(repo.pack_readers(), &present, |(pack, size)| {
            repo.repo.read_pack_header(pack, *size)
        });
        for ((pack, _), header) in present.iter().zip(headers) {
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
    if read_data {
        read_all_packs(repo, &present, &expected, &mut r, &progress);
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
