//! Restore planning: walk the snapshot's trees into directories to create, files to
//! write (with every blob's offsets), links and special entries, and group the blobs
//! by pack in offset order so each pack is read once, front to back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::id::{BlobId, PackId};
use crate::index::IndexedRepository;
use crate::pack::PackBlob;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk;

use super::file::FileItem;
use super::{RestoreOptions, RestoreReport};

/// One blob to write, and where: (file number, offset in the file).
pub(super) type BlobUses = (PackBlob, Vec<(usize, u64)>);

/// Every path is relative to the target folder (see `beneath.rs`).
pub(super) struct Plan {
    pub dirs: Vec<(PathBuf, Node)>,
    pub files: Vec<FileItem>,
    /// Hard links to create: (path, number of the file they link to).
    pub links: Vec<(PathBuf, usize)>,
    pub others: Vec<(PathBuf, Node)>,
    pub packs: BTreeMap<PackId, Vec<BlobUses>>,
    pub bytes: u64,
}

/// Where a snapshot path lands, relative to the target folder.
fn target_path(snap_path: &Path) -> PathBuf {
    snap_path
        .strip_prefix("/")
        .unwrap_or(snap_path)
        .to_path_buf()
}

pub(super) fn make_plan(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Plan {
    let mut plan = Plan {
        dirs: vec![],
        files: vec![],
        links: vec![],
        others: vec![],
        packs: BTreeMap::new(),
        bytes: 0,
    };
    let mut first_link: HashMap<(u64, u64), usize> = HashMap::new();
    let mut blob_uses: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
    let mut errors = vec![];
    walk::walk(
        repo,
        &snap.tree,
        &mut |path, node| {
            let (inside, descend) = walk::included(path, &opts.include);
            let dest = target_path(path);
            match node.kind {
                NodeKind::Dir if descend => plan.dirs.push((dest, node.clone())),
                NodeKind::File if inside => {
                    if node.links > 1 {
                        if let Some(&first) = first_link.get(&(node.device, node.inode)) {
                            plan.links.push((dest, first));
                            return false;
                        }
                        first_link.insert((node.device, node.inode), plan.files.len());
                    }
                    let idx = plan.files.len();
                    let mut offset = 0u64;
                    for b in &node.content {
                        blob_uses.entry(*b).or_default().push((idx, offset));
                        offset += repo
                            .index
                            .get(b)
                            .map(|l| l.blob.raw_length as u64)
                            .unwrap_or(0);
                    }
                    plan.bytes += node.size;
                    plan.files.push(FileItem::new(dest, idx, node.clone()));
                }
                NodeKind::Dir | NodeKind::File => {}
                _ if inside => plan.others.push((dest, node.clone())),
                _ => {}
            }
            descend
        },
        &mut |path, e| errors.push((path.display().to_string(), e.to_string())),
    );
    for (path, e) in errors {
        report
            .failed
            .push((path, format!("the folder's listing could not be read: {e}")));
    }
    for (id, uses) in blob_uses {
        match repo.index.get(&id) {
            Some(loc) => {
                for (f, _) in &uses {
                    plan.files[*f].remaining.fetch_add(1, Ordering::Relaxed);
                }
                plan.packs
                    .entry(loc.pack)
                    .or_default()
                    .push((loc.blob, uses));
            }
            None => {
                for (f, _) in uses {
                    plan.files[f].fail(format!(
                        "blob {} is missing from the repository index",
                        id.short()
                    ));
                }
            }
        }
    }
    for blobs in plan.packs.values_mut() {
        blobs.sort_by_key(|(b, _)| b.offset);
    }
    for f in &plan.files {
        f.direct_write_if_single(f.remaining.load(Ordering::Relaxed));
    }
    plan
}

/// Split a pack's blobs (sorted by offset) into read ranges: (start, end, blobs).
pub(super) fn read_ranges(blobs: &[BlobUses]) -> Vec<(u64, u64, &[BlobUses])> {
    crate::pack::read_ranges(blobs, |(b, _)| b)
}
