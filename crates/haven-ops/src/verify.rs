//! `tenant verify`: a restore drill. Every component of a recovery point is restored into
//! a scratch target next to its source (a throwaway database on the same PostgreSQL
//! server, a throwaway Redis or etcd server, a temporary folder), validated like a real
//! restore, and removed. Components run side by side like a restore's
//! ([`crate::side_by_side`]). The report carries the measured restore time of each
//! component.
//!
//! A `command` component without a `verify-restore` command cannot be restored into a
//! scratch target; its stream is read back in full instead (every chunk decrypted and
//! verified), and the report says that the restore itself was not exercised.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;

use haven_repo::restore::restore_to_writer;
use haven_repo::IndexedRepository;
use haven_sources::SourceError;

use crate::backup::{describe, open_tenant_view, Observer};
use crate::config::{ComponentConfig, Config};
use crate::point::{ComponentRecord, PointChoice, RecoveryPoint};
use crate::report::{Check, ComponentReport, Outcome, TenantReport};
use crate::restore::{resolve_point, restore_stream, validate_stream};
use crate::run::RunEnv;
use crate::side_by_side::{self, effective_parallelism};
use crate::OpsError;

/// Verify a recovery point of `tenant` by restoring it into scratch targets, components
/// side by side (the default parallelism).
pub fn verify_tenant(
    config: &Config,
    tenant: &str,
    choice: &PointChoice,
    lock_wait: std::time::Duration,
    observer: &Observer,
) -> Result<TenantReport, OpsError> {
    verify_tenant_parallel(config, tenant, choice, lock_wait, None, observer)
}

/// [`verify_tenant`] with at most `parallelism` components at once (`None`: the default).
pub fn verify_tenant_parallel(
    config: &Config,
    tenant: &str,
    choice: &PointChoice,
    lock_wait: std::time::Duration,
    parallelism: Option<usize>,
    observer: &Observer,
) -> Result<TenantReport, OpsError> {
    let t = config.tenant(tenant)?;
    let started = Utc::now();
    let clock = Instant::now();
    let (view, _lock) = open_tenant_view(
        config,
        t,
        &format!("tenant verify {tenant}"),
        lock_wait,
        crate::location::SiteAccess::Reading,
    )?;
    let point = resolve_point(&view, tenant, choice, &[])?;
    let repo = &view.repo;
    let env = RunEnv::new(config, observer);
    let jobs: Vec<(&str, &ComponentRecord, Option<&ComponentConfig>)> = point
        .components
        .iter()
        .map(|(name, record)| (name.as_str(), record, t.components.get(name)))
        .collect();
    let parallelism = effective_parallelism(parallelism, jobs.len());
    let components = side_by_side::run(
        &jobs,
        |j| j.0,
        parallelism,
        clock,
        observer,
        |&(name, record, source_cfg)| {
            let Some(source_cfg) = source_cfg else {
                return verify_stream_only(
                    repo,
                    name,
                    record,
                    "the component is no longer in the config",
                );
            };
            observer.line(&format!(
                "{name} ({}): restoring into a scratch target",
                record.kind
            ));
            let report = verify_component(repo, &env, &point, name, record, source_cfg);
            observer.line(&format!(
                "{name}: {:?} in {:.2} s (validation {:.2} s)",
                report.outcome, report.restore_seconds, report.validate_seconds
            ));
            report
        },
    );
    observer.set_component(None);
    Ok(TenantReport {
        action: "verify".into(),
        tenant: tenant.to_string(),
        into: "scratch targets".into(),
        point: point.id.clone(),
        point_time: point.started,
        started,
        seconds: clock.elapsed().as_secs_f64(),
        parallelism,
        components,
    })
}

fn verify_component(
    repo: &IndexedRepository,
    env: &RunEnv,
    point: &RecoveryPoint,
    name: &str,
    record: &ComponentRecord,
    source_cfg: &ComponentConfig,
) -> ComponentReport {
    let work = match env.work(&format!("{name}-verify")) {
        Ok(w) => w,
        Err(e) => return failed(name, record, String::new(), e.to_string()),
    };
    if let ComponentConfig::Files(_) = source_cfg {
        let targets: Vec<PathBuf> = (1..=record.paths.len())
            .map(|i| work.path().join(format!("path-{i}")))
            .collect();
        let target_cfg = ComponentConfig::Files(crate::config::FilesConfig {
            paths: targets,
            ..Default::default()
        });
        return crate::restore::restore_component(
            repo,
            env,
            point,
            name,
            record,
            &target_cfg,
            false,
            &haven_sources::postgres::physical::RecoveryTarget::Immediate,
        );
    }
    if let (ComponentConfig::Postgres(pg), true) = (source_cfg, crate::pitr::is_base_backup(record))
    {
        return verify_physical(repo, env, point, name, record, pg, work.path());
    }
    let source = env.component(source_cfg).expect("a stream kind");
    let scratch = match source.scratch(work.path()) {
        Ok(s) => s,
        Err(SourceError::Unsupported(why)) => return verify_stream_only(repo, name, record, &why),
        Err(e) => {
            return failed(
                name,
                record,
                describe(source_cfg),
                format!("creating a scratch target: {e}"),
            )
        }
    };
    let target = scratch.component();
    let mut report = failed(
        name,
        record,
        format!("scratch: {}", target.describe()),
        String::new(),
    );
    report.error = None;
    crate::restore::timed(
        &mut report,
        || restore_stream(repo, env, name, record, target, false),
        || validate_stream(record, target),
    );
    report
}

/// A base backup restored as backed up (to its consistency point) into a throwaway
/// server on a free loopback port in the work folder, checked, then stopped.
fn verify_physical(
    repo: &IndexedRepository,
    env: &RunEnv,
    point: &RecoveryPoint,
    name: &str,
    record: &ComponentRecord,
    source: &haven_sources::postgres::PostgresConfig,
    work: &std::path::Path,
) -> ComponentReport {
    let source = haven_sources::postgres::PostgresComponent::new(source.clone());
    let scratch = match source.physical_scratch(work.join("data")) {
        Ok(s) => s,
        Err(e) => {
            return failed(
                name,
                record,
                describe(&ComponentConfig::Postgres(source.config.clone())),
                format!("creating a scratch target: {e}"),
            )
        }
    };
    let target_cfg = ComponentConfig::Postgres(scratch.config.clone());
    let mut report = crate::restore::restore_component(
        repo,
        env,
        point,
        name,
        record,
        &target_cfg,
        false,
        &haven_sources::postgres::physical::RecoveryTarget::Immediate,
    );
    report.target = format!("scratch: {}", report.target);
    if report.outcome == Outcome::Passed {
        // The pages the replay wrote, checked on the throwaway server.
        let (passed, detail) = match scratch.amcheck_sample() {
            Ok(detail) => (true, detail),
            Err(e) => (false, e.to_string()),
        };
        report.checks.push(crate::report::Check {
            name: "pg_amcheck".into(),
            passed,
            detail,
        });
        if !passed {
            report.outcome = Outcome::ChecksFailed;
        }
    }
    if let Err(e) = scratch.stop_physical() {
        report.checks.push(crate::report::Check {
            name: "cleanup".into(),
            passed: false,
            detail: format!("the scratch server did not stop: {e}"),
        });
        report.outcome = Outcome::ChecksFailed;
    }
    report
}

fn failed(name: &str, record: &ComponentRecord, target: String, error: String) -> ComponentReport {
    let mut report = ComponentReport::new(name, &record.kind, target, Outcome::Failed);
    report.error = Some(error);
    report
}

/// Read the component's stream back in full (every chunk decrypted and verified).
fn verify_stream_only(
    repo: &IndexedRepository,
    name: &str,
    record: &ComponentRecord,
    why: &str,
) -> ComponentReport {
    let mut report = failed(name, record, "(read back only)".into(), String::new());
    report.error = None;
    let clock = Instant::now();
    let read = record
        .snapshot
        .as_deref()
        .ok_or_else(|| "no snapshot recorded".to_string())
        .and_then(|id| repo.repo.find_snapshot(id).map_err(|e| e.to_string()))
        .and_then(|entry| {
            restore_to_writer(repo, &entry.snapshot, None, &mut std::io::sink())
                .map_err(|e| e.to_string())
        });
    report.restore_seconds = clock.elapsed().as_secs_f64();
    match read {
        Ok(bytes) => {
            report.bytes = bytes;
            report.checks.push(Check {
                name: "stream".into(),
                passed: true,
                detail: format!(
                    "all {bytes} bytes read back and verified; restore not exercised: {why}"
                ),
            });
            report.outcome = Outcome::Passed;
        }
        Err(e) => report.error = Some(format!("reading the stream back failed: {e}")),
    }
    report
}
