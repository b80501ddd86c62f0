//! The private work folder of one component run: plaintext dumps, RDB copies and etcd
//! snapshots live there while a backup, restore or verify needs them.
//!
//! Each run gets a fresh folder `haven-<label>-<random>` created with mode 0700 under
//! the configured work directory (`work-dir` in the config, `HAVEN_WORK_DIR`, `--work-dir`;
//! the system's temporary directory otherwise). The name is unpredictable and the folder
//! is created exclusively, so another local user can neither read what is in it nor plant
//! a folder (or a dump) there before Haven uses it. Removed when dropped.

use std::fs::{self, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Result, SourceError};

#[derive(Debug)]
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    /// A new private folder under `base` (created with mode 0700 when missing).
    /// `label` (e.g. `db-restore`) is only a readable part of the name; it is cut to
    /// letters, digits, `-` and `_`.
    pub fn create(base: &Path, label: &str) -> Result<WorkDir> {
        if !base.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(base)
                .map_err(|e| {
                    SourceError::io(
                        format!(
                            "creating the work directory {}; set `work-dir` in the config (or \
                             HAVEN_WORK_DIR) to a directory Haven may write to",
                            base.display()
                        ),
                        e,
                    )
                })?;
        }
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        let prefix = format!("haven-{label}-");
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(16)
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|e| {
                SourceError::io(
                    format!(
                        "creating a private work folder in {}; set `work-dir` in the config \
                         (or HAVEN_WORK_DIR) to a directory Haven may write to",
                        base.display()
                    ),
                    e,
                )
            })?;
        Ok(WorkDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder's path (for messages).
    pub fn to_path_buf(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_folder_is_new_private_and_unpredictable() {
        let base = tempfile::tempdir().unwrap();
        let a = WorkDir::create(base.path(), "db-restore").unwrap();
        let b = WorkDir::create(base.path(), "db-restore").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(a.path().parent(), Some(base.path()));
        let mode = fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("haven-db-restore-") && name.len() > 30,
            "{name}"
        );
        let path = a.to_path_buf();
        drop(a);
        assert!(!path.exists());
    }
}
