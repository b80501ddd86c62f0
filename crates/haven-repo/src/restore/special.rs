//! Special entries on restore: FIFOs are created anew (`mkfifo`), character and block
//! devices too (`mknod` with the recorded device number; the kernel allows that to
//! root only). A socket cannot be restored: its file is only the name a listening
//! process bound, and means nothing without that process; it is skipped, named in the
//! report, and the restore counts as incomplete.

use std::path::Path;

use rustix::fs::{FileType, Mode, CWD};

use crate::tree::{Node, NodeKind};

/// What became of one special entry.
pub(super) enum Outcome {
    Created,
    /// Cannot be recreated by design (sockets): the reason.
    Skipped(String),
    /// Creating it failed: the reason.
    Failed(String),
}

/// Create the FIFO or device `node` at `path` (an existing entry there is replaced),
/// then set its owner, mode and mtime.
pub(super) fn create(path: &Path, node: &Node) -> Outcome {
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
    let _ = std::fs::remove_file(path);
    let mode = Mode::from_raw_mode(node.mode & 0o7777);
    let dev = if kind == FileType::Fifo { 0 } else { node.rdev };
    if let Err(e) = rustix::fs::mknodat(CWD, path, kind, mode, dev) {
        let e = std::io::Error::from(e);
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (creating device nodes needs root)"
        } else {
            ""
        };
        return Outcome::Failed(format!("creating the {:?} failed: {e}{hint}", node.kind));
    }
    match set_metadata(path, node) {
        Ok(()) => Outcome::Created,
        Err(e) => Outcome::Failed(format!("setting metadata failed: {e}")),
    }
}

/// Owner, mode and mtime by path, never opening the entry: opening a FIFO blocks
/// until a writer comes (`filetime::set_file_times` opens it).
fn set_metadata(path: &Path, node: &Node) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if crate::host::current_uid() == 0 {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))?;
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    // utimensat(AT_SYMLINK_NOFOLLOW): sets the entry's own times without opening it.
    filetime::set_symlink_file_times(path, mtime, mtime)
}
