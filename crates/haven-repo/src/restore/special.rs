//! Special entries on restore: FIFOs are created anew (`mkfifo`), character and block
//! devices too (`mknod` with the recorded device number; the kernel allows that to
//! root only). A socket cannot be restored: its file is only the name a listening
//! process bound, and means nothing without that process; it is skipped, named in the
//! report, and the restore counts as incomplete.

use std::path::Path;

use rustix::fs::FileType;

use super::beneath::Target;

use crate::tree::{Node, NodeKind};

/// What became of one special entry.
pub(super) enum Outcome {
    /// Made; the extended attributes the target refused, as warnings.
    Created(Vec<String>),
    /// Cannot be recreated by design (sockets): the reason.
    Skipped(String),
    /// Creating it failed: the reason.
    Failed(String),
}

/// Create the FIFO or device `node` at `rel` below the target (an existing entry there
/// is replaced), then set its owner, mode and mtime without opening it.
pub(super) fn create(target: &Target, rel: &Path, node: &Node) -> Outcome {
    let kind =
        match node.kind {
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::CharDevice => FileType::CharacterDevice,
            NodeKind::BlockDevice => FileType::BlockDevice,
            NodeKind::Socket => return Outcome::Skipped(
                "sockets are not restored: a socket is recreated by the program that listens on it"
                    .into(),
            ),
            other => return Outcome::Failed(format!("{other:?} is not a special file")),
        };
    let dev = if kind == FileType::Fifo { 0 } else { node.rdev };
    match target.make_special(rel, kind, dev, node) {
        Ok(warnings) => Outcome::Created(warnings),
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (creating device nodes needs root)"
            } else {
                ""
            };
            Outcome::Failed(format!("creating the {:?} failed: {e}{hint}", node.kind))
        }
    }
}
