//! Readiness: how well each tenant could be recovered now, from what the catalog has
//! measured, not from what the config promises. Shown by `haven dr report`, the API
//! (`GET /api/v1/readiness`) and the dashboard; the daemon alerts on it.
//!
//! ```text
//! catalog: points ──newest complete point──────────────┐
//!          verifies (passed) + dr_runs (drill succeeded)│──newest proven point──> verified RPO
//!          dr_runs (drill) ──last drill: outcome, measured seconds──> predicted RTO
//!          verifies ──bytes / seconds (restore speed)──> predicted RTO before any drill
//! config:  tenants' components, runbooks ──drift──┘
//!                                 └──> TenantReadiness { problems, ready }
//! ```
//! Main types: [`TenantReadiness`], [`RunbookReadiness`], [`PredictedRto`], [`Drift`];
//! [`report`] computes them, [`open_catalog`] opens the daemon's catalog for the CLI.
//! The run summaries the API serves ([`DrRunSummary`], [`DrRunDetail`]) are read from the
//! catalog's v3 tables by `catalog/readiness.rs`.
//!
//! The verified RPO (now − the time of the newest proven point) is reported but is not a
//! problem by itself: most plans verify less often than they back up; the tenant's RPO
//! alert watches the newest point.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError, DrRunFilter};
use crate::config::Config;

/// How many passed verifies the restore speed is averaged over.
const SPEED_SAMPLES: usize = 10;

/// How a point was proven restorable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProofKind {
    /// A drill of a runbook succeeded with it.
    Drill,
    /// A verify (restore into scratch targets, validated) passed with it.
    Verify,
}

/// A recovery point restored and validated: which, when it was taken, how and when it
/// was proven.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proof {
    pub point: String,
    /// When the point was taken (what the verified RPO counts from).
    pub point_time: DateTime<Utc>,
    pub kind: ProofKind,
    /// The drill's run id, or the verify's job id (empty for a verify run by hand).
    pub by: String,
    pub time: DateTime<Utc>,
}

/// The newest complete point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointRef {
    pub id: String,
    pub time: DateTime<Utc>,
    pub bytes: u64,
    pub components: Vec<String>,
}

/// Where a predicted RTO comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "basis", rename_all = "kebab-case")]
pub enum PredictedRto {
    /// The last succeeded drill's measured total (start to its last step's end).
    Drill {
        seconds: f64,
        run: String,
        runbook: String,
    },
    /// No drill yet: the newest point's size divided by the restore speed measured by
    /// past verifies (restore and validation of the whole tenant).
    RestoreSpeed {
        seconds: f64,
        bytes: u64,
        bytes_per_second: f64,
        samples: usize,
    },
}

impl PredictedRto {
    pub fn seconds(&self) -> f64 {
        match self {
            PredictedRto::Drill { seconds, .. } | PredictedRto::RestoreSpeed { seconds, .. } => {
                *seconds
            }
        }
    }

    /// "412 s (last drill dr-…)" or "95 s (1.2 GiB at 13 MiB/s, 3 verifies)".
    pub fn describe(&self) -> String {
        match self {
            PredictedRto::Drill { seconds, run, .. } => {
                format!("{seconds:.0} s (measured by drill {run})")
            }
            PredictedRto::RestoreSpeed {
                seconds,
                bytes,
                bytes_per_second,
                samples,
            } => format!(
                "{seconds:.0} s (estimate: {} at {}/s measured by {samples} verif{}; no drill yet)",
                crate::report::human_bytes(*bytes),
                crate::report::human_bytes(*bytes_per_second as u64),
                if *samples == 1 { "y" } else { "ies" }
            ),
        }
    }
}

/// A difference between the config and what a recovery would meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `component-not-in-point`, `runbook-tenant-missing`, `runbook-component-missing`.
    pub kind: String,
    /// The runbook concerned, if any.
    pub runbook: Option<String>,
    pub detail: String,
}

/// The last drill of a runbook (or of any runbook of the tenant).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSummary {
    pub run: String,
    pub runbook: String,
    /// `running`, `waiting`, `succeeded`, `failed`, `aborted`.
    pub state: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// The measured RTO.
    pub seconds: Option<f64>,
    pub point: Option<String>,
    pub error: Option<String>,
}

/// One runbook restoring from the tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunbookReadiness {
    pub name: String,
    pub into: String,
    pub rto_target_seconds: Option<u64>,
    pub predicted_rto: Option<PredictedRto>,
    /// Predicted RTO above the runbook's `rto`.
    pub rto_exceeded: bool,
    pub last_drill: Option<DrillSummary>,
    /// The runbook's `drill-schedule`, if any.
    pub drill_schedule: Option<String>,
}

/// How ready one tenant is to be recovered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantReadiness {
    pub tenant: String,
    pub newest_point: Option<PointRef>,
    /// The newest point a passed verify or a succeeded drill restored.
    pub newest_verified: Option<Proof>,
    /// now − the newest verified point's time: the RPO a recovery is proven to meet.
    pub verified_rpo_seconds: Option<f64>,
    pub rpo_target_seconds: u64,
    /// The tenant-wide prediction: the last drill of any of its runbooks, else the
    /// estimate from the restore speed.
    pub predicted_rto: Option<PredictedRto>,
    pub last_drill: Option<DrillSummary>,
    pub runbooks: Vec<RunbookReadiness>,
    pub drift: Vec<Drift>,
    /// One line each: why the tenant is not ready (empty: ready).
    pub problems: Vec<String>,
    pub ready: bool,
}

/// A run as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrRunSummary {
    pub id: String,
    pub runbook: String,
    pub tenant: String,
    /// The target tenant ('' for a drill: scratch targets).
    pub into: String,
    /// `run`, `drill`, `dry-run`.
    pub mode: String,
    pub point: Option<String>,
    pub state: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// The measured RTO: start to the last step's end.
    pub seconds: Option<f64>,
    pub actor: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrStepSummary {
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `interrupted`.
    pub state: String,
    pub attempts: u32,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub seconds: Option<f64>,
    pub outputs: serde_json::Value,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrAuditLine {
    pub time: DateTime<Utc>,
    pub step: Option<String>,
    pub event: String,
    /// Secrets redacted (by the engine, before it is stored).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrRunDetail {
    #[serde(flatten)]
    pub run: DrRunSummary,
    pub steps: Vec<DrStepSummary>,
    pub audit: Vec<DrAuditLine>,
}

/// What readiness needs of a runbook: the tenant it restores from, the tenant it restores
/// into, its RTO target, and the components of `into` its steps name.
#[derive(Debug, Clone, PartialEq)]
pub struct RunbookFacts {
    pub name: String,
    pub tenant: String,
    pub into: String,
    pub rto: Option<Duration>,
    pub drill_schedule: Option<crate::schedule::Schedule>,
    /// (step, component of `into`) pairs the steps name (a `sql` step's component, a
    /// `restore` step's list).
    pub components: Vec<(String, String)>,
    /// A restore step restores every component of the point (no `components` list).
    pub restores_all: bool,
}

/// The runbooks of the config, as readiness sees them.
pub fn runbook_facts(config: &Config) -> Vec<RunbookFacts> {
    use crate::runbook::StepKind;
    config
        .runbooks
        .values()
        .map(|rb| {
            let mut components = Vec::new();
            let mut restores_all = false;
            for step in &rb.steps {
                match &step.kind {
                    StepKind::Sql(sql) => {
                        components.push((step.name.clone(), sql.component.clone()))
                    }
                    StepKind::Restore(r) => match &r.components {
                        Some(list) => {
                            components.extend(list.iter().map(|c| (step.name.clone(), c.clone())))
                        }
                        None => restores_all = true,
                    },
                    _ => {}
                }
            }
            RunbookFacts {
                name: rb.name.clone(),
                tenant: rb.tenant.clone(),
                into: rb.into.clone(),
                rto: rb.rto,
                drill_schedule: rb.drill_schedule.clone(),
                components,
                restores_all,
            }
        })
        .collect()
}

/// Open the daemon's catalog (`[daemon] state-dir`) and bind every tenant to its
/// repository, as the daemon does, for a reader outside the daemon (`haven dr report`).
pub fn open_catalog(config: &Config) -> Result<Catalog, CatalogError> {
    let catalog = Catalog::open(&config.daemon.state_dir.join("catalog.sqlite"))?;
    let repos: Vec<(String, String)> = config
        .tenants
        .values()
        .map(|t| {
            let url = &config.repository_of(t).url;
            (t.name.clone(), crate::location::canonical_location(url))
        })
        .collect();
    catalog.bind_repositories(repos.iter().map(|(t, r)| (t.as_str(), r.as_str())))?;
    Ok(catalog)
}

fn drill_of(r: DrRunSummary) -> DrillSummary {
    DrillSummary {
        run: r.id,
        runbook: r.runbook,
        state: r.state,
        started: r.started,
        finished: r.finished,
        seconds: r.seconds,
        point: r.point,
        error: r.error,
    }
}

/// The newest drills of `tenant` (of `runbook` when given), newest first.
fn drills(
    catalog: &Catalog,
    tenant: &str,
    runbook: Option<&str>,
    limit: usize,
) -> Result<Vec<DrillSummary>, CatalogError> {
    Ok(catalog
        .dr_run_summaries(&DrRunFilter {
            tenant: Some(tenant.to_string()),
            runbook: runbook.map(str::to_string),
            mode: Some("drill".into()),
            limit,
            ..Default::default()
        })?
        .into_iter()
        .map(drill_of)
        .collect())
}

/// The last drill that succeeded with a measured time (a failed drill may have stopped
/// early: its time predicts nothing; the failure itself is a problem of the report).
fn measured(drills: &[DrillSummary]) -> Option<&DrillSummary> {
    drills
        .iter()
        .find(|d| d.state == "succeeded" && d.seconds.is_some())
}

fn predict(
    drills: &[DrillSummary],
    newest: Option<&PointRef>,
    speed: Option<(f64, usize)>,
) -> Option<PredictedRto> {
    if let Some(d) = measured(drills) {
        return Some(PredictedRto::Drill {
            seconds: d.seconds.unwrap_or_default(),
            run: d.run.clone(),
            runbook: d.runbook.clone(),
        });
    }
    let (bytes_per_second, samples) = speed?;
    let bytes = newest?.bytes;
    Some(PredictedRto::RestoreSpeed {
        seconds: bytes as f64 / bytes_per_second,
        bytes,
        bytes_per_second,
        samples,
    })
}

/// Bytes per second over the samples (total bytes / total seconds), and how many.
fn restore_speed(samples: &[(u64, f64)]) -> Option<(f64, usize)> {
    let bytes: u64 = samples.iter().map(|s| s.0).sum();
    let seconds: f64 = samples.iter().map(|s| s.1).sum();
    (bytes > 0 && seconds > 0.0).then(|| (bytes as f64 / seconds, samples.len()))
}

/// Readiness of every tenant of the config (or of `only`), at `now`.
pub fn report(
    config: &Config,
    catalog: &Catalog,
    now: DateTime<Utc>,
    only: Option<&str>,
) -> Result<Vec<TenantReadiness>, crate::OpsError> {
    report_with(config, catalog, &runbook_facts(config), now, only)
}

/// [`report`] with the runbooks given.
pub fn report_with(
    config: &Config,
    catalog: &Catalog,
    runbooks: &[RunbookFacts],
    now: DateTime<Utc>,
    only: Option<&str>,
) -> Result<Vec<TenantReadiness>, crate::OpsError> {
    let names: Vec<&String> = match only {
        Some(t) => vec![&config.tenant(t)?.name],
        None => config.tenants.keys().collect(),
    };
    let mut out = Vec::new();
    for name in names {
        out.push(tenant_readiness(config, catalog, runbooks, name, now)?);
    }
    Ok(out)
}

/// Drift of the runbooks: tenants they name that are not in the config, and components a
/// restore of the whole point would not put anywhere (the source has them, `into` has
/// not) or that a step names and `into` has not. (The config refuses most of these at
/// load; the report says so again for a config edited since, and a tenant grown since
/// its runbook was written.)
pub fn runbook_drift(config: &Config, runbooks: &[RunbookFacts]) -> BTreeMap<String, Vec<Drift>> {
    let mut out: BTreeMap<String, Vec<Drift>> = BTreeMap::new();
    for rb in runbooks {
        let mut drift = Vec::new();
        let (from, into) = (config.tenants.get(&rb.tenant), config.tenants.get(&rb.into));
        for (role, name, t) in [("tenant", &rb.tenant, from), ("into", &rb.into, into)] {
            if t.is_none() && !name.is_empty() {
                drift.push(Drift {
                    kind: "runbook-tenant-missing".into(),
                    runbook: Some(rb.name.clone()),
                    detail: format!(
                        "runbook {} names {role} {name}, which is not in the config",
                        rb.name
                    ),
                });
            }
        }
        if let (Some(from), Some(into), true) = (from, into, rb.restores_all) {
            for c in from.components.keys() {
                if !into.components.contains_key(c) {
                    drift.push(Drift {
                        kind: "runbook-component-missing".into(),
                        runbook: Some(rb.name.clone()),
                        detail: format!(
                            "runbook {}: tenant {} has no component {c} of {}: it would not be restored",
                            rb.name, rb.into, rb.tenant
                        ),
                    });
                }
            }
        }
        if let Some(into) = into {
            for (step, c) in &rb.components {
                if !into.components.contains_key(c) {
                    drift.push(Drift {
                        kind: "runbook-component-missing".into(),
                        runbook: Some(rb.name.clone()),
                        detail: format!(
                            "runbook {} step {step} names component {c}, which tenant {} does not have",
                            rb.name, rb.into
                        ),
                    });
                }
            }
        }
        out.entry(rb.tenant.clone()).or_default().extend(drift);
    }
    out
}

fn tenant_readiness(
    config: &Config,
    catalog: &Catalog,
    runbooks: &[RunbookFacts],
    name: &str,
    now: DateTime<Utc>,
) -> Result<TenantReadiness, crate::OpsError> {
    let tenant = config.tenant(name)?;
    let newest_point = catalog.latest_complete_point(name)?.map(|p| PointRef {
        id: p.id,
        time: p.started,
        bytes: p.bytes,
        components: p.components.keys().cloned().collect(),
    });
    let newest_verified = catalog.newest_proven_point(name)?;
    let verified_rpo_seconds = newest_verified
        .as_ref()
        .map(|p| (now - p.point_time).num_milliseconds().max(0) as f64 / 1000.0);
    let speed = restore_speed(&catalog.restore_samples(name, SPEED_SAMPLES)?);
    let all_drills = drills(catalog, name, None, 20)?;
    let predicted_rto = predict(&all_drills, newest_point.as_ref(), speed);

    let mut drift = Vec::new();
    if let Some(p) = &newest_point {
        for c in tenant.components.keys() {
            if !p.components.contains(c) {
                drift.push(Drift {
                    kind: "component-not-in-point".into(),
                    runbook: None,
                    detail: format!(
                        "component {c} is configured but not in the newest point {} (added since? run a backup)",
                        p.id
                    ),
                });
            }
        }
    }
    drift.extend(
        runbook_drift(config, runbooks)
            .remove(name)
            .unwrap_or_default(),
    );

    let mut rbs = Vec::new();
    for rb in runbooks.iter().filter(|r| r.tenant == name) {
        let own = drills(catalog, name, Some(&rb.name), 20)?;
        let predicted = predict(&own, newest_point.as_ref(), speed);
        let rto_exceeded = match (&predicted, rb.rto) {
            (Some(p), Some(target)) => p.seconds() > target.as_secs_f64(),
            _ => false,
        };
        rbs.push(RunbookReadiness {
            name: rb.name.clone(),
            into: rb.into.clone(),
            rto_target_seconds: rb.rto.map(|d| d.as_secs()),
            predicted_rto: predicted,
            rto_exceeded,
            last_drill: own.into_iter().next(),
            drill_schedule: rb.drill_schedule.as_ref().map(|s| s.to_string()),
        });
    }

    let last_drill = all_drills.into_iter().next();
    let mut problems = Vec::new();
    match &newest_point {
        None => problems.push("no complete recovery point".to_string()),
        Some(_) if newest_verified.is_none() => problems
            .push("no recovery point proven by a passed verify or a succeeded drill".to_string()),
        Some(_) => {}
    }
    if let Some(d) = &last_drill {
        if matches!(d.state.as_str(), "failed" | "aborted") {
            problems.push(format!(
                "the last drill ({}, runbook {}) {}{}",
                d.run,
                d.runbook,
                d.state,
                d.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    for rb in rbs.iter().filter(|r| r.rto_exceeded) {
        if let (Some(p), Some(t)) = (&rb.predicted_rto, rb.rto_target_seconds) {
            problems.push(format!(
                "runbook {}: predicted RTO {} exceeds its rto of {t} s",
                rb.name,
                p.describe()
            ));
        }
    }
    problems.extend(drift.iter().map(|d| d.detail.clone()));
    Ok(TenantReadiness {
        tenant: name.to_string(),
        newest_point,
        newest_verified,
        verified_rpo_seconds,
        rpo_target_seconds: tenant.plan.rpo.as_secs(),
        predicted_rto,
        last_drill,
        runbooks: rbs,
        drift,
        ready: problems.is_empty(),
        problems,
    })
}
