//! One job on its own thread: a tenant backup (with per-component retries), a verify
//! drill, or retention. Its log lines and result go to the catalog; its progress is
//! readable while it runs; its outcome raises or resolves alerts.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::view::{JobKind, JobProgress};
use super::{scheduler::kind_name, watch, Queued, Shared};
use crate::backup::{backup_tenant_with_retries, Observer, RetryRun, Unreachable};
use crate::catalog::{JobId, JobOutcome, JobStatus, PointSource, VerifyRecord};
use crate::point::{PointChoice, PointStatus};

/// A job being run, as the status view sees it.
#[derive(Clone)]
pub(crate) struct Running {
    pub id: i64,
    pub kind: JobKind,
    pub progress: Arc<haven_repo::progress::Progress>,
    pub component: Arc<Mutex<Option<String>>>,
}

impl Running {
    pub fn new(id: i64, kind: JobKind) -> Running {
        Running {
            id,
            kind,
            progress: Arc::default(),
            component: Arc::default(),
        }
    }

    pub fn snapshot(&self) -> JobProgress {
        JobProgress {
            bytes_done: self.progress.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.progress.bytes_total.load(Ordering::Relaxed),
            component: self.component.lock().expect("component").clone(),
        }
    }
}

pub(super) fn spawn(shared: Arc<Shared>, job: Queued, running: Running) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("haven-job-{}", job.id))
        .spawn(move || {
            run(&shared, &job, &running);
            shared
                .state
                .lock()
                .expect("daemon state")
                .running
                .remove(&job.tenant);
            shared.notify();
        })
        .expect("spawning a job thread")
}

/// The catalog marks a job abandoned at shutdown.
pub(super) fn mark_interrupted(shared: &Shared, id: i64) {
    let outcome = JobOutcome {
        status: JobStatus::Interrupted,
        ..JobOutcome::failed(
            "the daemon stopped while the job ran; it is retried at the next start",
        )
    };
    if let Err(e) = shared.catalog.finish_job(JobId(id), &outcome) {
        eprintln!("haven: warning: recording job {id} as interrupted: {e}");
    }
}

fn run(shared: &Arc<Shared>, job: &Queued, running: &Running) {
    let catalog = shared.catalog.clone();
    let id = JobId(job.id);
    if let Err(e) = catalog.start_job(id) {
        eprintln!("haven: warning: job {id}: {e}");
    }
    let log = move |line: &str| {
        let _ = catalog.append_log(id, line);
    };
    let mut observer = Observer::new(log);
    observer.progress = running.progress.clone();
    observer.component = running.component.clone();
    // Every program the job runs is stopped at its deadline (`[daemon] job-timeout`).
    observer.deadline = Some(std::time::Instant::now() + shared.config().daemon.job_timeout);
    observer.line(&format!(
        "{} of tenant {} started",
        kind_name(job.kind),
        job.tenant
    ));
    let outcome = match job.kind {
        JobKind::Backup => backup(shared, &job.tenant, &mut observer),
        JobKind::Verify => verify(shared, &job.tenant, job.id, &observer),
        JobKind::Retention => retention(shared, &job.tenant, &observer),
        JobKind::Drill => super::drills::run_job(shared, job, &observer),
    };
    observer.line(&format!(
        "finished: {}{}",
        outcome.status.as_str(),
        outcome
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    ));
    if shared.abandoned.load(Ordering::SeqCst) {
        // `stop` gave up on this job and marked it interrupted: record nothing more.
        return;
    }
    if shared.stopping() && outcome.status != JobStatus::Succeeded {
        // Stopped mid-way (e.g. a retry wait cut short): retried at the next start.
        mark_interrupted(shared, job.id);
        return;
    }
    if let Err(e) = shared.catalog.finish_job(id, &outcome) {
        eprintln!("haven: warning: recording the end of job {id}: {e}");
    }
}

fn backup(shared: &Arc<Shared>, tenant: &str, observer: &mut Observer) -> JobOutcome {
    // The config as it is when the job starts (a reload applies to the next job).
    let config = shared.config();
    // After a failover the tenant is backed up from the servers that now serve it.
    let t = match crate::failover::effective_tenant(&config, &shared.catalog, tenant) {
        Ok(t) => t,
        Err(e) => {
            watch::backup_failed(shared, tenant, &e.to_string(), shared.clock.now());
            return JobOutcome::failed(e.to_string());
        }
    };
    let served_by = served_by(shared, tenant);
    if let Some(by) = &served_by {
        observer.line(&format!(
            "tenant {tenant} is served by the servers of {by} (failover): backing them up"
        ));
    }
    let s = shared.clone();
    let name = tenant.to_string();
    observer.on_unreachable = Some(Box::new(move |found: &[Unreachable]| {
        watch::source_down(&s, &name, found, s.clock.now());
    }));
    let observer = &*observer;
    // A failover during the run: the dead servers are not tried again.
    let moved = Moved::new(served_by);
    let give_up = || {
        moved.check(shared, tenant).map(|by| {
            format!(
                "tenant {tenant} is now served by {}; its next backup reads from there",
                by.as_deref().unwrap_or("its own servers")
            )
        })
    };
    let sleep = |d: std::time::Duration| {
        shared.clock.sleep(d, &|| {
            shared.stopping() || moved.check(shared, tenant).is_some()
        })
    };
    let run = RetryRun {
        retries: t.plan.retries,
        sleep: &sleep,
        give_up: &give_up,
    };
    let result = backup_tenant_with_retries(&config, &t, shared.lock_wait, observer, &run);
    let now = shared.clock.now();
    let moved_to = moved.check(shared, tenant);
    match result {
        Ok(point) => {
            if let Err(e) = shared.catalog.record_point(&point, PointSource::Recorded) {
                observer.line(&format!("warning: recording the point in the catalog: {e}"));
            }
            let (bytes, added) = point.sizes();
            let attempts: BTreeMap<&String, u32> = point
                .components
                .iter()
                .map(|(n, c)| (n, c.attempts))
                .collect();
            let failures = point.failures();
            let retries: u32 = point
                .components
                .values()
                .map(|c| c.attempts.saturating_sub(1))
                .sum();
            if retries > 0 {
                add_retries(shared, tenant, retries);
            }
            let reached: Vec<&str> = point
                .components
                .iter()
                .filter(|(_, c)| c.status == crate::point::ComponentStatus::Ok)
                .map(|(n, _)| n.as_str())
                .collect();
            watch::sources_reached(shared, tenant, &reached, now);
            if point.status == PointStatus::Complete {
                watch::backup_succeeded(shared, tenant, now);
            } else if moved_to.is_some() {
                // Not a failure of the new servers: back them up now.
                observer.line("the tenant moved to other servers during this run: a backup from them is queued");
                let _ = super::scheduler::enqueue(
                    shared,
                    tenant,
                    JobKind::Backup,
                    crate::catalog::Trigger::Manual,
                    None,
                    false,
                );
            } else {
                watch::backup_failed(shared, tenant, &failures.join("; "), now);
            }
            JobOutcome {
                status: if point.status == PointStatus::Complete {
                    JobStatus::Succeeded
                } else {
                    JobStatus::Failed
                },
                error: (!failures.is_empty()).then(|| failures.join("; ")),
                point: Some(point.id.clone()),
                bytes: Some(bytes),
                bytes_added: Some(added),
                details: Some(serde_json::json!({ "attempts": attempts })),
            }
        }
        Err(e) => {
            watch::backup_failed(shared, tenant, &e.to_string(), now);
            JobOutcome::failed(e.to_string())
        }
    }
}

/// The tenant whose servers serve `tenant` after a failover, if any.
fn served_by(shared: &Shared, tenant: &str) -> Option<String> {
    crate::failover::served_by(&shared.catalog, tenant)
        .ok()
        .flatten()
        .map(|a| a.served_by)
}

/// Notices a failover (or fail-back) of the tenant while its backup runs, reading the
/// catalog at most every 2 seconds (retry waits poll it).
struct Moved {
    at_start: Option<String>,
    last: Mutex<(Option<std::time::Instant>, Option<Option<String>>)>,
}

impl Moved {
    fn new(at_start: Option<String>) -> Moved {
        Moved {
            at_start,
            last: Mutex::new((None, None)),
        }
    }

    /// `Some(now served by)` once the tenant's servers changed since the run started.
    fn check(&self, shared: &Shared, tenant: &str) -> Option<Option<String>> {
        let mut last = self.last.lock().expect("failover check");
        if last.1.is_some() {
            return last.1.clone();
        }
        let now = std::time::Instant::now();
        if last
            .0
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(2))
        {
            return None;
        }
        last.0 = Some(now);
        let current = served_by(shared, tenant);
        if current != self.at_start {
            last.1 = Some(current);
        }
        last.1.clone()
    }
}

fn verify(shared: &Shared, tenant: &str, job_id: i64, observer: &Observer) -> JobOutcome {
    let result = crate::verify_tenant(
        &shared.config(),
        tenant,
        &PointChoice::Latest,
        shared.lock_wait,
        observer,
    );
    let now = shared.clock.now();
    match result {
        Ok(report) => {
            let record = VerifyRecord {
                job: Some(JobId(job_id)),
                tenant: tenant.to_string(),
                point: report.point.clone(),
                time: now,
                passed: report.passed(),
                restore_seconds: report.seconds,
                report: serde_json::to_value(&report).unwrap_or_default(),
            };
            if let Err(e) = shared.catalog.record_verify(&record) {
                observer.line(&format!(
                    "warning: recording the verify in the catalog: {e}"
                ));
            }
            let passed = report.passed();
            if passed {
                watch::verify_passed(shared, tenant, now);
            } else {
                watch::verify_failed(shared, tenant, &report.render(), now);
            }
            let mut outcome = if passed {
                JobOutcome::succeeded()
            } else {
                JobOutcome::failed("a component failed validation; see the log")
            };
            outcome.point = Some(report.point.clone());
            outcome
        }
        Err(e) => {
            watch::verify_failed(shared, tenant, &e.to_string(), now);
            JobOutcome::failed(e.to_string())
        }
    }
}

fn retention(shared: &Shared, tenant: &str, observer: &Observer) -> JobOutcome {
    match crate::retention::apply_retention(
        &shared.config(),
        tenant,
        shared.lock_wait,
        true,
        observer,
    ) {
        Ok(report) => {
            if !report.removed.is_empty() {
                if let Err(e) = refresh_points(shared, tenant) {
                    observer.line(&format!("warning: refreshing the catalog's points: {e}"));
                }
            }
            watch::retention_succeeded(shared, tenant, shared.clock.now());
            JobOutcome::succeeded()
        }
        Err(e) => {
            // A retention that keeps failing lets the repository grow without bound.
            watch::retention_failed(shared, tenant, &e.to_string(), shared.clock.now());
            JobOutcome::failed(e.to_string())
        }
    }
}

/// Count component retries per tenant (tenant meta `retries`), for `/metrics`.
fn add_retries(shared: &Shared, tenant: &str, n: u32) {
    let before = retries(shared, tenant);
    let _ = shared
        .catalog
        .set_tenant_meta(tenant, "retries", &(before + n as u64).to_string());
}

/// Component retries counted so far for `tenant`.
pub(super) fn retries(shared: &Shared, tenant: &str) -> u64 {
    shared
        .catalog
        .tenant_meta(tenant, "retries")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Re-read a tenant's points from the repository into the catalog.
pub(super) fn refresh_points(shared: &Shared, tenant: &str) -> Result<usize, crate::OpsError> {
    let config = shared.config();
    let t = config.tenant(tenant)?;
    let (repo, _) = crate::open_repository_as(
        config.repository_of(t),
        false,
        crate::location::SiteAccess::Reading,
    )?;
    let view = haven_repo::read::ReadView::open(repo)?;
    Ok(shared.catalog.rebuild_points(&view, tenant)?.points)
}
