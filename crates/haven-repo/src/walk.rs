//! Depth-first walks over snapshot trees, shared by ls, restore, check, prune and copy.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{RepoError, Result};
use crate::id::BlobId;
use crate::index::IndexedRepository;
use crate::tree::{Node, NodeKind, Tree};

/// Load and decode one tree blob.
pub fn load_tree(repo: &IndexedRepository, id: &BlobId) -> Result<Tree> {
    let data = repo.read_blob(id)?;
    Tree::decode(&data).map_err(|e| RepoError::corrupt(format!("tree {}", id.short()), e))
}

/// Visit every node below `root` in path order; `visit` gets the node's path (starting
/// with `/`) and returns whether to descend into a directory. A tree that cannot be
/// loaded is passed to `on_error` and skipped.
pub fn walk(
    repo: &IndexedRepository,
    root: &BlobId,
    visit: &mut dyn FnMut(&Path, &Node) -> bool,
    on_error: &mut dyn FnMut(&Path, RepoError),
) {
    walk_inner(repo, root, Path::new("/"), visit, on_error)
}

fn walk_inner(
    repo: &IndexedRepository,
    tree_id: &BlobId,
    at: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> bool,
    on_error: &mut dyn FnMut(&Path, RepoError),
) {
    let tree = match load_tree(repo, tree_id) {
        Ok(t) => t,
        Err(e) => return on_error(at, e),
    };
    for node in &tree.nodes {
        let path = at.join(std::ffi::OsStr::from_bytes_compat(&node.name));
        let descend = visit(&path, node);
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                walk_inner(repo, sub, &path, visit, on_error);
            }
        }
    }
}

/// Visit every file node reachable from `root`, reading each distinct tree once across
/// all calls that share `seen` (identical folders of many snapshots are read once).
/// `seen` ends up holding every tree id reached.
pub fn walk_distinct(
    repo: &IndexedRepository,
    root: &BlobId,
    seen: &mut HashSet<BlobId>,
    on_file: &mut dyn FnMut(&Path, &Node),
    on_error: &mut dyn FnMut(&Path, RepoError),
) {
    if !seen.insert(*root) {
        return;
    }
    let mut visit = |path: &Path, node: &Node| match node.kind {
        NodeKind::File => {
            on_file(path, node);
            true
        }
        NodeKind::Dir => node.subtree.is_none_or(|t| seen.insert(t)),
        _ => true,
    };
    walk(repo, root, &mut visit, on_error)
}

/// Raw-bytes file names as `OsStr`.
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// Whether `path` is wanted by the include list: inside an included path, or an
/// ancestor of one (so the way down is walked). An empty list includes everything.
pub fn included(path: &Path, includes: &[PathBuf]) -> (bool, bool) {
    if includes.is_empty() {
        return (true, true);
    }
    let inside = includes.iter().any(|i| path.starts_with(i));
    let ancestor = includes.iter().any(|i| i.starts_with(path));
    (inside, inside || ancestor)
}
