//! `tenant restore`: a recovery point back into the components of a target tenant (the
//! same tenant, or another one declared in the config: other hosts, ports, databases),
//! each followed by validation: its fingerprint compared with the recorded one, and a
//! health probe. Components are restored side by side ([`crate::side_by_side`], at most
//! `parallelism` at once), each validated on its own thread as soon as it is restored.
//! The report carries each component's measured restore time and interval.
//!
//! ```text
//! choose point ──> components (or --component), `parallelism` at a time:
//!   target = the component of the same name in --into (skipped when it has none)
//!   stream kinds: snapshot ──restore_to_writer──> StreamComponent::restore (target)
//!   files:        snapshot paths ──> target paths, by position
//!   validate: fingerprint(target) == recorded, probe(target)
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use haven_repo::read::ReadView;
use haven_repo::restore::restore_to_writer;
use haven_repo::IndexedRepository;
use haven_sources::postgres::physical::{BaseFacts, RecoveryTarget};
use haven_sources::{Fingerprint, RestoreOptions, SourceError, StreamComponent};

use crate::backup::{describe, open_tenant_view, Observer};
use crate::config::{ComponentConfig, Config};
use crate::point::{choose_point, list_points, ComponentRecord, PointChoice, RecoveryPoint};
use crate::report::{Check, ComponentReport, Outcome, TenantReport};
use crate::run::RunEnv;
use crate::side_by_side::{self, effective_parallelism};
use crate::OpsError;

/// What to restore, and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub tenant: String,
    pub point: PointChoice,
    /// Only these components (empty: all of the point).
    pub components: Vec<String>,
    /// The target tenant (default: the tenant itself).
    pub into: Option<String>,
    /// Overwrite targets that hold data.
    pub force: bool,
    pub lock_wait: Duration,
    /// Components restored at once (default: all of them, up to
    /// [`crate::side_by_side::DEFAULT_PARALLELISM`]).
    pub parallelism: Option<usize>,
    /// How far physical PostgreSQL components replay WAL after their base backup
    /// (default: `Immediate`, the point as it was backed up). Other kinds restore the
    /// point as it is.
    pub recovery: RecoveryTarget,
}

/// Load the tenant's points and pick the one requested; checks the component filter.
pub(crate) fn resolve_point(
    view: &ReadView,
    tenant: &str,
    choice: &PointChoice,
    only: &[String],
) -> Result<RecoveryPoint, OpsError> {
    let (points, _damaged) = list_points(view, tenant)?;
    let point = choose_point(&points, tenant, choice)?;
    if let Some(missing) = only.iter().find(|c| !point.components.contains_key(*c)) {
        return Err(OpsError::Invalid(format!(
            "recovery point {} of tenant {tenant} has no component {missing:?} (it has: {})",
            point.id,
            point
                .components
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(point)
}

/// Restore a recovery point into the target tenant and validate every component.
pub fn restore_tenant(
    config: &Config,
    req: &RestoreRequest,
    observer: &Observer,
) -> Result<TenantReport, OpsError> {
    let source = config.tenant(&req.tenant)?;
    let into_name = req.into.clone().unwrap_or_else(|| req.tenant.clone());
    let target = config.tenant(&into_name)?;
    if let Some(c) = req
        .components
        .iter()
        .find(|c| !target.components.contains_key(*c))
    {
        return Err(OpsError::Invalid(format!(
            "tenant {into_name} has no component {c:?} to restore into; declare [tenants.{into_name}.components.{c}] in {}",
            config.file.display()
        )));
    }
    let started = Utc::now();
    let clock = Instant::now();
    let (view, _lock) = open_tenant_view(
        config,
        source,
        &format!("tenant restore {}", req.tenant),
        req.lock_wait,
        crate::location::SiteAccess::Reading,
    )?;
    let point = resolve_point(&view, &req.tenant, &req.point, &req.components)
        .map_err(|e| with_windows(e, &view, req))?;
    let repo = &view.repo;
    let env = RunEnv::new(config, observer);
    let mut skipped_ones = vec![];
    let mut jobs = vec![];
    for (name, record) in &point.components {
        if !req.components.is_empty() && !req.components.contains(name) {
            continue;
        }
        match target.components.get(name) {
            Some(target_cfg) => jobs.push((
                name.as_str(),
                record.clone(),
                target_cfg,
                req.recovery.clone(),
            )),
            None => skipped_ones.push(skipped(name, record, &into_name)),
        }
    }
    choose_bases(&view, req, &mut jobs)?;
    let parallelism = effective_parallelism(req.parallelism, jobs.len());
    let restored = side_by_side::run(
        &jobs,
        |j| j.0,
        parallelism,
        clock,
        observer,
        |(name, record, target_cfg, recovery)| {
            observer.line(&format!(
                "{name} ({}): restoring into {}",
                record.kind,
                describe(target_cfg)
            ));
            let report = restore_component(
                repo, &env, &point, name, record, target_cfg, req.force, recovery,
            );
            observer.line(&format!(
                "{name}: {:?} in {:.2} s (validation {:.2} s)",
                report.outcome, report.restore_seconds, report.validate_seconds
            ));
            report
        },
    );
    observer.set_component(None);
    let mut restored = restored;
    if let PointChoice::At(at) = req.point {
        report_moments(&mut restored, &jobs, &point, at, observer);
    }
    let mut components: Vec<ComponentReport> = restored.into_iter().chain(skipped_ones).collect();
    components.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(TenantReport {
        action: "restore".into(),
        tenant: req.tenant.clone(),
        into: into_name,
        point: point.id.clone(),
        point_time: point.started,
        started,
        seconds: clock.elapsed().as_secs_f64(),
        parallelism,
        components,
    })
}

/// `--at T` restores each component to its newest state at or before T: physical
/// PostgreSQL components replay to T itself, the others are as their point backed them
/// up. Each restored component gets a `moment` check saying which moment it holds and
/// how far before T that is; the skew between components is said once.
fn report_moments(
    reports: &mut [ComponentReport],
    jobs: &[(&str, ComponentRecord, &ComponentConfig, RecoveryTarget)],
    point: &RecoveryPoint,
    at: DateTime<Utc>,
    observer: &Observer,
) {
    let mut moments = vec![];
    for report in reports.iter_mut() {
        let Some((_, record, _, recovery)) = jobs.iter().find(|j| j.0 == report.name) else {
            continue;
        };
        let replayed =
            crate::pitr::is_base_backup(record) && matches!(recovery, RecoveryTarget::Time(_));
        let (moment, how) = if replayed {
            (at, "replayed from WAL to the target".to_string())
        } else {
            (
                point.started,
                format!("as recovery point {} backed it up", point.id),
            )
        };
        let before = (at - moment).num_milliseconds() as f64 / 1000.0;
        report.checks.push(Check {
            name: "moment".into(),
            passed: true,
            detail: format!(
                "state as of {} ({how}): {before:.1} s before the target {}",
                moment.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        });
        moments.push((moment, report.name.clone()));
    }
    moments.sort();
    if let (Some((oldest, a)), Some((newest, b))) = (moments.first(), moments.last()) {
        if moments.len() > 1 {
            observer.line(&format!(
                "skew between components: {:.1} s ({a} as of {}, {b} as of {})",
                (*newest - *oldest).num_milliseconds() as f64 / 1000.0,
                oldest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                newest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
        }
    }
}

/// A point that cannot be chosen for a time target: the physical components' restorable
/// windows say which moments can.
fn with_windows(e: OpsError, view: &ReadView, req: &RestoreRequest) -> OpsError {
    if !matches!(req.recovery, RecoveryTarget::Time(_)) {
        return e;
    }
    let Ok((points, _)) = list_points(view, &req.tenant) else {
        return e;
    };
    let mut names: Vec<&String> = points
        .iter()
        .flat_map(|p| p.point.components.iter())
        .filter(|(n, r)| {
            crate::pitr::is_base_backup(r)
                && (req.components.is_empty() || req.components.contains(n))
        })
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return e;
    }
    let windows: Vec<String> = names
        .iter()
        .map(|n| {
            let archived = crate::wal::list_wal(&view.snapshots, &req.tenant, n);
            format!(
                "{n}: {}",
                crate::pitr::window(&points, &archived, n).describe()
            )
        })
        .collect();
    OpsError::Invalid(format!("{e}; restorable window of {}", windows.join("; ")))
}

/// Physical PostgreSQL components restored to another moment than the point's own take
/// the base backup that suits the target (perhaps of another point) and the target
/// adjusted to the archive ([`crate::pitr::choose_base`]).
fn choose_bases(
    view: &ReadView,
    req: &RestoreRequest,
    jobs: &mut [(&str, ComponentRecord, &ComponentConfig, RecoveryTarget)],
) -> Result<(), OpsError> {
    if req.recovery == RecoveryTarget::Immediate
        || !jobs.iter().any(|j| crate::pitr::is_base_backup(&j.1))
    {
        return Ok(());
    }
    let (points, _) = list_points(view, &req.tenant)?;
    let at = match req.point {
        PointChoice::At(t) => Some(t),
        _ => None,
    };
    for (name, record, _, recovery) in jobs.iter_mut() {
        if !crate::pitr::is_base_backup(record) {
            continue;
        }
        let archived = crate::wal::list_wal(&view.snapshots, &req.tenant, name);
        let (base, target) =
            crate::pitr::choose_base(&points, &archived, &req.tenant, name, &req.recovery, at)?;
        let facts = base.fingerprint.as_ref().map(BaseFacts::from_fingerprint);
        if let Some(Ok(facts)) = facts {
            crate::pitr::check_reachable(&archived, &facts, &target, &req.tenant, name)?;
        }
        *record = base;
        *recovery = target;
    }
    Ok(())
}

fn skipped(name: &str, record: &ComponentRecord, into: &str) -> ComponentReport {
    let mut report = ComponentReport::new(name, &record.kind, String::new(), Outcome::Skipped);
    report.error = Some(format!("tenant {into} declares no component {name}"));
    report
}

/// Restore one component into `target_cfg` and validate it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_component(
    repo: &IndexedRepository,
    env: &RunEnv,
    point: &RecoveryPoint,
    name: &str,
    record: &ComponentRecord,
    target_cfg: &ComponentConfig,
    force: bool,
    recovery: &RecoveryTarget,
) -> ComponentReport {
    let mut report =
        ComponentReport::new(name, &record.kind, describe(target_cfg), Outcome::Failed);
    if target_cfg.kind() != record.kind {
        report.error = Some(format!(
            "the backup is of kind {} but the target component is of kind {}",
            record.kind,
            target_cfg.kind()
        ));
        return report;
    }
    if crate::pitr::is_base_backup(record) {
        let ComponentConfig::Postgres(pg) = target_cfg else {
            unreachable!("kinds compared above")
        };
        restore_physical_component(
            &mut report,
            repo,
            env,
            &point.tenant,
            name,
            record,
            pg,
            recovery,
            force,
        );
        return report;
    }
    let restore = || match target_cfg {
        ComponentConfig::Files(f) => restore_files_component(repo, point, record, &f.paths, force),
        _ => {
            let target = env.component(target_cfg).expect("a stream kind");
            restore_stream(repo, env, name, record, target.as_ref(), force)
        }
    };
    let validate = || match target_cfg {
        ComponentConfig::Files(f) => vec![fingerprint_check(
            record,
            crate::files::disk_fingerprint(&repo.repo, &f.paths),
        )],
        _ => {
            let target = env.component(target_cfg).expect("a stream kind");
            validate_stream(record, target.as_ref())
        }
    };
    timed(&mut report, restore, validate);
    report
}

/// A physical base backup replayed to `recovery`: the checks are what the restore proved
/// (manifest, WAL, target reached and promoted) and a probe of the promoted server.
#[allow(clippy::too_many_arguments)]
fn restore_physical_component(
    report: &mut ComponentReport,
    repo: &IndexedRepository,
    env: &RunEnv,
    tenant: &str,
    name: &str,
    record: &ComponentRecord,
    target: &haven_sources::postgres::PostgresConfig,
    recovery: &RecoveryTarget,
    force: bool,
) {
    let done = std::cell::RefCell::new(None);
    timed(
        report,
        || {
            let r = crate::pitr::restore_physical(
                repo, env, tenant, name, record, target, recovery, force,
            )?;
            let bytes = r.base_bytes + r.wal_bytes;
            *done.borrow_mut() = Some(r);
            Ok(bytes)
        },
        || {
            let r = done.borrow_mut().take().expect("restored before validated");
            let mut checks: Vec<Check> = r
                .recovered
                .checked
                .iter()
                .map(|c| Check {
                    name: "recovery".into(),
                    passed: true,
                    detail: c.clone(),
                })
                .collect();
            checks.push(Check {
                name: "position".into(),
                passed: true,
                detail: format!(
                    "promoted at {} on timeline {}; {}; {} WAL files ({} bytes) staged in {:.2} s",
                    r.recovered.lsn,
                    r.recovered.timeline,
                    r.recovered
                        .stopped
                        .as_deref()
                        .unwrap_or("the server logged no stop position"),
                    r.wal_files,
                    r.wal_bytes,
                    r.stage_seconds
                ),
            });
            let target = env
                .component(&ComponentConfig::Postgres(target.clone()))
                .expect("a stream kind");
            checks.push(probe_check(target.as_ref()));
            checks
        },
    );
}

/// Restore, then (when that worked) validate, timing each into `report`; the outcome
/// follows from the checks.
pub(crate) fn timed(
    report: &mut ComponentReport,
    restore: impl FnOnce() -> Result<u64, OpsError>,
    validate: impl FnOnce() -> Vec<Check>,
) {
    let clock = Instant::now();
    let restored = restore();
    report.restore_seconds = clock.elapsed().as_secs_f64();
    match restored {
        Ok(bytes) => report.bytes = bytes,
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.error = Some(e.to_string());
            return;
        }
    }
    let clock = Instant::now();
    report.checks = validate();
    report.validate_seconds = clock.elapsed().as_secs_f64();
    report.outcome = if report.checks.iter().all(|c| c.passed) {
        Outcome::Passed
    } else {
        Outcome::ChecksFailed
    };
}

/// The snapshot a component record points at.
fn component_snapshot(
    repo: &IndexedRepository,
    record: &ComponentRecord,
) -> Result<haven_repo::snapshot::Snapshot, OpsError> {
    let id = record
        .snapshot
        .as_deref()
        .ok_or_else(|| OpsError::Invalid("the recovery point records no snapshot for it".into()))?;
    Ok(repo.repo.find_snapshot(id)?.snapshot)
}

pub(crate) fn restore_stream(
    repo: &IndexedRepository,
    env: &RunEnv,
    name: &str,
    record: &ComponentRecord,
    target: &dyn StreamComponent,
    force: bool,
) -> Result<u64, OpsError> {
    let snap = component_snapshot(repo, record)?;
    let work = env.work(&format!("{name}-restore"))?;
    let mut bytes = 0;
    target.restore(
        &mut |w| {
            let n = restore_to_writer(repo, &snap, None, w).map_err(|e| {
                SourceError::failed("reading the backup from the repository", e.to_string())
            })?;
            bytes = n;
            Ok(n)
        },
        work.path(),
        &RestoreOptions { force },
    )?;
    Ok(bytes)
}

fn restore_files_component(
    repo: &IndexedRepository,
    point: &RecoveryPoint,
    record: &ComponentRecord,
    targets: &[PathBuf],
    force: bool,
) -> Result<u64, OpsError> {
    let snap = component_snapshot(repo, record)?;
    let sources: Vec<PathBuf> = record.paths.iter().map(PathBuf::from).collect();
    crate::files::restore_files(repo, &snap, &sources, targets, force, &point.id)
}

/// Compare the recorded fingerprint with the target's.
pub(crate) fn fingerprint_check(
    record: &ComponentRecord,
    actual: Result<Fingerprint, impl std::fmt::Display>,
) -> Check {
    let name = "fingerprint".to_string();
    let Some(want) = &record.fingerprint else {
        return Check {
            name,
            passed: false,
            detail: "the backup recorded no fingerprint".into(),
        };
    };
    match actual {
        Err(e) => Check {
            name,
            passed: false,
            detail: format!("could not be taken: {e}"),
        },
        Ok(_) if want.facts.is_empty() => Check {
            name,
            passed: true,
            detail: format!(
                "not compared: the backup recorded no facts ({})",
                want.summary
            ),
        },
        Ok(got) => {
            let diffs = want.differences(&got, 5);
            if diffs.is_empty() {
                Check {
                    name,
                    passed: true,
                    detail: format!("matches the backup ({})", want.summary),
                }
            } else {
                Check {
                    name,
                    passed: false,
                    detail: format!("differs from the backup: {}", diffs.join("; ")),
                }
            }
        }
    }
}

pub(crate) fn validate_stream(
    record: &ComponentRecord,
    target: &dyn StreamComponent,
) -> Vec<Check> {
    vec![
        fingerprint_check(record, target.fingerprint()),
        probe_check(target),
    ]
}

/// The target's health probe as a check.
fn probe_check(target: &dyn StreamComponent) -> Check {
    match target.probe() {
        Ok(detail) => Check {
            name: "probe".into(),
            passed: true,
            detail,
        },
        Err(e) => Check {
            name: "probe".into(),
            passed: false,
            detail: e.to_string(),
        },
    }
}
