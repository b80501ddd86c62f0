//! Base backups of physical PostgreSQL components taken as files (haven-sources'
//! `physical::files` says when and what is left out): the repository engine's parallel
//! tree backup of the data directory, between the server's backup start and stop, and
//! the way back into a restored data directory.
//!
//! ```text
//! backup:  start_file_backup ──FileBackup──> backup_paths(data dir, exclude, parent =
//!          the previous base backup of the same directory, racy margin) ──> finish
//!          (pg_backup_stop) ──> Fingerprint (facts: method = files, backup-label, LSNs)
//! restore: restore(snapshot, include = data dir) into DIR/.tree, contents moved into DIR
//! ```
//! Unchanged files (same size, times and inode, last written more than a second before
//! the previous base backup began) are taken from it without being read: a cluster's
//! cold tables cost nothing on the next day.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use haven_repo::backup::{backup_paths, BackupOptions, BackupResult, Exclude};
use haven_repo::progress::Progress;
use haven_repo::restore::{restore, RestoreOptions};
use haven_repo::snapshot::Snapshot;
use haven_repo::IndexedRepository;
use haven_sources::postgres::physical::{files, BaseMethod};
use haven_sources::postgres::{PostgresComponent, PostgresConfig, WalMode};
use haven_sources::{Fingerprint, SourceError, StreamComponent};

use crate::run::RunEnv;
use crate::OpsError;

/// Files written within this margin of the previous base backup's start are read again.
const RACY_MARGIN: Duration = Duration::from_secs(1);

/// Take a base backup of `cfg` as files, or `Ok(None)` when it is to be taken with
/// `pg_basebackup` (`base-backup = "stream"`, or `auto` and the data directory is not
/// readable here).
pub(crate) fn backup_base_files(
    repo: &IndexedRepository,
    env: &RunEnv,
    cfg: &PostgresConfig,
    tags: Vec<String>,
    progress: Arc<Progress>,
) -> Result<Option<(BackupResult, Fingerprint, Vec<String>)>, OpsError> {
    let mut component = PostgresComponent::new(cfg.clone());
    component.set_deadline(env.deadline);
    let Some(backup) = component.start_file_backup(cfg.base_backup)? else {
        return Ok(None);
    };
    let data_dir = backup.data_dir.clone();
    let stored = backup_paths(
        repo.clone(),
        &BackupOptions {
            paths: vec![backup.data_dir.clone()],
            tags,
            exclude: Some(Exclude(Arc::new(move |path, _| {
                path.strip_prefix(&data_dir).is_ok_and(files::excluded)
            }))),
            racy_margin: Some(RACY_MARGIN),
            ..Default::default()
        },
        progress,
    );
    let result = match stored {
        Ok(r) => r,
        Err(e) => {
            backup.abort();
            return Err(e.into());
        }
    };
    let s = &result.snapshot.summary;
    // In archive mode the backup is complete once the server archived its last segment
    // (through `haven wal push`); a receiver stores it within a second by itself.
    let fingerprint = backup.finish(s.files, s.bytes_total, cfg.wal == WalMode::Archive)?;
    // Files that vanished while the backup read the directory (a dropped table, a
    // truncated segment) are replayed from WAL: not a loss, but said.
    let warnings = result
        .warnings
        .iter()
        .map(|w| format!("{w} (replayed from WAL at restore)"))
        .chain(result.notices.iter().cloned())
        .collect();
    Ok(Some((result, fingerprint, warnings)))
}

/// Whether `cfg`'s base backups may be taken as files.
pub(crate) fn may_use_files(cfg: &PostgresConfig) -> bool {
    cfg.base_backup != BaseMethod::Stream
}

/// Restore the data directory `source` of `snap` so that its contents are in `dir`
/// (an empty folder); returns the bytes written.
pub(crate) fn restore_data_dir(
    repo: &IndexedRepository,
    snap: &Snapshot,
    source: &Path,
    dir: &Path,
) -> Result<u64, SourceError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        SourceError::io(format!("{what} {}", p.display()), e)
    };
    let tree = dir.join(".tree");
    let report = restore(
        repo,
        snap,
        &RestoreOptions {
            target: tree.clone(),
            include: vec![source.to_path_buf()],
        },
        Arc::new(Progress::default()),
    )
    .map_err(|e| SourceError::failed("restoring the base backup's files", e.to_string()))?;
    if let Some((path, why)) = report.failed.first() {
        return Err(SourceError::failed(
            "restoring the base backup's files",
            format!(
                "{} files could not be restored (first: {path}: {why}); run `haven check`",
                report.failed.len()
            ),
        ));
    }
    let restored: PathBuf = tree.join(source.strip_prefix("/").unwrap_or(source));
    let entries = std::fs::read_dir(&restored).map_err(|e| io("listing", &restored, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("listing", &restored, e))?;
        std::fs::rename(entry.path(), dir.join(entry.file_name()))
            .map_err(|e| io("moving into place", &entry.path(), e))?;
    }
    std::fs::remove_dir_all(&tree).map_err(|e| io("removing", &tree, e))?;
    Ok(report.bytes)
}
