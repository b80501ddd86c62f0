//! `backup --dry-run`: what a backup of these paths would read, without reading file
//! contents or writing anything. The same walk as a backup (the excludes asked before a
//! folder is read, the parent snapshot's unchanged files recognised by their metadata),
//! reported per file as `new` or `changed`, with totals.
//!
//! What it cannot say without reading: how much of a changed file the repository already
//! holds (deduplication works on chunks of the contents).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use super::{find_parent, resolve_existing, unchanged, BackupOptions, Exclude};
use crate::error::Result;
use crate::index::IndexedRepository;
use crate::tree::{Node, NodeKind, Tree};

/// What a backup would do.
#[derive(Debug, Default, Serialize)]
pub struct DryRun {
    /// The snapshot unchanged files would be taken from, if any.
    pub parent: Option<String>,
    pub files: u64,
    pub dirs: u64,
    /// Bytes of all files the snapshot would hold.
    pub bytes: u64,
    pub unchanged_files: u64,
    /// Files that would be read: (path, size, `new` or `changed`).
    pub read: Vec<(String, u64, &'static str)>,
    /// Bytes of the files that would be read.
    pub bytes_to_read: u64,
    /// Entries that could not be looked at.
    pub warnings: Vec<String>,
}

/// Walk `opts.paths` as a backup would.
pub fn dry_run(repo: &IndexedRepository, opts: &BackupOptions) -> Result<DryRun> {
    let resolved = resolve_existing(&opts.paths)?;
    let mut listed: Vec<String> = resolved.iter().map(|p| p.display().to_string()).collect();
    listed.sort();
    let host = opts.host.clone().unwrap_or_else(crate::host::hostname);
    let mut report = DryRun::default();
    let parent = find_parent(repo, opts, &host, &listed)?;
    let root = match &parent {
        Some((id, s)) => {
            report.parent = Some(id.short());
            crate::walk::load_tree(repo, &s.tree).ok()
        }
        None => None,
    };
    for path in &resolved {
        let node = root.as_ref().and_then(|r| node_at(repo, r, path));
        walk(
            repo,
            path,
            node.as_ref(),
            opts.exclude.as_ref(),
            &mut report,
        );
    }
    report.read.sort();
    Ok(report)
}

/// The parent snapshot's node for absolute `path`.
fn node_at(repo: &IndexedRepository, root: &Tree, path: &Path) -> Option<Node> {
    let mut tree = root.clone();
    let mut node = None;
    for part in path.components().skip(1) {
        let n = tree.find(part.as_os_str().as_bytes())?.clone();
        if let Some(sub) = n.subtree {
            tree = crate::walk::load_tree(repo, &sub).ok()?;
        }
        node = Some(n);
    }
    node
}

fn walk(
    repo: &IndexedRepository,
    path: &Path,
    parent: Option<&Node>,
    exclude: Option<&Exclude>,
    report: &mut DryRun,
) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return report.warnings.push(format!("{}: {e}", path.display())),
    };
    if exclude.is_some_and(|x| (x.0)(path, &meta)) {
        return;
    }
    let node = Node::from_metadata(Vec::new(), &meta);
    match node.kind {
        NodeKind::Dir => {
            report.dirs += 1;
            let subtree = parent
                .and_then(|p| p.subtree)
                .and_then(|id| crate::walk::load_tree(repo, &id).ok());
            let names = match super::read_dir_sorted(path) {
                Ok(n) => n,
                Err(e) => return report.warnings.push(format!("{}: {e}", path.display())),
            };
            for name in names {
                let child = subtree.as_ref().and_then(|t| t.find(name.as_bytes()));
                walk(repo, &path.join(&name), child, exclude, report);
            }
        }
        NodeKind::File => {
            report.files += 1;
            report.bytes += node.size;
            match parent {
                Some(p) if unchanged(p, &node) => report.unchanged_files += 1,
                other => {
                    report.bytes_to_read += node.size;
                    report.read.push((
                        path.display().to_string(),
                        node.size,
                        if other.is_some() { "changed" } else { "new" },
                    ));
                }
            }
        }
        _ => {}
    }
}
