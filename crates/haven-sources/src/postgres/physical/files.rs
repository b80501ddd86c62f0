//! Base backups as files: when Haven runs where the server's data directory is, it
//! reads the directory itself, in parallel and skipping files unchanged since the
//! previous base backup, between `pg_backup_start` and `pg_backup_stop` on one session
//! (PostgreSQL's "non-exclusive low-level backup", as pgBackRest does), instead of
//! receiving one `pg_basebackup` tar stream through a single walsender.
//!
//! ```text
//! psql session: settings, SHOW data_directory
//!   identity: global/pg_control's system identifier == the server's (same machine)
//!   pg_backup_start('haven', fast) ─────────────── the session stays open
//! the caller (haven-ops): the directory's files into one snapshot, `excluded` left out
//! pg_backup_stop(wait_for_archive) ──> end LSN, backup_label ──> Fingerprint facts
//! ```
//! The restore writes the files back, then `backup_label` from the facts (the label is
//! what makes the server replay WAL from the backup's checkpoint); what the files lack
//! (pg_wal, emptied folders) is made again. Files change while they are read: WAL replay
//! from the label's checkpoint to the end LSN repairs them, as for `pg_basebackup`
//! (full-page writes are forced during the backup).
//!
//! Left out, as `pg_basebackup` leaves them out: the contents of `pg_wal`,
//! `pg_replslot`, `pg_stat_tmp`, `pg_dynshmem`, `pg_notify`, `pg_serial`, `pg_snapshots`
//! and `pg_subtrans`; `postmaster.pid`, `postmaster.opts`, `backup_label`,
//! `tablespace_map`, `backup_manifest`, `current_logfiles`, `pg_internal.init` files and
//! temporary files (`pgsql_tmp*`). Clusters with tablespaces outside the data directory
//! are backed up with `pg_basebackup` instead (as are servers on other machines).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::super::session::Session;
use super::super::PostgresComponent;
use super::label::parse_label;
use super::lsn::Lsn;
use crate::{Fingerprint, Result, SourceError};

/// How a physical component's base backups are taken (`base-backup` in the config).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BaseMethod {
    /// Files when the data directory is readable here and belongs to the server,
    /// else `pg_basebackup`.
    #[default]
    Auto,
    /// The data directory's files (refused when Haven cannot read it).
    Files,
    /// `pg_basebackup` over the replication protocol.
    Stream,
}

/// How long a finished base backup waits for the server to archive the WAL it needs.
const ARCHIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The value of the `method` fact of a base backup taken as files.
pub const FILES_METHOD: &str = "files";

/// Folders whose contents a base backup leaves out (the folders themselves are kept).
pub(super) const EMPTIED: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Top-level files a base backup leaves out.
const SKIPPED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "backup_manifest",
    "current_logfiles",
    "current_logfiles.tmp",
    "postgresql.auto.conf.tmp",
];

/// Whether `rel` (a path relative to the data directory) is left out of a base backup.
pub fn excluded(rel: &Path) -> bool {
    let mut parts = rel.components();
    let Some(first) = parts.next() else {
        return false;
    };
    let first = first.as_os_str().to_string_lossy();
    let top_level = parts.next().is_none();
    if !top_level && EMPTIED.contains(&first.as_ref()) {
        return true;
    }
    if top_level && SKIPPED.contains(&first.as_ref()) {
        return true;
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name == "pg_internal.init" || name.starts_with("pgsql_tmp")
}

/// A base backup in progress on the server: `pg_backup_start` was called on `session`,
/// which must stay open until [`FileBackup::finish`].
pub struct FileBackup {
    session: Session,
    /// The server's data directory, as it says it and as this machine reads it.
    pub data_dir: PathBuf,
    version: u32,
    segment_size: String,
    system_id: String,
    what: String,
}

impl PostgresComponent {
    /// Start a base backup as files, or say why not (`Ok(None)`: use `pg_basebackup`,
    /// under `base-backup = "auto"`). The server checkpoints first (fast).
    pub fn start_file_backup(&self, method: BaseMethod) -> Result<Option<FileBackup>> {
        if method == BaseMethod::Stream {
            return Ok(None);
        }
        let conn = self.conn()?;
        let what = format!("the base backup of {}", conn.render(false));
        let mut session = self.session(&conn)?;
        let version: u32 = session
            .query("SELECT current_setting('server_version_num');")?
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let start_fn = if version >= 150000 {
            "pg_backup_start(text, boolean)"
        } else {
            "pg_start_backup(text, boolean, boolean)"
        };
        // Only a superuser (or pg_read_all_settings) sees data_directory.
        let row = session.query(&format!(
            "SELECT (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
             (SELECT system_identifier FROM pg_control_system()), \
             CASE WHEN pg_has_role('pg_read_all_settings', 'member') \
                  THEN current_setting('data_directory') ELSE '' END, \
             has_function_privilege('{start_fn}', 'execute'), \
             (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'));"
        ))?;
        let fields: Vec<&str> = row
            .first()
            .map(|l| l.split('|').collect())
            .unwrap_or_default();
        let [segment_size, system_id, data_dir, may_start, tablespaces] = fields[..] else {
            return Err(SourceError::failed(
                format!("reading the settings of {}", conn.render(false)),
                format!("unexpected answer {row:?}"),
            ));
        };
        let data_dir = PathBuf::from(data_dir);
        let why_not = if data_dir.as_os_str().is_empty() {
            Some("the url's role may not read the server's data_directory setting (it needs to be a superuser or in pg_read_all_settings)".to_string())
        } else if may_start != "t" {
            Some(format!("the url's role may not call {start_fn}"))
        } else if tablespaces != "0" {
            Some(format!(
                "the cluster has {tablespaces} tablespaces outside its data directory"
            ))
        } else {
            local_identity(&data_dir, system_id).err()
        };
        if let Some(why) = why_not {
            let _ = session.close();
            return match method {
                BaseMethod::Files => Err(SourceError::Unsupported(format!(
                    "`base-backup = \"files\"` reads the data directory, but {why}; run Haven on \
                     the server's machine as a user who can read it (root or postgres), or \
                     set `base-backup = \"stream\"`"
                ))),
                _ => Ok(None),
            };
        }
        let segment_size = segment_size.to_string();
        let start = if version >= 150000 {
            "SELECT pg_backup_start('haven', true);"
        } else {
            "SELECT pg_start_backup('haven', true, false);"
        };
        session.query(start)?;
        Ok(Some(FileBackup {
            session,
            data_dir,
            version,
            segment_size,
            system_id: system_id.to_string(),
            what,
        }))
    }
}

/// Whether `data_dir` is readable here and is the server's own (its `pg_control`
/// names the same system identifier): else the reason.
fn local_identity(data_dir: &Path, system_id: &str) -> std::result::Result<(), String> {
    let control = data_dir.join("global/pg_control");
    let mut first = [0u8; 8];
    fs::File::open(&control)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|e| format!("{} cannot be read here ({e})", control.display()))?;
    // ControlFileData begins with the system identifier, in the machine's byte order.
    let here = u64::from_ne_bytes(first).to_string();
    if here != system_id {
        return Err(format!(
            "{} here belongs to another cluster (system identifier {here}, the server's is \
             {system_id}): the server runs on another machine",
            data_dir.display()
        ));
    }
    Ok(())
}

impl FileBackup {
    /// End the backup (`pg_backup_stop`) and return its facts; `files` and `bytes` are
    /// what was stored. With `wait_for_archive`, it returns once the server's archiver
    /// has archived the WAL the backup needs (polled every 20 ms: the server's own wait
    /// sleeps a whole second between looks).
    pub fn finish(mut self, files: u64, bytes: u64, wait_for_archive: bool) -> Result<Fingerprint> {
        let stop = if self.version >= 150000 {
            "pg_backup_stop(false)"
        } else {
            "pg_stop_backup(false, false)"
        };
        let row = self.session.query(&format!(
            "SELECT lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), \
             to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             pg_walfile_name(lsn), current_setting('archive_mode') <> 'off' FROM {stop};"
        ))?;
        let fields: Vec<&str> = row
            .first()
            .map(|l| l.split('|').collect())
            .unwrap_or_default();
        if let [_, _, _, last_segment, "t"] = fields[..] {
            if wait_for_archive {
                self.wait_archived(last_segment)?;
            }
        }
        self.session.close()?;
        let fields: Vec<&str> = row
            .first()
            .map(|l| l.split('|').collect())
            .unwrap_or_default();
        let [end, label_hex, end_time, _, _] = fields[..] else {
            return Err(SourceError::failed(
                format!("ending {}", self.what),
                format!("unexpected answer {row:?}"),
            ));
        };
        let fail = |e: String| SourceError::failed(format!("ending {}", self.what), e);
        let end_lsn: Lsn = end.parse().map_err(fail)?;
        let label = hex::decode(label_hex)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| fail("the backup label is not text".into()))?;
        let info = parse_label(&label).map_err(fail)?;
        let mut f = Fingerprint::new(format!(
            "base backup of {files} files (read as files), WAL {} to {end_lsn} on timeline {}",
            info.start_lsn, info.timeline
        ));
        f.fact("method", FILES_METHOD)
            .fact("backup-label", label)
            .fact("data-directory", self.data_dir.display().to_string())
            .fact("start-lsn", info.start_lsn.to_string())
            .fact("end-lsn", end_lsn.to_string())
            .fact("timeline", info.timeline.to_string())
            .fact("start-time", info.start_time)
            .fact("end-time", end_time)
            .fact("wal-segment-size", self.segment_size.clone())
            .fact("system-identifier", self.system_id.clone())
            .fact("server-version", self.version.to_string())
            .fact("files", files.to_string())
            .fact("bytes", bytes.to_string());
        Ok(f)
    }

    /// Poll `pg_stat_archiver` until `segment` (or a later file) is archived.
    fn wait_archived(&mut self, segment: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let mut failed_before = None;
        loop {
            let row = self.session.query(
                "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') \
                 FROM pg_stat_archiver;",
            )?;
            let fields: Vec<&str> = row
                .first()
                .map(|l| l.split('|').collect())
                .unwrap_or_default();
            let [archived, failed, failed_wal] = fields[..] else {
                return Err(SourceError::failed(
                    format!("waiting for {} to be archived", segment),
                    format!("unexpected answer {row:?}"),
                ));
            };
            if archived >= segment {
                return Ok(());
            }
            let failed_before = failed_before
                .get_or_insert_with(|| failed.to_string())
                .clone();
            if started.elapsed() > ARCHIVE_WAIT {
                let failing = if failed != failed_before.as_str() {
                    format!(
                        "; archive_command failed {} times meanwhile (last on {failed_wal}): the server's log says why",
                        failed.parse::<u64>().unwrap_or(0)
                            .saturating_sub(failed_before.parse().unwrap_or(0))
                    )
                } else {
                    String::new()
                };
                return Err(SourceError::failed(
                    format!("ending {}", self.what),
                    format!(
                        "the WAL segment {segment} it needs was not archived within {} s{failing}",
                        ARCHIVE_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Give up: the server ends the backup when the session closes.
    pub fn abort(self) {
        let _ = self.session.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_pg_basebackup_leaves_out_is_left_out() {
        for out in [
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status",
            "pg_replslot/haven/state",
            "postmaster.pid",
            "backup_label",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_stat_tmp/global.stat",
        ] {
            assert!(excluded(Path::new(out)), "{out}");
        }
        for kept in [
            "pg_wal",
            "pg_replslot",
            "base/5/16384",
            "global/pg_control",
            "postgresql.auto.conf",
            "pg_xact/0000",
            "log/postmaster.pid",
            "pg_stat/pgstat.stat",
        ] {
            assert!(!excluded(Path::new(kept)), "{kept}");
        }
    }
}
