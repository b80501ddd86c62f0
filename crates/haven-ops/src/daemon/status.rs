//! [`DaemonView`] over the catalog and the scheduler's in-memory state: what the HTTP API,
//! `/metrics` and the dashboard show.

use std::sync::Arc;

use super::view::{
    ComponentStatus, DaemonView, FailureSummary, JobDetail, JobKind, JobProgress, JobSummary,
    LogLine, MetricsSnapshot, PointSummary, ReloadReport, RunbookMode, TenantMetrics, TenantStatus,
    VerifySummary, ViewError,
};
use super::{scheduler, watch, Shared};
use crate::catalog::DrRunFilter;
use crate::catalog::{Job, JobFilter, JobId, JobStatus, Trigger};
use crate::point::PointStatus;
use crate::readiness::{DrRunDetail, DrRunSummary, TenantReadiness};

pub(super) struct StatusView(pub Arc<Shared>);

fn unavailable(e: impl std::fmt::Display) -> ViewError {
    ViewError::Unavailable(format!("the catalog cannot be read: {e}"))
}

impl StatusView {
    fn summary(&self, job: &Job) -> JobSummary {
        let state = self.0.state.lock().expect("daemon state");
        let live = state
            .running
            .values()
            .find(|r| r.id == job.id.0)
            .map(|r| r.snapshot());
        JobSummary {
            id: job.id.0,
            kind: job.kind,
            tenant: job.tenant.clone(),
            trigger: job.trigger.as_str().to_string(),
            status: job.status.as_str().to_string(),
            late: job.late,
            scheduled_for: job.scheduled_for,
            started: job.started,
            finished: job.finished,
            attempts: job.attempts,
            error: job.error.clone(),
            point: job.point.clone(),
            progress: live.unwrap_or(JobProgress {
                bytes_done: job.progress_done,
                bytes_total: job.progress_total,
                component: job.component.clone(),
            }),
        }
    }

    fn jobs_of(&self, tenant: Option<&str>, kind: Option<JobKind>, limit: usize) -> Vec<Job> {
        self.0
            .catalog
            .jobs(&JobFilter {
                tenant: tenant.map(str::to_string),
                kind,
                limit,
                ..Default::default()
            })
            .unwrap_or_default()
    }

    fn components(&self, tenant: &str) -> Vec<ComponentStatus> {
        let now = self.0.clock.now();
        // After a failover: the components of the servers that serve the tenant now.
        let config = self.0.config();
        let t = match crate::failover::effective_tenant(&config, &self.0.catalog, tenant) {
            Ok(t) => t,
            Err(_) => match config.tenants.get(tenant) {
                Some(t) => t.clone(),
                None => return vec![],
            },
        };
        let points = self.0.catalog.points(tenant).unwrap_or_default();
        watch::effective_rpo(&self.0, tenant, now)
            .into_iter()
            .map(|(name, last, seconds, breached)| {
                let newest = points
                    .iter()
                    .rev()
                    .filter(|p| p.status == PointStatus::Complete)
                    .find_map(|p| p.components.get(&name));
                ComponentStatus {
                    kind: t
                        .components
                        .get(&name)
                        .map(|c| c.kind().to_string())
                        .unwrap_or_default(),
                    name,
                    last_success: last,
                    effective_rpo_seconds: Some(seconds),
                    rpo_breached: breached,
                    last_duration_seconds: newest.map(|c| c.seconds),
                    last_bytes_added: newest.map(|c| c.bytes_added),
                }
            })
            .collect()
    }
}

impl DaemonView for StatusView {
    fn reload(&self) -> Result<ReloadReport, ViewError> {
        super::reload::reload(&self.0).map_err(|e| match e {
            crate::OpsError::Config(_) => {
                ViewError::Refused(format!("{e}; the running config stays in force"))
            }
            e => ViewError::Unavailable(format!("reloading the config: {e}")),
        })
    }

    fn tenants(&self) -> Vec<TenantStatus> {
        self.0
            .config()
            .tenants
            .keys()
            .filter_map(|t| self.tenant(t).ok())
            .collect()
    }

    fn tenant(&self, name: &str) -> Result<TenantStatus, ViewError> {
        let config = self.0.config();
        let t = config
            .tenants
            .get(name)
            .ok_or_else(|| ViewError::UnknownTenant(name.to_string()))?;
        let components = self.components(name);
        let worst = components
            .iter()
            .filter_map(|c| c.effective_rpo_seconds)
            .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))));
        let backups = self.jobs_of(Some(name), Some(JobKind::Backup), 20);
        let last_backup = backups
            .iter()
            .find(|j| j.status != JobStatus::Queued && j.status != JobStatus::Running)
            .map(|j| self.summary(j));
        let recent_failures = self
            .jobs_of(Some(name), None, 50)
            .iter()
            .filter(|j| j.status == JobStatus::Failed)
            .take(5)
            .map(|j| FailureSummary {
                time: j.finished.unwrap_or(j.created),
                job: j.id.0,
                kind: j.kind,
                error: j.error.clone().unwrap_or_default(),
            })
            .collect();
        let last_verify = self
            .0
            .catalog
            .latest_verify(name)
            .map_err(unavailable)?
            .map(|v| VerifySummary {
                time: v.time,
                point: v.point,
                passed: v.passed,
                restore_seconds: v.restore_seconds,
            });
        let (running, next_run) = {
            let state = self.0.state.lock().expect("daemon state");
            (
                state.running.get(name).map(|r| r.id),
                state
                    .next
                    .get(&(name.to_string(), JobKind::Backup))
                    .copied(),
            )
        };
        let running = match running {
            Some(id) => self
                .0
                .catalog
                .job(JobId(id))
                .ok()
                .flatten()
                .map(|j| self.summary(&j)),
            None => None,
        };
        Ok(TenantStatus {
            name: name.to_string(),
            schedule: t.plan.schedule.clone(),
            next_run,
            rpo_target_seconds: t.plan.rpo.as_secs(),
            effective_rpo_seconds: worst,
            rpo_breached: components.iter().any(|c| c.rpo_breached),
            last_backup,
            last_verify,
            recent_failures,
            running,
            components,
        })
    }

    fn points(&self, tenant: &str) -> Result<Vec<PointSummary>, ViewError> {
        if !self.0.config().tenants.contains_key(tenant) {
            return Err(ViewError::UnknownTenant(tenant.to_string()));
        }
        let points = self.0.catalog.points(tenant).map_err(unavailable)?;
        Ok(points
            .into_iter()
            .rev()
            .map(|p| PointSummary {
                failures: p
                    .components
                    .iter()
                    .filter_map(|(n, c)| c.error.as_ref().map(|e| format!("{n}: {e}")))
                    .collect(),
                id: p.id,
                started: p.started,
                finished: p.finished,
                status: match p.status {
                    PointStatus::Complete => "complete".into(),
                    PointStatus::Failed => "failed".into(),
                },
                components: p.components.keys().cloned().collect(),
                bytes: p.bytes,
                bytes_added: p.bytes_added,
                seconds: p.seconds,
            })
            .collect())
    }

    fn jobs(&self, tenant: Option<&str>, limit: usize) -> Vec<JobSummary> {
        self.jobs_of(tenant, None, limit.clamp(1, 1000))
            .iter()
            .map(|j| self.summary(j))
            .collect()
    }

    fn job(&self, id: i64) -> Result<JobDetail, ViewError> {
        let job = self
            .0
            .catalog
            .job(JobId(id))
            .map_err(unavailable)?
            .ok_or(ViewError::UnknownJob(id))?;
        let log = self
            .0
            .catalog
            .job_log(JobId(id), 0)
            .map_err(unavailable)?
            .into_iter()
            .map(|l| LogLine {
                time: l.time,
                line: l.line,
            })
            .collect();
        Ok(JobDetail {
            summary: self.summary(&job),
            log,
        })
    }

    fn trigger(&self, tenant: &str, kind: JobKind) -> Result<i64, ViewError> {
        if self.0.stopping() {
            return Err(ViewError::Unavailable("the daemon is stopping".into()));
        }
        if kind == JobKind::Drill {
            return Err(ViewError::BadRequest(
                "drills run per runbook: POST /api/v1/runbooks/{name}/drill".into(),
            ));
        }
        {
            let state = self.0.state.lock().expect("daemon state");
            let busy = state
                .running
                .get(tenant)
                .filter(|r| r.kind == kind)
                .map(|r| (r.id, "running"))
                .or_else(|| {
                    state
                        .queue
                        .iter()
                        .find(|q| q.tenant == tenant && q.kind == kind)
                        .map(|q| (q.id, "queued"))
                });
            if let Some((id, what)) = busy {
                return Err(ViewError::Conflict(format!(
                    "a {} of tenant {tenant} is already {what} as job {id}",
                    scheduler::kind_name(kind)
                )));
            }
        }
        scheduler::enqueue(&self.0, tenant, kind, Trigger::Manual, None, false)
    }

    fn metrics(&self) -> MetricsSnapshot {
        let (queue_depth, running_jobs) = {
            let state = self.0.state.lock().expect("daemon state");
            (state.queue.len() as u64, state.running.len() as u64)
        };
        let config = self.0.config();
        let tenants = config
            .tenants
            .iter()
            .map(|(name, t)| {
                let counts = self.0.catalog.job_counts(name).unwrap_or_default();
                TenantMetrics {
                    tenant: name.clone(),
                    rpo_target_seconds: t.plan.rpo.as_secs(),
                    backup_failures_total: counts.backup_failures,
                    backup_retries_total: counts.backup_retries
                        + super::worker::retries(&self.0, name),
                    verify_failures_total: counts.verify_failures,
                    components: self.components(name),
                }
            })
            .collect();
        MetricsSnapshot {
            tenants,
            queue_depth,
            running_jobs,
        }
    }

    fn readiness(&self) -> Result<Vec<TenantReadiness>, ViewError> {
        let now = self.0.clock.now();
        crate::readiness::report(&self.0.config(), &self.0.catalog, now, None).map_err(unavailable)
    }

    fn dr_runs(&self, limit: usize) -> Result<Vec<DrRunSummary>, ViewError> {
        self.0
            .catalog
            .dr_run_summaries(&DrRunFilter {
                limit: limit.clamp(1, 1000),
                ..Default::default()
            })
            .map_err(unavailable)
    }

    fn dr_run(&self, id: &str) -> Result<DrRunDetail, ViewError> {
        self.0
            .catalog
            .dr_run_detail(id)
            .map_err(unavailable)?
            .ok_or_else(|| ViewError::UnknownRun(id.to_string()))
    }

    fn start_runbook(
        &self,
        runbook: &str,
        mode: RunbookMode,
        point: Option<String>,
    ) -> Result<String, ViewError> {
        super::drills::start(&self.0, runbook, mode, point)
    }
}
