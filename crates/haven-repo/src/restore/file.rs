//! One file being restored.
//!
//! A file that needs exactly one blob write is written straight to its final name, after
//! the blob was decrypted and verified: no wrong byte can land there. A file that needs
//! several is written under a temporary name (`.haven-restore-N`) created at its final
//! size on the first write (holes stay sparse) and renamed into place after the last one.
//! Any failure removes what was written and records the reason once.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::tree::Node;

pub(super) struct FileItem {
    pub final_path: PathBuf,
    temp_path: PathBuf,
    pub node: Node,
    /// Blob writes still to come.
    pub remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
    direct: AtomicBool,
    /// Set once the file exists at its final size; no handle is kept open between
    /// writes (thousands of files may be in progress at once).
    created: OnceLock<Result<(), String>>,
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
            direct: AtomicBool::new(false),
            created: OnceLock::new(),
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

    pub fn failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }

    fn create(&self) -> Result<(), String> {
        self.created
            .get_or_init(|| {
                let path = self.write_path();
                let _ = fs::remove_file(path);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path);
                f.and_then(|f| f.set_len(self.node.size))
                    .map_err(|e| format!("creating {} failed: {e}", path.display()))
            })
            .clone()
    }

    /// Write one verified blob at `offset`; all-zero blobs only extend the file (sparse).
    pub fn write(&self, data: &[u8], offset: u64, zero: bool) {
        if self.failed() {
            return;
        }
        let result = self.create().and_then(|_| {
            if zero {
                return Ok(());
            }
            OpenOptions::new()
                .write(true)
                .open(self.write_path())
                .and_then(|f| f.write_all_at(data, offset))
                .map_err(|e| format!("writing {} failed: {e}", self.write_path().display()))
        });
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// After the last write: metadata and rename, or removal when anything failed.
    /// Returns the failure, if any.
    pub fn finish(&self) -> Result<(), String> {
        let failure = self.failure.lock().expect("failure lock").clone();
        if let Some(why) = failure {
            if self.created.get().is_some() {
                let _ = fs::remove_file(self.write_path());
            }
            return Err(why);
        }
        // Files without blobs (empty) are created here.
        let done = self.create().and_then(|_| {
            super::apply_metadata(self.write_path(), &self.node, false)
                .map_err(|e| format!("setting metadata failed: {e}"))
        });
        let done = done.and_then(|_| {
            if self.direct.load(Ordering::Relaxed) {
                Ok(())
            } else {
                fs::rename(&self.temp_path, &self.final_path)
                    .map_err(|e| format!("renaming into place failed: {e}"))
            }
        });
        if done.is_err() {
            let _ = fs::remove_file(self.write_path());
        }
        done
    }
}
