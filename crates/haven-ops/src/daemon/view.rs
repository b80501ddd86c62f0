//! What the HTTP API, the metrics endpoint and the dashboard read from (and ask of) the
//! running daemon: [`DaemonView`] and the plain, serialisable status types it returns.
//! The daemon implements it over its catalog and scheduler state; the API crate knows
//! nothing else of the daemon.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::readiness::{
    DrAuditLine, DrRunDetail, DrRunSummary, DrStepSummary, TenantReadiness,
};

/// Kinds of jobs the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Backup,
    Verify,
    Retention,
    /// A drill of one runbook (`drill-schedule`), through the daemon's `DrRunner`.
    Drill,
}

/// What `POST /api/v1/runbooks/{name}/run|drill` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunbookMode {
    Run,
    DryRun,
    Drill,
}

/// Progress of a running job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobProgress {
    pub bytes_done: u64,
    /// 0 while unknown.
    pub bytes_total: u64,
    /// The component being worked on, if any.
    pub component: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: i64,
    pub kind: JobKind,
    pub tenant: String,
    /// `schedule`, `manual`, `catch-up`, `retry`.
    pub trigger: String,
    /// `queued`, `running`, `succeeded`, `failed`, `interrupted`.
    pub status: String,
    /// A run of a slot that was missed while the daemon was down.
    pub late: bool,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub error: Option<String>,
    /// The recovery point made (backup) or checked (verify).
    pub point: Option<String>,
    pub progress: JobProgress,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub log: Vec<LogLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub name: String,
    pub kind: String,
    /// Time of the newest complete recovery point holding this component.
    pub last_success: Option<DateTime<Utc>>,
    /// now − last_success; `None` when there never was one.
    pub effective_rpo_seconds: Option<f64>,
    /// Effective RPO above the tenant's target (or no recovery point at all).
    pub rpo_breached: bool,
    /// Seconds the last successful backup of this component took.
    pub last_duration_seconds: Option<f64>,
    /// Bytes newly stored by the last successful backup of this component.
    pub last_bytes_added: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub time: DateTime<Utc>,
    pub point: String,
    pub passed: bool,
    /// The measured restore time of the whole tenant (RTO).
    pub restore_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureSummary {
    pub time: DateTime<Utc>,
    pub job: i64,
    pub kind: JobKind,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub name: String,
    /// The cron expression (UTC).
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub rpo_target_seconds: u64,
    /// The worst component's effective RPO.
    pub effective_rpo_seconds: Option<f64>,
    pub rpo_breached: bool,
    pub last_backup: Option<JobSummary>,
    pub last_verify: Option<VerifySummary>,
    pub recent_failures: Vec<FailureSummary>,
    /// The job running for this tenant now, if any.
    pub running: Option<JobSummary>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PointSummary {
    pub id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// `complete` or `failed`.
    pub status: String,
    pub components: Vec<String>,
    pub bytes: u64,
    pub bytes_added: u64,
    pub seconds: f64,
    pub failures: Vec<String>,
}

/// Counters for `/metrics`, per tenant and component where it applies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsSnapshot {
    pub tenants: Vec<TenantMetrics>,
    /// Jobs waiting for a run slot.
    pub queue_depth: u64,
    pub running_jobs: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantMetrics {
    pub tenant: String,
    pub rpo_target_seconds: u64,
    pub backup_failures_total: u64,
    pub backup_retries_total: u64,
    pub verify_failures_total: u64,
    pub components: Vec<ComponentStatus>,
}

/// What a config reload changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadReport {
    /// The config file read again.
    pub file: String,
    /// Tenants in the config now.
    pub tenants: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Tenants whose settings (components, plan, repository) changed.
    pub changed: Vec<String>,
    /// Changes that take a restart, kept as they were.
    pub notes: Vec<String>,
}

/// Why a request to the daemon was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("no tenant {0:?} in the config")]
    UnknownTenant(String),
    #[error("no job {0}")]
    UnknownJob(i64),
    #[error("no runbook {0:?} in the config")]
    UnknownRunbook(String),
    #[error("no disaster-recovery run {0:?}")]
    UnknownRun(String),
    /// The request cannot be done as asked (the API answers 400).
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with what the daemon is doing (e.g. that job is already
    /// queued or running for the tenant); the API answers 409.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A new config that does not load (file, line, key): the running one stays; the
    /// API answers 422.
    #[error("{0}")]
    Refused(String),
}

/// The daemon as the API sees it. Every method is cheap (reads the catalog and in-memory
/// state); `trigger` only queues a job and returns its id.
pub trait DaemonView: Send + Sync {
    fn tenants(&self) -> Vec<TenantStatus>;
    fn tenant(&self, name: &str) -> Result<TenantStatus, ViewError>;
    fn points(&self, tenant: &str) -> Result<Vec<PointSummary>, ViewError>;
    fn jobs(&self, tenant: Option<&str>, limit: usize) -> Vec<JobSummary>;
    fn job(&self, id: i64) -> Result<JobDetail, ViewError>;
    /// Queue a backup or verify of `tenant` now; returns the job id.
    fn trigger(&self, tenant: &str, kind: JobKind) -> Result<i64, ViewError>;
    fn metrics(&self) -> MetricsSnapshot;
    /// Readiness of every tenant (newest and proven points, predicted RTO, drills, drift).
    fn readiness(&self) -> Result<Vec<TenantReadiness>, ViewError>;
    /// Disaster-recovery runs and drills, newest first.
    fn dr_runs(&self, limit: usize) -> Result<Vec<DrRunSummary>, ViewError>;
    /// One run with its steps and audit log.
    fn dr_run(&self, id: &str) -> Result<DrRunDetail, ViewError>;
    /// Start a run, dry run or drill of `runbook` now (on its own thread, not queued
    /// behind the tenant's jobs); returns the run id once the run is in the catalog.
    fn start_runbook(
        &self,
        runbook: &str,
        mode: RunbookMode,
        point: Option<String>,
    ) -> Result<String, ViewError>;
    /// Read the config file again and run with it ([`ReloadReport`]); a config that does
    /// not load is refused ([`ViewError::Refused`]) and the running one stays.
    fn reload(&self) -> Result<ReloadReport, ViewError> {
        Err(ViewError::Unavailable(
            "this daemon cannot reload its config; restart it".into(),
        ))
    }
}
