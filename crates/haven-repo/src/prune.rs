//! Prune: delete what no snapshot references. Runs under the exclusive lock.
//!
//! Steps, in the order that keeps every crash safe:
//! 1. Mark: walk every snapshot's trees into the set of used blobs. Any unreadable
//!    snapshot, tree or index file aborts prune: deleting on partial knowledge could
//!    delete data a snapshot needs.
//! 2. Choose one copy of every used blob that the index places in several packs: the
//!    first, by pack id, that opens and verifies (the others are unused copies). With
//!    no copy verifying, every copy is kept.
//! 3. Plan per pack: fully unused -> delete; partly unused beyond the threshold ->
//!    repack its used blobs; packs no index file names (interrupted backups, junk) ->
//!    delete. A pack some index names is never taken for unindexed.
//! 4. Write repacked packs (sealed blobs are copied as they are: no re-encryption).
//! 5. Write the new index files, then remove the old ones.
//! 6. Delete the packs no index lists any more.
//!
//! A crash after 4 leaves extra packs; after 5, duplicate index entries (harmless);
//! after 6 started, packs no index lists: garbage that the next prune removes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use haven_store::FileKind;

use crate::error::{RepoError, Result};
use crate::id::{BlobId, PackId};
use crate::index::{IndexPack, IndexedRepository};
use crate::pack::{PackBlob, PackBuilder};
use crate::progress::Progress;
use crate::walk;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub dry_run: bool,
    /// Repack a pack when more than this fraction of its bytes is unused.
    pub repack_threshold: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_threshold: 0.10,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub blobs_used: u64,
    pub blobs_removed: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_unindexed_deleted: u64,
    pub packs_written: u64,
    pub bytes_freed: u64,
    pub index_files_replaced: u64,
}

fn used_blobs(repo: &IndexedRepository) -> Result<HashSet<BlobId>> {
    let (snaps, damaged) = repo.repo.snapshots()?;
    if let Some((name, why)) = damaged.first() {
        return Err(RepoError::InvalidInput(format!(
            "cannot prune safely: snapshot {} is unreadable ({why}); run `haven check`, and `haven forget {}` if it is beyond repair",
            &name[..8],
            &name[..8]
        )));
    }
    let mut used = HashSet::new();
    let mut trees = HashSet::new();
    let mut error = None;
    for s in &snaps {
        walk::walk_distinct(
            repo,
            &s.snapshot.tree,
            &mut trees,
            &mut |_, node| used.extend(node.content.iter().copied()),
            &mut |path, e| {
                error.get_or_insert(format!(
                    "snapshot {}: tree of {}: {e}",
                    s.id.short(),
                    path.display()
                ));
            },
        );
    }
    used.extend(trees);
    if let Some(e) = error {
        return Err(RepoError::InvalidInput(format!(
            "cannot prune safely: {e}; run `haven check`"
        )));
    }
    Ok(used)
}

pub fn prune(
    repo: &IndexedRepository,
    opts: &PruneOptions,
    _progress: Arc<Progress>,
) -> Result<PruneReport> {
    if let Some((name, why)) = repo.index.damaged.first() {
        return Err(RepoError::InvalidInput(format!(
            "cannot prune safely: index file {} is unreadable ({why}); run `haven repair index` first",
            &name[..8]
        )));
    }
    let used = used_blobs(repo)?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        blobs_used: used.len() as u64,
        ..Default::default()
    };
    for id in &used {
        if !repo.index.contains(id) {
            return Err(RepoError::InvalidInput(format!(
                "cannot prune safely: blob {} that a snapshot uses is not in the index; run `haven check`",
                id.short()
            )));
        }
    }
    let stored = repo.repo.stored_packs()?;
    for id in &used {
        if !repo.index.copies(id).any(|l| stored.contains_key(&l.pack)) {
            let loc = repo.index.get(id).expect("checked above");
            return Err(RepoError::InvalidInput(format!(
                "cannot prune safely: blob {} that a snapshot uses is indexed in pack {}, which is missing; run `haven check`, then `haven repair index`",
                id.short(),
                loc.pack.short()
            )));
        }
    }
    let keepers = choose_copies(repo, &used, &stored);
    let is_kept = |pack: &PackId, b: &PackBlob| {
        used.contains(&b.id)
            && keepers
                .get(&b.id)
                .is_none_or(|k| k.is_none_or(|k| k == *pack))
    };
    let named: HashSet<PackId> = repo.index.pack_ids().iter().copied().collect();
    let mut by_pack = repo.index.by_pack();
    let mut keep_index: Vec<IndexPack> = vec![];
    let mut to_repack: Vec<(PackId, Vec<PackBlob>)> = vec![];
    let mut to_delete: Vec<PackId> = vec![];
    for (&pack, &size) in &stored {
        if !named.contains(&pack) {
            report.packs_unindexed_deleted += 1;
            report.bytes_freed += size;
            to_delete.push(pack);
            continue;
        }
        let blobs = by_pack.remove(&pack).unwrap_or_default();
        let (kept, dropped): (Vec<PackBlob>, Vec<PackBlob>) =
            blobs.into_iter().partition(|b| is_kept(&pack, b));
        report.blobs_removed += dropped.len() as u64;
        let used_bytes: u64 = kept.iter().map(|b| b.length as u64).sum();
        let unused_fraction = 1.0 - used_bytes as f64 / size.max(1) as f64;
        if kept.is_empty() {
            report.packs_deleted += 1;
            report.bytes_freed += size;
            to_delete.push(pack);
        } else if !dropped.is_empty() && unused_fraction > opts.repack_threshold {
            report.packs_repacked += 1;
            report.bytes_freed += size - used_bytes;
            to_repack.push((pack, kept));
        } else {
            keep_index.push(IndexPack {
                id: pack,
                blobs: kept,
            });
        }
    }
    // Copies in packs that are gone are dropped: every used blob has a stored copy
    // (checked above).
    report.blobs_removed += by_pack.values().map(|v| v.len() as u64).sum::<u64>();
    report.index_files_replaced = repo.index.files.len() as u64;
    if opts.dry_run {
        return Ok(report);
    }
    // Under the exclusive lock no other haven runs: leftovers of killed ones can go.
    crate::lock::remove_locks(&repo.repo, false)?;
    repo.repo
        .backend
        .remove_stale_temporaries(std::time::Duration::from_secs(600))?;

    let repacked = repack(repo, &to_repack)?;
    report.packs_written = repacked.len() as u64;
    keep_index.extend(repacked);
    // Nothing is removed by a holder whose lock may have gone stale for others.
    crate::lock::ensure_held(&repo.repo)?;
    let old_index = repo.index.files.clone();
    let new_index = repo.repo.write_index(keep_index)?;
    for id in old_index.iter().filter(|id| !new_index.contains(id)) {
        repo.repo.backend.remove(FileKind::Index, &id.to_hex())?;
    }
    for pack in to_delete.iter().chain(to_repack.iter().map(|(p, _)| p)) {
        repo.repo.backend.remove(FileKind::Pack, &pack.to_hex())?;
        if let Some(disk) = repo.trees.disk() {
            disk.remove(&pack.to_hex());
        }
    }
    Ok(report)
}

/// For every used blob indexed in several stored packs, the copy to keep: the first by
/// pack id that opens and verifies, or `None` (keep every copy) when none does. A copy
/// is dropped only when another is proven good, so a planted or damaged pack that an
/// index names can never cost the authentic one.
fn choose_copies(
    repo: &IndexedRepository,
    used: &HashSet<BlobId>,
    stored: &HashMap<PackId, u64>,
) -> HashMap<BlobId, Option<PackId>> {
    let mut keepers = HashMap::new();
    for id in repo.index.duplicated() {
        if !used.contains(&id) {
            continue;
        }
        // `copies` lists each pack once, by pack id.
        let copies: Vec<_> = repo
            .index
            .copies(&id)
            .filter(|l| stored.contains_key(&l.pack))
            .collect();
        if copies.len() < 2 {
            continue;
        }
        let good = copies
            .iter()
            .find(|l| {
                let sealed = repo.repo.backend.read_range(
                    FileKind::Pack,
                    &l.pack.to_hex(),
                    l.blob.offset as u64,
                    l.blob.length as u64,
                );
                sealed.is_ok_and(|s| crate::pack::open_blob(&repo.repo.key, &l.blob, &s).is_ok())
            })
            .map(|l| l.pack);
        keepers.insert(id, good);
    }
    keepers
}

/// Copy the used blobs of `packs` into new packs; returns their index entries.
fn repack(repo: &IndexedRepository, packs: &[(PackId, Vec<PackBlob>)]) -> Result<Vec<IndexPack>> {
    let target = repo.repo.config.pack_size as usize;
    let mut written = vec![];
    let mut builders: HashMap<u8, PackBuilder> = HashMap::new();
    let flush = |b: PackBuilder, written: &mut Vec<IndexPack>| -> Result<()> {
        let (id, bytes, blobs) = b.finish(&repo.repo.key);
        repo.repo
            .backend
            .write(FileKind::Pack, &id.to_hex(), &bytes)?;
        written.push(IndexPack { id, blobs });
        Ok(())
    };
    for (pack, blobs) in packs {
        for b in blobs {
            let sealed = repo.repo.backend.read_range(
                FileKind::Pack,
                &pack.to_hex(),
                b.offset as u64,
                b.length as u64,
            )?;
            // Verify before copying, so prune never propagates damage silently.
            crate::pack::open_blob(&repo.repo.key, b, &sealed).map_err(|e| {
                RepoError::corrupt(
                    format!("blob {} in pack {}", b.id.short(), pack.short()),
                    format!("{e}; prune stopped before deleting anything"),
                )
            })?;
            let builder = builders
                .entry(b.kind.byte())
                .or_insert_with(|| PackBuilder::new(target));
            builder.add_sealed(b.kind, b.id, b.raw_length, b.compressed, &sealed);
            if builder.len() >= target {
                let full = builders.remove(&b.kind.byte()).expect("present");
                flush(full, &mut written)?;
            }
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            flush(b, &mut written)?;
        }
    }
    Ok(written)
}
