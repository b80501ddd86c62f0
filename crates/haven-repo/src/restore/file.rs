//! One file being restored.
//!
//! A file that needs exactly one blob write is written straight to its final name, after
//! the blob was decrypted and verified: no wrong byte can land there. It is opened once,
//! and its metadata set through the open handle (a restore of many small files spends
//! much of its time in the kernel walking paths). A file that needs several writes is
//! written under a temporary name (`.haven-restore-N`) created at its final size on the
//! first write (holes stay sparse) and renamed into place after the last one.
//! Any failure removes what was written and records the reason once. Paths are
//! relative to the target and go through [`Target`] (no symlink followed).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::beneath::Target;
use crate::tree::Node;

pub(super) struct FileItem {
    /// Relative to the target folder.
    pub final_path: PathBuf,
    temp_path: PathBuf,
    pub node: Node,
    /// Blob writes still to come.
    pub remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
    /// Set when a write failed because the device is full.
    no_space: AtomicBool,
    direct: AtomicBool,
    /// Set once the file exists at its final size; no handle is kept open between
    /// writes (thousands of files may be in progress at once).
    created: OnceLock<Result<(), String>>,
    /// A file written in one go: its handle from the write to `finish` (the same thread
    /// calls both, one after the other).
    handle: Mutex<Option<File>>,
}

impl FileItem {
    pub fn new(final_path: PathBuf, number: usize, node: Node) -> Self {
        let temp_path = final_path.with_file_name(format!(".haven-restore-{number}"));
        FileItem {
            final_path,
            temp_path,
            node,
            remaining: AtomicUsize::new(0),
            failure: Mutex::new(None),
            no_space: AtomicBool::new(false),
            direct: AtomicBool::new(false),
            created: OnceLock::new(),
            handle: Mutex::new(None),
        }
    }

    /// Called once after planning: a single write goes straight to the final name.
    pub fn direct_write_if_single(&self, writes: usize) {
        self.direct.store(writes == 1, Ordering::Relaxed);
    }

    fn write_path(&self) -> &Path {
        if self.direct.load(Ordering::Relaxed) {
            &self.final_path
        } else {
            &self.temp_path
        }
    }

    pub fn fail(&self, why: String) {
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(why);
    }

    /// The reason for a failed write, noting a full device ([`FileItem::no_space`]).
    fn io_failure(&self, action: &str, path: &Path, e: std::io::Error) -> String {
        if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            self.no_space.store(true, Ordering::Relaxed);
        }
        format!("{action} {} failed: {e}", path.display())
    }

    /// True when the file failed because the target's device is full.
    pub fn no_space(&self) -> bool {
        self.no_space.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }

    fn create(&self, target: &Target) -> Result<(), String> {
        self.created
            .get_or_init(|| {
                let path = self.write_path();
                let direct = self.direct.load(Ordering::Relaxed);
                // A file written in one go gets its size from that write.
                let f = target
                    .create_new(path)
                    .and_then(|f| {
                        if !direct {
                            f.set_len(self.node.size)?;
                        }
                        Ok(f)
                    })
                    .map_err(|e| self.io_failure("creating", &target.display(path), e))?;
                if direct {
                    *self.handle.lock().expect("handle lock") = Some(f);
                }
                Ok(())
            })
            .clone()
    }

    /// Write one verified blob at `offset`; all-zero blobs only extend the file (sparse).
    pub fn write(&self, target: &Target, data: &[u8], offset: u64, zero: bool) {
        if self.failed() {
            return;
        }
        let result = self.create(target).and_then(|_| {
            let held = self.handle.lock().expect("handle lock");
            match held.as_ref() {
                Some(f) => self.write_whole(f, data, offset, zero),
                None if zero => Ok(()),
                None => target.open_write(self.write_path()).and_then(|f| {
                    f.write_all_at(data, offset)?;
                    start_writeback(&f, offset, data.len());
                    Ok(())
                }),
            }
            .map_err(|e| self.io_failure("writing", &target.display(self.write_path()), e))
        });
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// The one write of a file written in one go; an all-zero blob only sets the size
    /// (sparse).
    fn write_whole(&self, f: &File, data: &[u8], offset: u64, zero: bool) -> std::io::Result<()> {
        if !zero {
            f.write_all_at(data, offset)?;
            start_writeback(f, offset, data.len());
        }
        if zero || offset + data.len() as u64 != self.node.size {
            f.set_len(self.node.size)?;
        }
        Ok(())
    }

    /// After the last write: metadata and rename, or removal when anything failed.
    /// Returns the failure, if any, else the warnings of setting its metadata.
    pub fn finish(&self, target: &Target) -> Result<Vec<String>, String> {
        let failure = self.failure.lock().expect("failure lock").clone();
        // Taken (and so closed) in every case, failure included.
        let held = self.handle.lock().expect("handle lock").take();
        if let Some(why) = failure {
            if self.created.get().is_some() {
                let _ = target.remove(self.write_path());
            }
            return Err(why);
        }
        // Files without blobs (empty) are created here.
        let done = self.create(target).and_then(|_| {
            match held {
                Some(f) => Ok(f),
                None => target.open_write(self.write_path()),
            }
            .and_then(|f| super::apply_metadata_to_file(&f, &self.node))
            .map_err(|e| format!("setting metadata failed: {e}"))
        });
        let done = done.and_then(|warnings| {
            if self.direct.load(Ordering::Relaxed) {
                Ok(warnings)
            } else {
                target
                    .rename_sibling(&self.temp_path, &self.final_path)
                    .map(|()| warnings)
                    .map_err(|e| format!("renaming into place failed: {e}"))
            }
        });
        if done.is_err() {
            let _ = target.remove(self.write_path());
        }
        done
    }
}

/// Ask the kernel to start writing a range just written to disk, without waiting
/// (`POSIX_FADV_DONTNEED` on dirty pages starts their writeback and leaves them cached):
/// a restore's data then reaches the disk while later blobs are still being decrypted,
/// instead of all at once when something syncs it (a restored database's first start
/// fsyncs its whole data directory). `len` 0: to the end of the file. Advisory: a
/// failure changes nothing.
pub fn start_writeback(f: &File, offset: u64, len: usize) {
    let _ = rustix::fs::fadvise(
        f,
        offset,
        std::num::NonZeroU64::new(len as u64),
        rustix::fs::Advice::DontNeed,
    );
}
