//! Every path a restore touches, resolved below the target folder's handle without
//! following a symlink.
//!
//! The target folder itself is the user's choice and may be a symlink; below it, a
//! symlink that is not part of the snapshot (planted in the target, or left there by an
//! earlier restore) must never redirect a write outside. [`Target`] holds the target's
//! handle; every path is relative to it and opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (one syscall, as a plain `open` would be), or, where the kernel
//! lacks `openat2`, component by component with `O_NOFOLLOW`. Names are then created,
//! linked, renamed and removed relative to their parent folder's handle, opened that
//! way once and kept in a small cache (a file costs one `openat`, as a plain `open`
//! would; the path walk is paid once per folder).
//!
//! A symlink found at a folder's place is replaced by the folder (it is not part of the
//! snapshot, just as a file at a file's place is replaced); any other non-folder there
//! is an error.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::tree::Node;

/// Folders opened only to name things inside them.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIR_HANDLE: OFlags = OFlags::PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const DIR_HANDLE: OFlags = OFlags::RDONLY;

/// Cleared once the kernel answers that it has no `openat2`.
static OPENAT2: AtomicBool = AtomicBool::new(cfg!(any(target_os = "linux", target_os = "android")));

/// Folder handles kept at most (each is a file descriptor); the cache starts over when full.
const PARENTS_CACHED: usize = 256;

pub(super) struct Target {
    dir: OwnedFd,
    root: PathBuf,
    /// Handles of parent folders, by path relative to the target.
    parents: Mutex<HashMap<PathBuf, Arc<OwnedFd>>>,
}

impl Target {
    /// Create (if needed) and open the target folder; the target itself may be a symlink.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Target {
            dir,
            root: root.to_path_buf(),
            parents: Mutex::new(HashMap::new()),
        })
    }

    /// Where `rel` is, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Open `rel` below the target, following no symlink on the way or at the end.
    fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if OPENAT2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rustix::fs::openat2(&self.dir, rel, flags, mode, resolve) {
                Err(Errno::NOSYS) => OPENAT2.store(false, Ordering::Relaxed),
                other => return other.map_err(io::Error::from),
            }
        }
        self.open_walking(rel, flags, mode)
    }

    /// [`Self::open_at`] without `openat2`: one `openat(O_NOFOLLOW)` per component.
    fn open_walking(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let mut names = vec![];
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} leaves the target folder", rel.display()),
                    ))
                }
            }
        }
        let Some(last) = names.pop() else {
            return Ok(rustix::fs::openat(&self.dir, ".", flags, mode)?);
        };
        let mut at: Option<OwnedFd> = None;
        for name in names {
            let dir = at.as_ref().unwrap_or(&self.dir);
            let flags = DIR_HANDLE | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            at = Some(rustix::fs::openat(dir, name, flags, Mode::empty())?);
        }
        Ok(rustix::fs::openat(
            at.as_ref().unwrap_or(&self.dir),
            last,
            flags,
            mode,
        )?)
    }

    /// The handle of `rel`'s parent folder (cached), and `rel`'s last name.
    fn parent<'r>(&self, rel: &'r Path) -> io::Result<(Arc<OwnedFd>, &'r OsStr)> {
        let name = rel.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no entry", rel.display()),
            )
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        if let Some(dir) = self.parents.lock().expect("parents").get(parent) {
            return Ok((dir.clone(), name));
        }
        let dir = Arc::new(self.open_at(parent, DIR_HANDLE | OFlags::DIRECTORY, Mode::empty())?);
        let mut parents = self.parents.lock().expect("parents");
        if parents.len() >= PARENTS_CACHED {
            parents.clear();
        }
        parents.insert(parent.to_path_buf(), dir.clone());
        Ok((dir, name))
    }

    /// Make sure `rel` is a real folder: created when missing, a symlink in its place
    /// replaced. Its parent must already be one.
    pub fn make_dir(&self, rel: &Path) -> io::Result<()> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let (dir, name) = self.parent(rel)?;
        let mode = Mode::from_raw_mode(0o777);
        match rustix::fs::mkdirat(&*dir, name, mode) {
            Err(Errno::EXIST) => {}
            other => return Ok(other?),
        }
        let stat = rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => Ok(()),
            FileType::Symlink => {
                rustix::fs::unlinkat(&*dir, name, AtFlags::empty())?;
                Ok(rustix::fs::mkdirat(&*dir, name, mode)?)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something that is not a folder is in its place; move it away",
            )),
        }
    }

    /// Create `rel` as a new empty file. Never opens what is already there: an existing
    /// entry (a planted symlink included) is removed first.
    pub fn create_new(&self, rel: &Path) -> io::Result<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o666);
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::openat(&*dir, name, flags, mode) {
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(&*dir, name, AtFlags::empty())?;
                Ok(rustix::fs::openat(&*dir, name, flags, mode)?.into())
            }
            other => Ok(other?.into()),
        }
    }

    /// Open a file this restore created, for writing.
    pub fn open_write(&self, rel: &Path) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&*dir, name, flags, Mode::empty())?.into())
    }

    /// Open a folder, to set its metadata through the handle.
    pub fn open_dir(&self, rel: &Path) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        Ok(self.open_at(rel, flags, Mode::empty())?.into())
    }

    /// Remove the file `rel`.
    pub fn remove(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::unlinkat(&*dir, name, AtFlags::empty())?)
    }

    /// Rename `from` to `to`; both are in the same folder.
    pub fn rename_sibling(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (dir, from_name) = self.parent(from)?;
        let to_name = to.file_name().unwrap_or(to.as_os_str());
        Ok(rustix::fs::renameat(&*dir, from_name, &*dir, to_name)?)
    }

    /// Make `rel` a hard link to `src`, replacing whatever is at `rel`.
    pub fn hard_link(&self, src: &Path, rel: &Path) -> io::Result<()> {
        let (src_dir, src_name) = self.parent(src)?;
        let (dir, name) = self.parent(rel)?;
        let _ = rustix::fs::unlinkat(&*dir, name, AtFlags::empty());
        Ok(rustix::fs::linkat(
            &*src_dir,
            src_name,
            &*dir,
            name,
            AtFlags::empty(),
        )?)
    }

    /// Make `rel` a symlink to `to` with `node`'s owner, extended attributes and mtime,
    /// replacing whatever file is at `rel`. Returns the attributes refused, as warnings.
    pub fn symlink(&self, to: &OsStr, rel: &Path, node: &Node) -> io::Result<Vec<String>> {
        let (dir, name) = self.parent(rel)?;
        let _ = rustix::fs::unlinkat(&*dir, name, AtFlags::empty());
        rustix::fs::symlinkat(to, &*dir, name)?;
        set_entry_metadata(&dir, name, node, false)
    }

    /// Make `rel` a FIFO or device node (`mknod`) with `node`'s owner, mode and mtime,
    /// replacing whatever file is at `rel`. The entry is never opened: opening a FIFO
    /// blocks until a writer comes. Returns the attributes refused, as warnings.
    pub fn make_special(
        &self,
        rel: &Path,
        kind: FileType,
        dev: u64,
        node: &Node,
    ) -> io::Result<Vec<String>> {
        let (dir, name) = self.parent(rel)?;
        let _ = rustix::fs::unlinkat(&*dir, name, AtFlags::empty());
        let mode = Mode::from_raw_mode(node.mode & 0o7777);
        rustix::fs::mknodat(&*dir, name, kind, mode, dev)?;
        set_entry_metadata(&dir, name, node, true)
    }
}

/// Owner, extended attributes, mode (`with_mode`: not for symlinks, whose mode means
/// nothing) and mtime of the entry `name` in `dir`, set by name without opening it.
/// Owner first: `chown` clears set-id bits and file capabilities. Returns the
/// attributes refused, as warnings.
fn set_entry_metadata(
    dir: &OwnedFd,
    name: &OsStr,
    node: &Node,
    with_mode: bool,
) -> io::Result<Vec<String>> {
    if super::restores_owners() {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    let warnings = crate::xattr::apply_at(dir, name, &node.xattrs);
    if with_mode {
        // fchmodat cannot refuse a symlink on older kernels; the entry was made just now
        // in a folder opened without following any.
        let mode = Mode::from_raw_mode(node.mode & 0o7777);
        rustix::fs::chmodat(dir, name, mode, AtFlags::empty())?;
    }
    let mtime = Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels without `openat2` refuses symlinks and `..` as well.
    #[test]
    fn the_walking_fallback_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("planted")).unwrap();
        let t = Target::open(dir.path()).unwrap();
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let mode = Mode::from_raw_mode(0o600);
        assert!(t
            .open_walking(Path::new("planted/x"), create, mode)
            .is_err());
        assert!(t
            .open_walking(Path::new("real/../../x"), create, mode)
            .is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        t.open_walking(Path::new("real/x"), create, mode).unwrap();
        assert!(dir.path().join("real/x").is_file());
    }
}
