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
//! Per snapshot: the trees are walked once to find the data blobs not copied yet, which
//! are then read a pack range at a time (several ranges at once from a remote source,
//! as in a restore) and saved ([`copy_data`]); then the trees are rebuilt with the
//! destination's ids ([`Walker`]). A blob at a time, a copy between two regions would
//! pay one round trip per blob.
//!
//! Order of durability per snapshot, as for a backup: packs, index
//! ([`BlobSaver::finish`]), then the snapshot, written under the source's id with the
//! source's metadata. A snapshot whose id exists in the destination is skipped, so a
//! second run copies nothing, and a killed run is resumed by running it again (the
//! caller adopts the packs it left first, and the saver dedups against them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use haven_store::FileKind;

use crate::error::{RepoError, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{BlobLocation, IndexedRepository};
use crate::pack::{BlobKind, PackBlob};
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
        let tree = copy_data(src, &saver, &entry.snapshot.tree, &mut map).and_then(|_| {
            Walker {
                src,
                saver: &saver,
                map: &mut map,
                progress: &progress,
            }
            .tree(&entry.snapshot.tree)
        });
        let stats = saver.finish();
        let tree = tree?;
        let stats = stats?;
        result.blobs_added += stats.blobs_added.load(Ordering::Relaxed);
        result.bytes_added_raw += stats.bytes_added_raw.load(Ordering::Relaxed);
        result.bytes_added_stored += stats.bytes_added_stored.load(Ordering::Relaxed);
        let mut snapshot = entry.snapshot.clone();
        snapshot.tree = tree;
        snapshot.parent = snapshot.parent.filter(|p| present.contains(p));
        crate::lock::ensure_held(&dst.repo)?;
        dst.repo.save_snapshot_as(&entry.id, &snapshot)?;
        present.insert(entry.id);
        result.copied.push(entry.id);
    }
    Ok(result)
}

/// Save in the destination every data blob below `root` that `map` lacks, reading the
/// source a pack range at a time; adds them to `map`.
fn copy_data(
    src: &IndexedRepository,
    saver: &BlobSaver,
    root: &BlobId,
    map: &mut HashMap<BlobId, BlobId>,
) -> Result<()> {
    let mut wanted = HashSet::new();
    unmapped_data(src, root, map, &mut HashSet::new(), &mut wanted)?;
    let mut by_pack: BTreeMap<PackId, Vec<PackBlob>> = BTreeMap::new();
    for id in wanted {
        let loc = src.index.get(&id).ok_or_else(|| {
            RepoError::corrupt(
                format!("blob {}", id.short()),
                "it is not in the index (missing pack or index file)",
            )
        })?;
        by_pack.entry(loc.pack).or_default().push(loc.blob);
    }
    let mut ranges = vec![];
    for (pack, blobs) in &mut by_pack {
        blobs.sort_by_key(|b| b.offset);
        for (start, end, blobs) in crate::pack::read_ranges(blobs, |b| b) {
            ranges.push((*pack, start, end, blobs));
        }
    }
    let copied = crate::parallel::map(src.pack_readers(), &ranges, |(pack, start, end, blobs)| {
        copy_range(src, saver, pack, *start, *end, blobs)
    });
    for pairs in copied {
        map.extend(pairs?);
    }
    Ok(())
}

/// Data blobs below `tree` that `map` lacks (trees in `map` or `seen` are skipped).
fn unmapped_data(
    src: &IndexedRepository,
    tree: &BlobId,
    map: &HashMap<BlobId, BlobId>,
    seen: &mut HashSet<BlobId>,
    wanted: &mut HashSet<BlobId>,
) -> Result<()> {
    if map.contains_key(tree) || !seen.insert(*tree) {
        return Ok(());
    }
    for node in crate::walk::load_tree(src, tree)?.nodes {
        wanted.extend(node.content.iter().filter(|b| !map.contains_key(b)));
        if let Some(sub) = &node.subtree {
            unmapped_data(src, sub, map, seen, wanted)?;
        }
    }
    Ok(())
}

/// Read one range of a source pack and save its blobs; returns (source id, destination
/// id) pairs. A range that cannot be read whole is read blob by blob, so the error names
/// the blob.
fn copy_range(
    src: &IndexedRepository,
    saver: &BlobSaver,
    pack: &PackId,
    start: u64,
    end: u64,
    blobs: &[PackBlob],
) -> Result<Vec<(BlobId, BlobId)>> {
    let data = src
        .repo
        .backend()
        .read_range(FileKind::Pack, &pack.to_hex(), start, end - start);
    let mut pairs = Vec::with_capacity(blobs.len());
    for b in blobs {
        let loc = BlobLocation {
            pack: *pack,
            blob: *b,
        };
        let plain = match &data {
            Ok(d) => {
                let at = (b.offset as u64 - start) as usize;
                src.open_blob_at(&loc, &d[at..at + b.length as usize])
            }
            Err(_) => src.read_blob_at(&loc),
        };
        // Another indexed copy (FORMAT.md 13.1) may be intact where this one is not.
        let plain = match plain {
            Err(e) if src.index.copies(&b.id).nth(1).is_some() => {
                src.read_blob(&b.id).map_err(|_| e)?
            }
            p => p?,
        };
        pairs.push((b.id, saver.save(BlobKind::Data, plain)?));
    }
    Ok(pairs)
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
