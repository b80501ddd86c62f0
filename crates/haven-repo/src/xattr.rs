//! Extended attributes of files: read at backup, set again at restore.
//!
//! [`read`] lists every attribute of an entry without following a symlink (user,
//! trusted, security and system namespaces alike: POSIX ACLs are the attributes
//! `system.posix_acl_access` and `system.posix_acl_default`, file capabilities are
//! `security.capability`), sorted by name so that equal entries encode to equal trees.
//! A file system without extended attributes yields none, not an error.
//!
//! [`apply_fd`] and [`apply_at`] set a node's attributes on a restored entry and return,
//! as warnings, each one the target refused, naming it and why (only root may set
//! `trusted.*` and most of `security.*`; some file systems take no attributes at all).
//! Restore sets them after the owner (a `chown` drops `security.capability`) and before
//! the mode (an access ACL and the group bits describe the same permissions).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::XattrFlags;

use crate::tree::Xattr;

/// The extended attributes of `path` (not followed if it is a symlink).
pub fn read(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match value(path, &name) {
            Ok(value) => out.push(Xattr { name, value }),
            // Removed between the listing and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn list(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(vec![]);
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            // An attribute was added since the size was asked: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn value(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let name = OsStr::from_bytes(name);
    loop {
        let size = rustix::fs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP) || e.raw_os_error() == Some(libc::ENOTSUP)
}

/// Set `xattrs` on the open entry `fd`; returns one warning per attribute refused.
pub fn apply_fd(fd: impl AsFd, xattrs: &[Xattr]) -> Vec<String> {
    let fd = fd.as_fd();
    apply_each(xattrs, |x| {
        rustix::fs::fsetxattr(
            fd,
            OsStr::from_bytes(&x.name),
            &x.value,
            XattrFlags::empty(),
        )
    })
}

/// Set `xattrs` on the entry `name` in the open directory `dir` without following it
/// (symlinks and special files, which restore never opens). The entry is named through
/// `/proc/self/fd`, so no path above `dir` is walked again.
pub fn apply_at(dir: impl AsFd, name: &OsStr, xattrs: &[Xattr]) -> Vec<String> {
    use std::os::fd::AsRawFd;
    if xattrs.is_empty() {
        return vec![];
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = OsStr::from_bytes(&path);
    apply_each(xattrs, |x| {
        rustix::fs::lsetxattr(
            path,
            OsStr::from_bytes(&x.name),
            &x.value,
            XattrFlags::empty(),
        )
    })
}

fn apply_each(
    xattrs: &[Xattr],
    mut set: impl FnMut(&Xattr) -> rustix::io::Result<()>,
) -> Vec<String> {
    let mut warnings = vec![];
    for x in xattrs {
        if let Err(e) = set(x) {
            let e = io::Error::from(e);
            let why = if unsupported(&e) {
                "the target file system does not support it".to_string()
            } else if e.raw_os_error() == Some(libc::EPERM) {
                format!("{e} (restoring it needs root, or a file system that allows it)")
            } else {
                e.to_string()
            };
            warnings.push(format!(
                "extended attribute {} not restored: {why}",
                x.name_lossy()
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_attributes_round_trip_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"x").unwrap();
        let set = |name: &str, value: &[u8]| {
            rustix::fs::lsetxattr(&src, name, value, XattrFlags::empty())
        };
        if let Err(e) = set("user.zeta", b"last") {
            // tmpfs before Linux 6.6 takes no user attributes.
            eprintln!(
                "skipped: {} takes no user attributes ({e})",
                dir.path().display()
            );
            return;
        }
        set("user.alpha", b"\x00binary\xff").unwrap();
        let got = read(&src).unwrap();
        let names: Vec<String> = got.iter().map(Xattr::name_lossy).collect();
        assert_eq!(names, ["user.alpha", "user.zeta"]);
        assert_eq!(got[0].value, b"\x00binary\xff");

        let dst = dir.path().join("dst");
        let f = std::fs::File::create(&dst).unwrap();
        assert!(apply_fd(&f, &got).is_empty());
        assert_eq!(read(&dst).unwrap(), got);

        let refused = apply_fd(
            &f,
            &[Xattr {
                name: b"nonamespace".to_vec(),
                value: vec![],
            }],
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("nonamespace"), "{refused:?}");
    }
}
