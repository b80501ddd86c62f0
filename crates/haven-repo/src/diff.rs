//! What changed between two snapshots, path by path (`haven diff`).
//!
//! The two root trees are compared name by name; a folder whose subtree id is the same
//! on both sides holds the same entries and is not descended into, so a diff of two
//! snapshots of a large, mostly unchanged tree loads only the trees on changed paths.
//! A file is `modified` when its content (the list of chunk ids) differs; `metadata`
//! when only its mode, owner, modification time or extended attributes do (reported when asked); a path
//! whose kind changed (a file became a folder) is `type`. Everything below an added or
//! removed folder is listed as added or removed.
//!
//! Main types: [`Diff`] (entries and totals), [`Change`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::id::BlobId;
use crate::index::IndexedRepository;
use crate::tree::{Node, NodeKind};
use crate::walk::load_tree;

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Modified,
    Metadata,
    Type,
}

impl Change {
    /// restic's one-letter mark.
    pub fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::Type => 'T',
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub path: String,
    pub change: Change,
    /// `file`, `dir`, `symlink`, ... (of the newer side when both exist).
    pub kind: String,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

/// The differences and their totals.
#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub entries: Vec<DiffEntry>,
    pub files_added: u64,
    pub files_removed: u64,
    pub files_modified: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

/// Compare the trees `before` and `after`; `metadata` also reports metadata-only changes.
pub fn diff(
    repo: &IndexedRepository,
    before: &BlobId,
    after: &BlobId,
    metadata: bool,
) -> Result<Diff> {
    let mut out = Diff::default();
    compare(repo, Some(before), Some(after), "", metadata, &mut out)?;
    Ok(out)
}

fn kind_name(k: NodeKind) -> String {
    format!("{k:?}").to_lowercase()
}

fn compare(
    repo: &IndexedRepository,
    before: Option<&BlobId>,
    after: Option<&BlobId>,
    at: &str,
    metadata: bool,
    out: &mut Diff,
) -> Result<()> {
    if before == after {
        return Ok(());
    }
    let load = |id: Option<&BlobId>| -> Result<BTreeMap<Vec<u8>, Node>> {
        Ok(match id {
            Some(id) => load_tree(repo, id)?
                .nodes
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            None => BTreeMap::new(),
        })
    };
    let (old, new) = (load(before)?, load(after)?);
    let mut names: Vec<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let path = format!("{at}/{}", String::from_utf8_lossy(name));
        match (old.get(name), new.get(name)) {
            (Some(a), None) => side(repo, a, &path, Change::Removed, out)?,
            (None, Some(b)) => side(repo, b, &path, Change::Added, out)?,
            (Some(a), Some(b)) if a.kind != b.kind => {
                out.entries
                    .push(entry(&path, Change::Type, Some(a), Some(b)));
                if a.kind == NodeKind::Dir {
                    compare(repo, a.subtree.as_ref(), None, &path, metadata, out)?;
                }
                if b.kind == NodeKind::Dir {
                    compare(repo, None, b.subtree.as_ref(), &path, metadata, out)?;
                }
            }
            (Some(a), Some(b)) => {
                let meta_differs = a.mode != b.mode
                    || a.uid != b.uid
                    || a.gid != b.gid
                    || a.mtime_ns != b.mtime_ns
                    || a.xattrs != b.xattrs;
                if a.kind == NodeKind::Dir {
                    if metadata && meta_differs {
                        out.entries
                            .push(entry(&path, Change::Metadata, Some(a), Some(b)));
                    }
                    compare(
                        repo,
                        a.subtree.as_ref(),
                        b.subtree.as_ref(),
                        &path,
                        metadata,
                        out,
                    )?;
                } else if a.content != b.content
                    || a.link_target != b.link_target
                    || a.size != b.size
                {
                    out.entries
                        .push(entry(&path, Change::Modified, Some(a), Some(b)));
                    if a.kind == NodeKind::File {
                        out.files_modified += 1;
                        out.bytes_added += b.size;
                        out.bytes_removed += a.size;
                    }
                } else if metadata && meta_differs {
                    out.entries
                        .push(entry(&path, Change::Metadata, Some(a), Some(b)));
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// A path on one side only, with everything below it.
fn side(
    repo: &IndexedRepository,
    n: &Node,
    path: &str,
    change: Change,
    out: &mut Diff,
) -> Result<()> {
    let (a, b) = if change == Change::Added {
        (None, Some(n))
    } else {
        (Some(n), None)
    };
    out.entries.push(entry(path, change, a, b));
    if n.kind == NodeKind::File {
        if change == Change::Added {
            out.files_added += 1;
            out.bytes_added += n.size;
        } else {
            out.files_removed += 1;
            out.bytes_removed += n.size;
        }
    }
    if let Some(sub) = &n.subtree {
        for child in load_tree(repo, sub)?.nodes {
            let child_path = format!("{path}/{}", String::from_utf8_lossy(&child.name));
            side(repo, &child, &child_path, change, out)?;
        }
    }
    Ok(())
}

fn entry(path: &str, change: Change, a: Option<&Node>, b: Option<&Node>) -> DiffEntry {
    DiffEntry {
        path: path.to_string(),
        change,
        kind: kind_name(b.or(a).map_or(NodeKind::File, |n| n.kind)),
        size_before: a.filter(|n| n.kind == NodeKind::File).map(|n| n.size),
        size_after: b.filter(|n| n.kind == NodeKind::File).map(|n| n.size),
    }
}
