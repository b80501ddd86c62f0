//! A repository in a local folder.
//!
//! Durability is enforced here: every write goes to a uniquely named temporary file in
//! the destination folder, is fsynced, renamed into place, and the folder is fsynced.
//! A crash leaves either the old state or the complete new file, plus at most a
//! `.tmp-*` file that `list` ignores and the next prune removes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{ErrorClass, FileInfo, FileKind, ReadBackend, StoreError, WriteBackend};

/// Prefix of temporary files; never a valid object name.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    location: String,
}

impl LocalBackend {
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref().to_path_buf();
        let location = root.display().to_string();
        LocalBackend { root, location }
    }

    fn full_path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    fn err(&self, file: &str, action: &str, e: std::io::Error) -> StoreError {
        StoreError::io(&self.location, file, action, e)
    }

    /// Remove leftover temporary files (from crashed writers) older than `min_age`.
    pub fn remove_stale_temporaries(
        &self,
        min_age: std::time::Duration,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err(&dir.display().to_string(), "listing", e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(path);
                } else if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let old = meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .unwrap_or_default()
                        >= min_age;
                    if old && fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Write a new file bypassing the page cache, when `data` starts on a page boundary
/// (haven-repo builds packs that way): the kernel then copies nothing, which is about a
/// sixth of the CPU time of a first backup. The whole pages go with O_DIRECT, the tail
/// through the page cache, then one `fsync` covers both. Returns `false`, having left
/// nothing behind, where the file system refuses O_DIRECT or the buffer is unaligned;
/// the caller then writes the ordinary way.
fn write_direct(tmp: &Path, data: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const PAGE: usize = 4096;
    let whole = data.len() / PAGE * PAGE;
    if whole == 0 || !(data.as_ptr() as usize).is_multiple_of(PAGE) {
        return Ok(false);
    }
    let refused = |e: &std::io::Error| e.raw_os_error() == Some(libc::EINVAL);
    let direct = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp);
    let mut f = match direct {
        Ok(f) => f,
        Err(e) if refused(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Err(e) = f.write_all(&data[..whole]) {
        drop(f);
        let _ = fs::remove_file(tmp);
        return if refused(&e) { Ok(false) } else { Err(e) };
    }
    drop(f);
    let f = OpenOptions::new().write(true).open(tmp)?;
    f.write_all_at(&data[whole..], whole as u64)?;
    f.sync_all()?;
    Ok(true)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    hex::encode(b)
}

impl ReadBackend for LocalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        if matches!(kind, FileKind::Marker | FileKind::Config) {
            let p = self.full_path(kind, "");
            return match fs::metadata(&p) {
                Ok(m) => Ok(vec![FileInfo {
                    name: kind.path(""),
                    size: m.len(),
                }]),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
                Err(e) => Err(self.err(&kind.path(""), "reading metadata", e)),
            };
        }
        let base = self.root.join(kind.folder());
        let mut dirs = vec![base.clone()];
        let mut out = Vec::new();
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != base => continue,
                Err(e) => return Err(self.err(kind.folder(), "listing", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.err(kind.folder(), "listing", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ft = entry
                    .file_type()
                    .map_err(|e| self.err(&name, "listing", e))?;
                if ft.is_dir() {
                    if kind == FileKind::Pack {
                        dirs.push(entry.path());
                    }
                    continue;
                }
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let size = match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err(&name, "reading metadata", e)),
                };
                out.push(FileInfo { name, size });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        let rel = kind.path(name);
        fs::read(self.full_path(kind, name)).map_err(|e| self.err(&rel, "reading", e))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let rel = kind.path(name);
        let mut f =
            File::open(self.full_path(kind, name)).map_err(|e| self.err(&rel, "opening", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(&rel, "seeking", e))?;
        let mut buf = vec![0u8; length as usize];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::new(
                    ErrorClass::Permanent,
                    &self.location,
                    &rel,
                    format!("file is shorter than expected (wanted {length} bytes at offset {offset}): truncated"),
                )
            } else {
                self.err(&rel, "reading", e)
            }
        })?;
        Ok(buf)
    }
}

impl WriteBackend for LocalBackend {
    fn create(&self) -> Result<(), StoreError> {
        if let Ok(mut entries) = fs::read_dir(&self.root) {
            if entries.next().is_some() {
                return Err(StoreError::new(
                    ErrorClass::Permanent,
                    &self.location,
                    "",
                    "the folder exists and is not empty; choose a new or empty folder for a new repository",
                ));
            }
        }
        fs::create_dir_all(&self.root)
            .map_err(|e| self.err("", "creating the repository folder", e))?;
        for kind in FileKind::FOLDERS {
            let dir = self.root.join(kind.folder());
            fs::create_dir_all(&dir).map_err(|e| self.err(kind.folder(), "creating", e))?;
        }
        for i in 0..=255u8 {
            let dir = self.root.join("data").join(hex::encode([i]));
            fs::create_dir_all(&dir).map_err(|e| self.err("data", "creating", e))?;
        }
        let data = self.root.join("data");
        for dir in [&data, &self.root] {
            sync_dir(dir).map_err(|e| self.err("", "syncing", e))?;
        }
        Ok(())
    }

    fn remove_stale_temporaries(&self, min_age: std::time::Duration) -> Result<usize, StoreError> {
        LocalBackend::remove_stale_temporaries(self, min_age)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let rel = kind.path(name);
        let path = self.full_path(kind, name);
        let dir = path
            .parent()
            .expect("repository files always live in a folder")
            .to_path_buf();
        if kind == FileKind::Pack {
            // Packs live in 256 sub-folders; tolerate a layout created by another tool.
            if !dir.is_dir() {
                fs::create_dir_all(&dir).map_err(|e| self.err(&rel, "creating folder", e))?;
                sync_dir(dir.parent().expect("data/xx has a parent"))
                    .map_err(|e| self.err(&rel, "syncing", e))?;
            }
        }
        let tmp = dir.join(format!("{TMP_PREFIX}{}", random_suffix()));
        let result = (|| {
            if !(kind == FileKind::Pack && write_direct(&tmp, data)?) {
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(data)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(&rel, "writing", e));
        }
        Ok(())
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        let rel = kind.path(name);
        let path = self.full_path(kind, name);
        match fs::remove_file(&path) {
            // The folder is synced so a removal survives a power loss: prune relies on
            // old index files staying removed once their packs are deleted.
            Ok(()) => sync_dir(path.parent().expect("files live in folders"))
                .map_err(|e| self.err(&rel, "syncing", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(&rel, "removing", e)),
        }
    }
}
