//! The daemon's catalog: an SQLite file in the state directory holding the history of
//! jobs and the cache of recovery points. It is never the source of truth for data: delete
//! it and [`Catalog::rebuild_points`] reads the points back from the repository (only the
//! job history and alert state are lost).
//!
//! ```text
//! scheduler ──create_job──> queued ──start_job──> running (attempt n) ──finish_job──> done
//!             append_log / update_progress / finish_attempt while running
//! backup done ──record_point──> points (source recorded)
//! catalog lost ──rebuild_points(repo, tenant)──> points (source rebuilt)
//! daemon start ──mark_running_as_interrupted──> jobs a killed daemon left running
//! ```
//!
//! Schema (version 3; `PRAGMA user_version`, `PRAGMA application_id` = `HVNC`). Times are
//! RFC 3339 UTC text with nanoseconds (fixed width, so they sort as text); JSON columns
//! are text.
//!
//! A tenant is its name **and its repository**: every tenant's row carries `repo`, the
//! repository's canonical location ([`crate::location::canonical_location`]; not the
//! repository id, which sits in the sealed config and needs the key and the store to
//! read). The daemon tells the catalog each tenant's repository at start
//! ([`Catalog::bind_repositories`], kept in a per-connection `temp.bound` table) and every
//! read and write of a tenant's rows is confined to that repository: a config with a
//! tenant of the same name on another repository, sharing the state directory, sees none
//! of the first's jobs, points, verifies, alerts or first-seen time. Rows from schema v1
//! (repo `''`) are adopted by the first daemon that binds their tenant.
//!
//! | table | columns |
//! | --- | --- |
//! | `jobs` | `id` (autoincrement), `kind` (backup, verify, retention, drill), `tenant`, `repo`, `triggered_by` (schedule, manual, catch-up, retry), `scheduled_for` (the cron slot, or null), `late` (0/1: a slot missed while the daemon was down), `status` (queued, running, succeeded, failed, interrupted), `created`, `started`, `finished`, `attempts`, `error`, `point` (made or checked), `bytes`, `bytes_added`, `seconds` (started to finished), `progress_done`, `progress_total` (0 while unknown), `component` (being worked on) |
//! | `job_log` | `id` (order), `job_id`, `time`, `line` |
//! | `attempts` | `job_id`, `n` (1-based), `started`, `finished`, `status`, `error`, `details` (JSON, e.g. errors per component) |
//! | `points` | `tenant`, `repo`, `id`, `started`, `finished`, `status` (complete, failed), `components` (JSON: name → `ComponentRecord`), `bytes`, `bytes_added`, `seconds`, `source` (recorded, rebuilt) |
//! | `verifies` | `id`, `job_id`, `tenant`, `repo`, `point`, `time`, `passed`, `restore_seconds` (the measured RTO), `report` (JSON) |
//! | `alerts` | `tenant`, `repo`, `key` (`KIND:TENANT[:DETAIL]`, e.g. `rpo:acme:db`), `state` (firing, resolved), `first_fired`, `last_sent`, `resolved_at`, `message` |
//! | `tenant_meta` | `tenant`, `repo`, `key`, `value` (e.g. `last_slot:backup` → RFC 3339 time, `first_seen`) |
//! | `meta` | `key`, `value`: what concerns the whole catalog (e.g. `retried:JOB`) |
//! | `dr_runs` | (v3) one row per disaster-recovery run, drill or dry run: `id`, `runbook`, `tenant`, `repo`, `into_tenant`, `mode`, `point`, `state`, `started`, `finished`, `seconds` (measured RTO), `actor`, `owner_pid`, `error`, `plan` (JSON) |
//! | `dr_steps` | (v3) `run_id`, `step`, `state`, `attempts`, `started`, `finished`, `seconds`, `outputs` (JSON), `message` |
//! | `dr_audit` | (v3) `id`, `run_id`, `time`, `step`, `event`, `detail` (secrets redacted) |
//!
//! Migrations run in order inside one transaction each; a file that is not SQLite, is
//! another application's database, or has a newer schema is refused with its name. The
//! connection uses WAL and a busy timeout; one connection behind a mutex serves every
//! thread (`Catalog` is `Clone + Send + Sync`). Timestamps come from an injectable clock
//! ([`Catalog::with_clock`]) so tests and the daemon's manual clock agree.
//!
//! Files: this one (open, migrations, errors, alerts, meta), jobs and attempts in
//! `catalog/jobs.rs`, points and verifies in `catalog/points.rs`, the readiness report's
//! reads and the DR runs as the API shows them in `catalog/readiness.rs`, the schema in
//! `catalog/v1.sql` and `catalog/v2.sql` (a released migration is never edited: add the
//! next one).
//!
//! Limits: one process per file (a second daemon on the same state directory would share
//! the file without coordination); needs SQLite 3.35 or newer (`RETURNING`); the history
//! grows until [`Catalog::prune_jobs`] is called.

mod jobs;
mod points;
mod readiness;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};
use serde::Serialize;

pub use crate::daemon::view::JobKind;
use crate::OpsError;
pub use dr::{DrAudit, DrMode, DrRun, DrRunState, DrStep, DrStepState};
pub use jobs::{Attempt, Job, JobCounts, JobFilter, JobOutcome, LogLine, NewJob};
pub use points::{CatalogPoint, RebuildSummary, VerifyRecord};
pub use readiness::DrRunFilter;

/// `PRAGMA application_id` of a Haven catalog: "HVNC".
pub const APPLICATION_ID: i32 = 0x4856_4e43;

/// Each entry upgrades the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("catalog/v1.sql"),
    include_str!("catalog/v2.sql"),
    include_str!("catalog/v3.sql"),
];

/// SQL: the repository `tenant_expr` is bound to (`''` when unbound).
pub(crate) fn scope(tenant_expr: &str) -> String {
    format!("coalesce((SELECT b.repo FROM temp.bound b WHERE b.tenant = {tenant_expr}), '')")
}

/// The tenant an alert key names: keys are `KIND:TENANT` or `KIND:TENANT:DETAIL` (tenant
/// names have no `:`).
fn alert_tenant(key: &str) -> &str {
    key.split(':').nth(1).unwrap_or("")
}

/// The schema version this build writes (and the newest it reads).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Errors of the catalog. Each names the file. [`CatalogError::is_transient`] says whether
/// trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {file}: {source}")]
    Sqlite {
        file: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{file} is not a Haven catalog ({why}); move it away or give the daemon another state directory")]
    Foreign { file: String, why: String },
    #[error("catalog {file} has schema version {found}, newer than the {supported} this haven knows; upgrade haven, or move the file away (the daemon rebuilds the recovery points from the repository)")]
    TooNew {
        file: String,
        found: i64,
        supported: i64,
    },
    #[error("catalog {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("catalog {file}: cannot create its folder: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading the repository while rebuilding failed.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

impl CatalogError {
    /// The database was busy or locked by another process beyond the busy timeout.
    pub fn is_transient(&self) -> bool {
        matches!(self, CatalogError::Sqlite { source, .. }
            if matches!(source.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)))
    }
}

/// A job's id: the `jobs.id` row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Defines a text-valued enum: serde names, `as_str` and a parser, all from one list.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

// After the macro: `dr` uses it.
mod dr;

text_enum!(
    /// Why a job was created.
    Trigger {
        Schedule = "schedule",
        Manual = "manual",
        /// A slot missed while the daemon was down, run once on start.
        CatchUp = "catch-up",
        Retry = "retry",
    }
);

text_enum!(
    /// Where a job (or an attempt) is in its life.
    JobStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// The daemon stopped (or was killed) while it ran.
        Interrupted = "interrupted",
    }
);

text_enum!(
    /// How a point came into the catalog.
    PointSource {
        /// Written by the daemon when its backup finished.
        Recorded = "recorded",
        /// Read back from the repository by [`Catalog::rebuild_points`].
        Rebuilt = "rebuilt",
    }
);

text_enum!(
    AlertState {
        Firing = "firing",
        Resolved = "resolved",
    }
);

fn kind_str(k: JobKind) -> &'static str {
    match k {
        JobKind::Backup => "backup",
        JobKind::Verify => "verify",
        JobKind::Retention => "retention",
        JobKind::Drill => "drill",
    }
}

fn parse_kind(s: &str) -> Option<JobKind> {
    [
        JobKind::Backup,
        JobKind::Verify,
        JobKind::Retention,
        JobKind::Drill,
    ]
    .into_iter()
    .find(|k| kind_str(*k) == s)
}

/// The alert engine's state for one alert key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub key: String,
    pub state: AlertState,
    pub first_fired: DateTime<Utc>,
    pub last_sent: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub message: String,
}

type ClockFn = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A handle on the catalog; clones share one connection.
#[derive(Clone)]
pub struct Catalog {
    conn: Arc<Mutex<Connection>>,
    file: Arc<String>,
    clock: ClockFn,
    created: bool,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("file", &self.file).finish()
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn conversion(idx: usize, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, why.into())
}

fn time_at(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| conversion(idx, format!("time {s:?}: {e}")))
}

fn opt_time_at(row: &Row, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => time_at(row, idx).map(Some),
    }
}

fn text_at<T>(row: &Row, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| conversion(idx, format!("unknown value {s:?}")))
}

fn json_at<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| conversion(idx, format!("JSON: {e}")))
}

fn opt_u64_at(row: &Row, idx: usize) -> rusqlite::Result<Option<u64>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(|v| v as u64))
}

fn alert_from(row: &Row) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        key: row.get(0)?,
        state: text_at(row, 1, AlertState::parse)?,
        first_fired: time_at(row, 2)?,
        last_sent: opt_time_at(row, 3)?,
        resolved_at: opt_time_at(row, 4)?,
        message: row.get(5)?,
    })
}

/// The `tenant_meta` key of the last cron slot run for a tenant's job kind.
fn last_slot_key(kind: JobKind) -> String {
    format!("last_slot:{}", kind_str(kind))
}

impl Catalog {
    /// Open the catalog at `path`, creating the file (and its folder) and the schema when
    /// missing, and migrating an older schema.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let file = path.display().to_string();
        let sql = |source| CatalogError::Sqlite {
            file: file.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::Io {
                file: file.clone(),
                source,
            })?;
        }
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        // Nothing is written before the file is known to be ours.
        let header = conn.query_row(
            "SELECT (SELECT application_id FROM pragma_application_id), \
                    (SELECT user_version FROM pragma_user_version), \
                    (SELECT count(*) FROM sqlite_master)",
            [],
            |r| {
                Ok((
                    r.get::<_, i32>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        );
        let (app_id, version, objects) = match header {
            Ok(h) => h,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                return Err(CatalogError::Foreign {
                    file,
                    why: "it is not an SQLite database".into(),
                })
            }
            Err(e) => return Err(sql(e)),
        };
        let empty = app_id == 0 && version == 0 && objects == 0;
        if app_id != APPLICATION_ID && !empty {
            return Err(CatalogError::Foreign {
                file,
                why: format!(
                    "an SQLite database of another application: application id {app_id:#x}, schema version {version}, {objects} tables and indexes"
                ),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(CatalogError::TooNew {
                file,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Invalid {
                file,
                message: format!("cannot switch to WAL mode (the file system gave {mode}); put the state directory on a local disk"),
            });
        }
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(sql)?;
        for (from, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
                from + 1
            ))
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        conn.execute_batch(
            "CREATE TEMP TABLE bound (tenant TEXT PRIMARY KEY, repo TEXT NOT NULL);",
        )
        .map_err(sql)?;
        Ok(Catalog {
            conn: Arc::new(Mutex::new(conn)),
            file: Arc::new(file),
            clock: Arc::new(Utc::now),
            created: version == 0,
        })
    }

    /// Use `clock` for every timestamp the catalog writes (the daemon's clock).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether this open created the schema (a new or deleted catalog): the daemon then
    /// rebuilds the points of every tenant.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Confine every tenant's rows to its repository from now on: `repos` maps tenant
    /// names to repository identities ([`crate::location::canonical_location`]). Replaces
    /// the previous binding. A bound tenant adopts its rows from schema v1 (repo `''`).
    pub fn bind_repositories<'a>(
        &self,
        repos: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), CatalogError> {
        self.run(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM temp.bound", [])?;
            for (tenant, repo) in repos {
                tx.execute(
                    "INSERT OR REPLACE INTO temp.bound (tenant, repo) VALUES (?1, ?2)",
                    params![tenant, repo],
                )?;
            }
            for table in ["jobs", "points", "verifies", "alerts", "tenant_meta"] {
                tx.execute(
                    &format!(
                        "UPDATE OR REPLACE {table} SET repo = {} \
                         WHERE repo = '' AND tenant IN (SELECT tenant FROM temp.bound)",
                        scope(&format!("{table}.tenant"))
                    ),
                    [],
                )?;
            }
            tx.commit()
        })
    }

    /// The file, as given to [`Catalog::open`].
    pub fn file(&self) -> &str {
        &self.file
    }

    fn now(&self) -> String {
        ts((self.clock)())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            file: self.file.to_string(),
            source,
        }
    }

    fn invalid(&self, message: String) -> CatalogError {
        CatalogError::Invalid {
            file: self.file.to_string(),
            message,
        }
    }

    fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        f(&mut self.conn()).map_err(|e| self.err(e))
    }

    // --- alerts ----------------------------------------------------------------------

    pub fn alert(&self, key: &str) -> Result<Option<AlertRow>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT key, state, first_fired, last_sent, resolved_at, message FROM alerts \
                     WHERE key = ?1 AND repo = {}",
                    scope("?2")
                ),
                [key, alert_tenant(key)],
                alert_from,
            )
            .optional()
        })
    }

    /// Every alert row, by key; only the firing ones when `firing_only`.
    pub fn alerts(&self, firing_only: bool) -> Result<Vec<AlertRow>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT key, state, first_fired, last_sent, resolved_at, message FROM alerts \
                 WHERE (NOT ?1 OR state = 'firing') AND repo = {} ORDER BY key",
                scope("alerts.tenant")
            ))?;
            let rows = st.query_map([firing_only], alert_from)?;
            rows.collect()
        })
    }

    /// Insert or replace the row of `alert.key`.
    pub fn set_alert(&self, alert: &AlertRow) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                &format!(
                    "INSERT OR REPLACE INTO alerts \
                     (tenant, repo, key, state, first_fired, last_sent, resolved_at, message) \
                     VALUES (?7, {}, ?1, ?2, ?3, ?4, ?5, ?6)",
                    scope("?7")
                ),
                params![
                    alert.key,
                    alert.state.as_str(),
                    ts(alert.first_fired),
                    alert.last_sent.map(ts),
                    alert.resolved_at.map(ts),
                    alert.message,
                    alert_tenant(&alert.key)
                ],
            )
        })?;
        Ok(())
    }

    pub fn delete_alert(&self, key: &str) -> Result<bool, CatalogError> {
        self.run(|c| {
            c.execute(
                &format!(
                    "DELETE FROM alerts WHERE key = ?1 AND repo = {}",
                    scope("?2")
                ),
                [key, alert_tenant(key)],
            )
        })
        .map(|n| n > 0)
    }

    // --- meta ------------------------------------------------------------------------

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
        })?;
        Ok(())
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>, CatalogError> {
        self.run(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// A setting of one tenant (on its bound repository).
    pub fn set_tenant_meta(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                &format!(
                    "INSERT OR REPLACE INTO tenant_meta (tenant, repo, key, value) \
                     VALUES (?1, {}, ?2, ?3)",
                    scope("?1")
                ),
                params![tenant, key, value],
            )
        })?;
        Ok(())
    }

    pub fn tenant_meta(&self, tenant: &str, key: &str) -> Result<Option<String>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT value FROM tenant_meta WHERE tenant = ?1 AND repo = {} AND key = ?2",
                    scope("?1")
                ),
                [tenant, key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The last cron slot run (or queued) for a tenant's job kind (`tenant_meta`
    /// `last_slot:KIND`).
    pub fn last_slot(
        &self,
        kind: JobKind,
        tenant: &str,
    ) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let key = last_slot_key(kind);
        match self.tenant_meta(tenant, &key)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| self.invalid(format!("meta {key} = {s:?} is not a time: {e}"))),
        }
    }

    pub fn set_last_slot(
        &self,
        kind: JobKind,
        tenant: &str,
        slot: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.set_tenant_meta(tenant, &last_slot_key(kind), &ts(slot))
    }
}
