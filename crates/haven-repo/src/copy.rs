//! Copying snapshots between repositories.
//!
//! Every repository has its own master key, so blob ids differ between repositories:
//! copying walks each source snapshot's trees, reads every data blob's plaintext from
//! the source and saves it through a [`BlobSaver`] of the destination (which re-hashes
//! it with the destination's key, dedups against what the destination holds, compresses
//! and seals it). Trees are rebuilt with the destination's blob ids. A map from source
//! blob id to destination blob id, kept for one run, makes shared content (and whole
//! unchanged subtrees) cost one read.
//!
//! Order of durability per snapshot, as for a backup: packs, index
//! ([`BlobSaver::finish`]), then the snapshot, written under the source's id with the
//! source's metadata. A snapshot whose id exists in the destination is skipped, so a
//! second run copies nothing, and a killed run is resumed by running it again (the
//! caller adopts the packs it left first, and the saver dedups against them).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use haven_store::FileKind;

use crate::error::{RepoError, Result};
use crate::id::{BlobId, SnapshotId};
use crate::index::IndexedRepository;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::saver::BlobSaver;
use crate::snapshot::SnapshotEntry;
use crate::tree::Tree;

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyResult {
    /// Snapshots written to the destination (same ids as in the source).
    pub copied: Vec<SnapshotId>,
    /// Snapshots the destination had already.
    pub skipped: Vec<SnapshotId>,
    pub blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
}

/// Ids of every snapshot file in `repo`, readable or not.
pub fn snapshot_ids(repo: &IndexedRepository) -> Result<HashSet<SnapshotId>> {
    Ok(repo
        .repo
        .backend()
        .list(FileKind::Snapshot)?
        .iter()
        .filter_map(|i| SnapshotId::from_hex(&i.name))
        .collect())
}

/// Copy `snapshots` (oldest first) from `src` to `dst`. The caller holds shared locks
/// on both and has adopted unindexed packs of `dst`.
pub fn copy_snapshots(
    src: &IndexedRepository,
    dst: &IndexedRepository,
    snapshots: &[SnapshotEntry],
    progress: Arc<Progress>,
) -> Result<CopyResult> {
    let mut present = snapshot_ids(dst)?;
    let mut result = CopyResult::default();
    let todo: Vec<&SnapshotEntry> = snapshots
        .iter()
        .filter(|s| {
            let have = present.contains(&s.id);
            if have {
                result.skipped.push(s.id);
            }
            !have
        })
        .collect();
    for s in &todo {
        progress.add_total(s.snapshot.summary.files, s.snapshot.summary.bytes_total);
    }
    progress.totals_final.store(true, Ordering::Relaxed);
    let mut map: HashMap<BlobId, BlobId> = HashMap::new();
    // The saver's index is the one loaded at the start; blobs this run stored are in
    // `map`, so later snapshots never store them again.
    for entry in todo {
        crate::debug::phase("copy: snapshot started");
        let saver = BlobSaver::new(dst.clone());
        let mut walker = Walker {
            src,
            saver: &saver,
            map: &mut map,
            progress: &progress,
        };
        let tree = walker.tree(&entry.snapshot.tree);
        let stats = saver.finish();
        let tree = tree?;
        let stats = stats?;
        result.blobs_added += stats.blobs_added.load(Ordering::Relaxed);
        result.bytes_added_raw += stats.bytes_added_raw.load(Ordering::Relaxed);
        result.bytes_added_stored += stats.bytes_added_stored.load(Ordering::Relaxed);
        let mut snapshot = entry.snapshot.clone();
        snapshot.tree = tree;
        snapshot.parent = snapshot.parent.filter(|p| present.contains(p));
        crate::lock::ensure_held()?;
        dst.repo.save_snapshot_as(&entry.id, &snapshot)?;
        present.insert(entry.id);
        result.copied.push(entry.id);
    }
    Ok(result)
}

struct Walker<'a> {
    src: &'a IndexedRepository,
    saver: &'a BlobSaver,
    map: &'a mut HashMap<BlobId, BlobId>,
    progress: &'a Progress,
}

impl Walker<'_> {
    /// Copy a tree and everything below it; returns its id in the destination.
    fn tree(&mut self, id: &BlobId) -> Result<BlobId> {
        if let Some(d) = self.map.get(id) {
            return Ok(*d);
        }
        let plain = self.src.read_blob(id)?;
        let mut tree = Tree::decode(&plain)
            .map_err(|e| RepoError::corrupt(format!("tree {}", id.short()), e))?;
        drop(plain);
        for node in &mut tree.nodes {
            for blob in &mut node.content {
                *blob = self.data(blob)?;
            }
            if let Some(sub) = &mut node.subtree {
                *sub = self.tree(sub)?;
            }
            if !node.content.is_empty() || node.size > 0 {
                self.progress.add_done(1, node.size);
            }
        }
        let new = self.saver.save(BlobKind::Tree, tree.encode())?;
        self.map.insert(*id, new);
        Ok(new)
    }

    fn data(&mut self, id: &BlobId) -> Result<BlobId> {
        if let Some(d) = self.map.get(id) {
            return Ok(*d);
        }
        let plain = self.src.read_blob(id)?;
        let new = self.saver.save(BlobKind::Data, plain)?;
        self.map.insert(*id, new);
        Ok(new)
    }
}
