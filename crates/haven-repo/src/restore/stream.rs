//! Restore of one file to a stream (`restore --stdout`, a component's dump or base
//! backup): blobs are read, decrypted, decompressed and verified ahead by [`READERS`]
//! threads, reader `k` taking blobs `k, k + READERS, ...` into its own bounded channel,
//! and the writer takes them from the channels in turn, so they come out in order;
//! memory stays bounded (`READERS` x `AHEAD` blobs) whatever the file's size.

use std::io::Write;
use std::path::{Path, PathBuf};

use crossbeam_channel::bounded;

use crate::error::{RepoError, Result};
use crate::index::IndexedRepository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk;

/// Threads reading blobs ahead of the writer.
const READERS: usize = 3;
/// Blobs each reader may hold ready.
const AHEAD: usize = 2;

/// Write one file of a snapshot to `out`: the only file of a `--stdin` snapshot, or
/// the file at `path`.
pub fn restore_to_writer(
    repo: &IndexedRepository,
    snap: &Snapshot,
    path: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut found: Vec<(PathBuf, Node)> = vec![];
    walk::walk(
        repo,
        &snap.tree,
        &mut |p, n| {
            if n.kind == NodeKind::File && path.is_none_or(|want| want == p) {
                found.push((p.to_path_buf(), n.clone()));
            }
            true
        },
        &mut |_, _| {},
    );
    let (fpath, node) = match found.len() {
        1 => found.pop().expect("one"),
        0 => {
            return Err(RepoError::InvalidInput(
                "no such file in the snapshot; see `haven ls`".into(),
            ))
        }
        n => {
            return Err(RepoError::InvalidInput(format!(
                "the snapshot holds {n} files; name one with --include PATH"
            )))
        }
    };
    let readers = READERS.min(node.content.len()).max(1);
    let mut written = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let mut channels = Vec::with_capacity(readers);
        for k in 0..readers {
            let (tx, rx) = bounded::<Result<Vec<u8>>>(AHEAD);
            channels.push(rx);
            let content = &node.content;
            s.spawn(move || {
                for id in content.iter().skip(k).step_by(readers) {
                    let r = repo.read_blob(id);
                    let stop = r.is_err();
                    if tx.send(r).is_err() || stop {
                        return;
                    }
                }
            });
        }
        // Dropping the receivers on an early return ends the readers (their sends fail).
        for i in 0..node.content.len() {
            let Ok(r) = channels[i % readers].recv() else {
                return Err(RepoError::InvalidInput(format!(
                    "{}: a reader ended early; the output is incomplete",
                    fpath.display()
                )));
            };
            let data = r.map_err(|e| {
                RepoError::InvalidInput(format!(
                    "{}: {e}; the output is incomplete",
                    fpath.display()
                ))
            })?;
            out.write_all(&data)
                .map_err(|e| RepoError::io("standard output", "writing", e))?;
            written += data.len() as u64;
        }
        Ok(())
    })?;
    out.flush()
        .map_err(|e| RepoError::io("standard output", "writing", e))?;
    Ok(written)
}
