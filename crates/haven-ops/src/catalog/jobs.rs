//! Jobs, their attempts and log lines.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{
    json_at, kind_str, opt_time_at, opt_u64_at, parse_kind, scope, text_at, time_at, ts, Catalog,
    CatalogError, JobId, JobKind, JobStatus, Trigger,
};

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub tenant: String,
    pub trigger: Trigger,
    /// The cron slot it runs for (none for manual jobs).
    pub scheduled_for: Option<DateTime<Utc>>,
    pub late: bool,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub tenant: String,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub late: bool,
    pub status: JobStatus,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub error: Option<String>,
    /// The recovery point made (backup) or checked (verify).
    pub point: Option<String>,
    pub bytes: Option<u64>,
    pub bytes_added: Option<u64>,
    /// From the first start to the finish.
    pub seconds: Option<f64>,
    pub progress_done: u64,
    /// 0 while unknown.
    pub progress_total: u64,
    /// The component being worked on.
    pub component: Option<String>,
}

/// How a job ended ([`Catalog::finish_job`]).
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// `Succeeded`, `Failed` or `Interrupted`.
    pub status: JobStatus,
    pub error: Option<String>,
    pub point: Option<String>,
    pub bytes: Option<u64>,
    pub bytes_added: Option<u64>,
    /// Kept on the open attempt (e.g. errors per component).
    pub details: Option<serde_json::Value>,
}

impl JobOutcome {
    pub fn succeeded() -> Self {
        JobOutcome {
            status: JobStatus::Succeeded,
            error: None,
            point: None,
            bytes: None,
            bytes_added: None,
            details: None,
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        JobOutcome {
            status: JobStatus::Failed,
            error: Some(error.into()),
            ..JobOutcome::succeeded()
        }
    }
}

/// One try of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub job: JobId,
    pub n: u32,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub status: JobStatus,
    pub error: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// One line of a job's log; `seq` orders lines and lets a reader ask for newer ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub seq: i64,
    pub time: DateTime<Utc>,
    pub line: String,
}

/// Which jobs [`Catalog::jobs`] returns (newest first). Default: all, at most 100.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub tenant: Option<String>,
    pub kind: Option<JobKind>,
    pub status: Option<JobStatus>,
    pub limit: usize,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            tenant: None,
            kind: None,
            status: None,
            limit: 100,
        }
    }
}

/// Failure and retry counts of a tenant's jobs (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobCounts {
    pub backup_failures: u64,
    /// Attempts beyond the first, over all backup jobs.
    pub backup_retries: u64,
    pub verify_failures: u64,
}

const JOB_COLUMNS: &str = "id, kind, tenant, triggered_by, scheduled_for, late, status, created, \
     started, finished, attempts, error, point, bytes, bytes_added, seconds, progress_done, \
     progress_total, component";

fn job_from(row: &Row) -> rusqlite::Result<Job> {
    Ok(Job {
        id: JobId(row.get(0)?),
        kind: text_at(row, 1, parse_kind)?,
        tenant: row.get(2)?,
        trigger: text_at(row, 3, Trigger::parse)?,
        scheduled_for: opt_time_at(row, 4)?,
        late: row.get(5)?,
        status: text_at(row, 6, JobStatus::parse)?,
        created: time_at(row, 7)?,
        started: opt_time_at(row, 8)?,
        finished: opt_time_at(row, 9)?,
        attempts: row.get(10)?,
        error: row.get(11)?,
        point: row.get(12)?,
        bytes: opt_u64_at(row, 13)?,
        bytes_added: opt_u64_at(row, 14)?,
        seconds: row.get(15)?,
        progress_done: row.get::<_, i64>(16)? as u64,
        progress_total: row.get::<_, i64>(17)? as u64,
        component: row.get(18)?,
    })
}

impl Catalog {
    /// Queue a job.
    pub fn create_job(&self, job: &NewJob) -> Result<JobId, CatalogError> {
        let now = self.now();
        self.run(|c| {
            c.execute(
                &format!(
                    "INSERT INTO jobs (kind, tenant, repo, triggered_by, scheduled_for, late, \
                     status, created) VALUES (?1, ?2, {}, ?3, ?4, ?5, 'queued', ?6)",
                    scope("?2")
                ),
                params![
                    kind_str(job.kind),
                    job.tenant,
                    job.trigger.as_str(),
                    job.scheduled_for.map(ts),
                    job.late,
                    now
                ],
            )?;
            Ok(JobId(c.last_insert_rowid()))
        })
    }

    /// Start an attempt of a job (the first, or a retry): the job becomes `running`.
    /// Returns the attempt's number (1-based).
    pub fn start_job(&self, id: JobId) -> Result<u32, CatalogError> {
        let now = self.now();
        let n = self.run(|c| {
            let tx = c.transaction()?;
            let n: Option<u32> = tx
                .query_row(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                     started = coalesce(started, ?2) \
                     WHERE id = ?1 AND status IN ('queued', 'running') RETURNING attempts",
                    params![id.0, now],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(n) = n {
                // An attempt left open is closed: it is over once the next begins.
                tx.execute(
                    "UPDATE attempts SET status = 'failed', finished = ?2, \
                     error = coalesce(error, 'superseded by the next attempt') \
                     WHERE job_id = ?1 AND finished IS NULL",
                    params![id.0, now],
                )?;
                tx.execute(
                    "INSERT INTO attempts (job_id, n, started, status) VALUES (?1, ?2, ?3, 'running')",
                    params![id.0, n, now],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })?;
        n.ok_or_else(|| self.not_startable(id))
    }

    fn not_startable(&self, id: JobId) -> CatalogError {
        match self.job(id) {
            Ok(Some(job)) => self.invalid(format!(
                "job {id} is {} and cannot be started again",
                job.status
            )),
            Ok(None) => self.invalid(format!("no job {id}")),
            Err(e) => e,
        }
    }

    /// Close the running attempt of a job that will be retried (the job stays
    /// `running`); `details` is e.g. the errors per component.
    pub fn finish_attempt(
        &self,
        id: JobId,
        status: JobStatus,
        error: Option<&str>,
        details: Option<&serde_json::Value>,
    ) -> Result<(), CatalogError> {
        let now = self.now();
        let details = details.map(|d| d.to_string());
        self.run(|c| {
            c.execute(
                "UPDATE attempts SET status = ?2, error = ?3, details = ?4, finished = ?5 \
                 WHERE job_id = ?1 AND finished IS NULL",
                params![id.0, status.as_str(), error, details, now],
            )
        })?;
        Ok(())
    }

    /// Record progress of a running job: bytes done, bytes in total (0 when unknown), and
    /// the component being worked on.
    pub fn update_progress(
        &self,
        id: JobId,
        done: u64,
        total: u64,
        component: Option<&str>,
    ) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                "UPDATE jobs SET progress_done = ?2, progress_total = ?3, component = ?4 WHERE id = ?1",
                params![id.0, done as i64, total as i64, component],
            )
        })?;
        Ok(())
    }

    /// Append a line to a job's log.
    pub fn append_log(&self, id: JobId, line: &str) -> Result<(), CatalogError> {
        let now = self.now();
        self.run(|c| {
            c.execute(
                "INSERT INTO job_log (job_id, time, line) VALUES (?1, ?2, ?3)",
                params![id.0, now, line],
            )
        })?;
        Ok(())
    }

    /// A job's log lines with `seq` above `after` (0: all), oldest first.
    pub fn job_log(&self, id: JobId, after: i64) -> Result<Vec<LogLine>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT id, time, line FROM job_log WHERE job_id = ?1 AND id > ?2 ORDER BY id",
            )?;
            let rows = st.query_map(params![id.0, after], |r| {
                Ok(LogLine {
                    seq: r.get(0)?,
                    time: time_at(r, 1)?,
                    line: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// End a job: its status (succeeded, failed or interrupted), error and results; the
    /// open attempt ends with the same status. `seconds` is measured from the first start.
    pub fn finish_job(&self, id: JobId, outcome: &JobOutcome) -> Result<(), CatalogError> {
        if matches!(outcome.status, JobStatus::Queued | JobStatus::Running) {
            return Err(self.invalid(format!("job {id} cannot finish as {}", outcome.status)));
        }
        let now = (self.clock)();
        let details = outcome.details.as_ref().map(|d| d.to_string());
        let changed = self.run(|c| {
            let tx = c.transaction()?;
            let started: Option<Option<String>> = tx
                .query_row("SELECT started FROM jobs WHERE id = ?1", [id.0], |r| r.get(0))
                .optional()?;
            let Some(started) = started else {
                return Ok(false);
            };
            let seconds = started
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|s| (now - s.with_timezone(&Utc)).as_seconds_f64().max(0.0));
            tx.execute(
                "UPDATE jobs SET status = ?2, finished = ?3, error = ?4, point = coalesce(?5, point), \
                 bytes = ?6, bytes_added = ?7, seconds = ?8, component = NULL WHERE id = ?1",
                params![
                    id.0,
                    outcome.status.as_str(),
                    ts(now),
                    outcome.error,
                    outcome.point,
                    outcome.bytes.map(|b| b as i64),
                    outcome.bytes_added.map(|b| b as i64),
                    seconds
                ],
            )?;
            tx.execute(
                "UPDATE attempts SET status = ?2, error = ?3, details = coalesce(?4, details), \
                 finished = ?5 WHERE job_id = ?1 AND finished IS NULL",
                params![id.0, outcome.status.as_str(), outcome.error, details, ts(now)],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        if changed {
            Ok(())
        } else {
            Err(self.invalid(format!("no job {id}")))
        }
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND repo = {}",
                    scope("jobs.tenant")
                ),
                [id.0],
                job_from,
            )
            .optional()
        })
    }

    /// Jobs matching `filter`, newest first.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR tenant = ?1) \
                 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR status = ?3) \
                 AND repo = {} ORDER BY id DESC LIMIT ?4",
                scope("jobs.tenant")
            ))?;
            let rows = st.query_map(
                params![
                    filter.tenant,
                    filter.kind.map(kind_str),
                    filter.status.map(JobStatus::as_str),
                    filter.limit.min(i64::MAX as usize) as i64
                ],
                job_from,
            )?;
            rows.collect()
        })
    }

    /// A job's attempts, first first.
    pub fn attempts(&self, id: JobId) -> Result<Vec<Attempt>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT job_id, n, started, finished, status, error, details FROM attempts \
                 WHERE job_id = ?1 ORDER BY n",
            )?;
            let rows = st.query_map([id.0], |r| {
                Ok(Attempt {
                    job: JobId(r.get(0)?),
                    n: r.get(1)?,
                    started: time_at(r, 2)?,
                    finished: opt_time_at(r, 3)?,
                    status: text_at(r, 4, JobStatus::parse)?,
                    error: r.get(5)?,
                    details: match r.get::<_, Option<String>>(6)? {
                        Some(_) => Some(json_at(r, 6)?),
                        None => None,
                    },
                })
            })?;
            rows.collect()
        })
    }

    /// On daemon start: every job a stopped or killed daemon left `running` becomes
    /// `interrupted` (and its open attempt too). Queued jobs are left for the daemon to
    /// decide. Returns the ids.
    pub fn mark_running_as_interrupted(&self) -> Result<Vec<JobId>, CatalogError> {
        let now = self.now();
        let why = "the daemon stopped while the job was running";
        self.run(|c| {
            let tx = c.transaction()?;
            let ids = {
                let mut st = tx.prepare(&format!(
                    "UPDATE jobs SET status = 'interrupted', finished = ?1, \
                     error = coalesce(error, ?2), component = NULL \
                     WHERE status = 'running' AND repo = {} RETURNING id",
                    scope("jobs.tenant")
                ))?;
                let ids = st.query_map(params![now, why], |r| r.get(0).map(JobId))?;
                ids.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE attempts SET status = 'interrupted', finished = ?2, error = ?3 \
                     WHERE job_id = ?1 AND finished IS NULL",
                    params![id.0, now, why],
                )?;
            }
            tx.commit()?;
            let mut ids = ids;
            ids.sort();
            Ok(ids)
        })
    }

    /// Failure and retry counts of a tenant's jobs.
    pub fn job_counts(&self, tenant: &str) -> Result<JobCounts, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT \
                   coalesce(sum(kind = 'backup' AND status = 'failed'), 0), \
                   coalesce(sum(CASE WHEN kind = 'backup' AND attempts > 1 THEN attempts - 1 ELSE 0 END), 0), \
                   coalesce(sum(kind = 'verify' AND status = 'failed'), 0) \
                 FROM jobs WHERE tenant = ?1 AND repo = {}",
                    scope("?1")
                ),
                [tenant],
                |r| {
                    Ok(JobCounts {
                        backup_failures: r.get::<_, i64>(0)? as u64,
                        backup_retries: r.get::<_, i64>(1)? as u64,
                        verify_failures: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
    }

    /// Forget finished jobs (with their logs and attempts) that finished before `before`.
    /// Returns how many.
    pub fn prune_jobs(&self, before: DateTime<Utc>) -> Result<usize, CatalogError> {
        self.run(|c| {
            c.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?1 \
                 AND status NOT IN ('queued', 'running')",
                [ts(before)],
            )
        })
    }
}
