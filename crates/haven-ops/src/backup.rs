//! `tenant backup`: one recovery point, every component of the tenant in one run.
//!
//! ```text
//! open (create when empty) + shared lock + index
//!   for each component: stream kinds: dump ──> snapshot, fingerprint
//!                       files:        pre-hook, tree backup, post-hook, fingerprint
//!   manifest (RecoveryPoint) written last: complete only if every component succeeded
//! ```
//! A failing component does not stop the others; it makes the point `failed` with the
//! reason. Errors that prevent any point (no repository, wrong key, lock) are returned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use haven_repo::backup::backup_stream;
use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::IndexedRepository;
use haven_sources::{SourceError, StreamComponent};

use crate::config::{ComponentConfig, Config, Tenant};
use crate::location::SiteAccess;
use crate::plan::Retries;
use crate::point::{
    component_tag, new_point_id, point_tag, save_manifest, tenant_tag, ComponentRecord,
    ComponentStatus, PointStatus, RecoveryPoint, MANIFEST_FORMAT,
};
use crate::run::RunEnv;
use crate::OpsError;

/// Receives progress of a tenant operation: a line per step, and byte counters.
pub struct Observer {
    pub progress: Arc<Progress>,
    /// The component being worked on.
    pub component: Arc<std::sync::Mutex<Option<String>>>,
    /// When the job this run is part of must end (the daemon's `job-timeout`): every
    /// program the run starts is stopped then.
    pub deadline: Option<Instant>,
    on_line: Box<dyn Fn(&str) + Send + Sync>,
}

impl Observer {
    pub fn new(on_line: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Observer {
            progress: Arc::new(Progress::default()),
            component: Arc::default(),
            deadline: None,
            on_line: Box::new(on_line),
        }
    }

    /// An observer that reports nothing.
    pub fn quiet() -> Self {
        Observer::new(|_| {})
    }

    pub fn line(&self, text: &str) {
        (self.on_line)(text)
    }

    /// Say which component is being worked on (shown as the job's progress).
    pub fn set_component(&self, name: Option<&str>) {
        *self.component.lock().expect("observer") = name.map(str::to_string);
    }
}

/// The stream component behind a config entry (`None` for `files`).
pub fn stream_component(c: &ComponentConfig) -> Option<Box<dyn StreamComponent>> {
    use haven_sources::{command, etcd, postgres, redis};
    match c {
        ComponentConfig::Postgres(p) => Some(Box::new(postgres::PostgresComponent::new(p.clone()))),
        ComponentConfig::Redis(r) => Some(Box::new(redis::RedisComponent::new(r.clone()))),
        ComponentConfig::Etcd(e) => Some(Box::new(etcd::EtcdComponent::new(e.clone()))),
        ComponentConfig::Command(x) => Some(Box::new(command::CommandComponent::new(x.clone()))),
        ComponentConfig::Files(_) => None,
    }
}

/// How a component is named in reports: the system behind it, without passwords.
pub fn describe(c: &ComponentConfig) -> String {
    match (c, stream_component(c)) {
        (_, Some(s)) => s.describe(),
        (ComponentConfig::Files(f), None) => f
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// Open the tenant's repository, lock it (shared) and load the index.
pub(crate) fn open_tenant_repository(
    config: &Config,
    tenant: &Tenant,
    create: bool,
    purpose: &str,
    lock_wait: Duration,
    observer: &Observer,
) -> Result<(IndexedRepository, RepoLock), OpsError> {
    let rc = config.repository_of(tenant);
    let (repo, created) = crate::open_repository(rc, create)?;
    if created {
        observer.line(&format!(
            "created repository {} at {} (it did not exist)",
            rc.name, rc.url
        ));
    }
    let lock = RepoLock::acquire(&repo, false, purpose, lock_wait)?;
    Ok((repo.indexed()?, lock))
}

/// Open the tenant's repository, lock it (shared), list the snapshots, then load the
/// index (the read ordering, FORMAT.md 17.8): for restore, verify and retention.
pub(crate) fn open_tenant_view(
    config: &Config,
    tenant: &Tenant,
    purpose: &str,
    lock_wait: Duration,
    access: SiteAccess,
) -> Result<(ReadView, RepoLock), OpsError> {
    let (repo, _) = crate::open_repository_as(config.repository_of(tenant), false, access)?;
    let lock = RepoLock::acquire(&repo, false, purpose, lock_wait)?;
    Ok((ReadView::open(repo)?, lock))
}

/// Back up every component of `tenant` as one recovery point. Returns the manifest,
/// which says whether the point is complete.
pub fn backup_tenant(
    config: &Config,
    tenant: &str,
    lock_wait: Duration,
    observer: &Observer,
) -> Result<RecoveryPoint, OpsError> {
    let no_retry = Retries {
        attempts: 1,
        backoff: Duration::ZERO,
    };
    backup_tenant_with_retries(config, tenant, lock_wait, observer, no_retry, &|_| {})
}

/// [`backup_tenant`], retrying each failed component up to `retries.attempts` times in
/// all, waiting `retries.backoff` (doubled each time) through `sleep` (the daemon's clock)
/// before each retry. The point is complete only if every component finally succeeded.
pub fn backup_tenant_with_retries(
    config: &Config,
    tenant: &str,
    lock_wait: Duration,
    observer: &Observer,
    retries: Retries,
    sleep: &dyn Fn(Duration),
) -> Result<RecoveryPoint, OpsError> {
    let t = config.tenant(tenant)?;
    let started = Utc::now();
    let (repo, _lock) = open_tenant_repository(
        config,
        t,
        true,
        &format!("tenant backup {tenant}"),
        lock_wait,
        observer,
    )?;
    let id = new_point_id();
    let env = RunEnv::new(config, observer);
    let mut components = std::collections::BTreeMap::new();
    for (name, c) in &t.components {
        observer.set_component(Some(name));
        observer.line(&format!(
            "{name} ({}): backing up {}",
            c.kind(),
            describe(c)
        ));
        let mut record = backup_component(&repo, &env, t, &id, name, c, observer);
        let mut wait = retries.backoff;
        while record.status == ComponentStatus::Failed && record.attempts < retries.attempts {
            observer.line(&format!(
                "{name}: attempt {} of {} failed ({}); retrying in {}",
                record.attempts,
                retries.attempts,
                record.error.as_deref().unwrap_or("failed"),
                crate::plan::format_span(wait)
            ));
            sleep(wait);
            wait *= 2;
            let attempts = record.attempts;
            record = backup_component(&repo, &env, t, &id, name, c, observer);
            record.attempts = attempts + 1;
        }
        match &record.error {
            None => observer.line(&format!(
                "{name}: done in {:.2} s, {} ({}), {} added",
                record.seconds,
                crate::report::human_bytes(record.bytes),
                record
                    .fingerprint
                    .as_ref()
                    .map(|f| f.summary.as_str())
                    .unwrap_or(""),
                crate::report::human_bytes(record.bytes_added)
            )),
            Some(e) => observer.line(&format!("{name}: FAILED: {e}")),
        }
        components.insert(name.clone(), record);
    }
    let status = if components.values().all(|c| c.status == ComponentStatus::Ok) {
        PointStatus::Complete
    } else {
        PointStatus::Failed
    };
    let point = RecoveryPoint {
        format: MANIFEST_FORMAT,
        id,
        tenant: tenant.to_string(),
        started,
        finished: Utc::now(),
        status,
        components,
    };
    save_manifest(&repo, &point)?;
    Ok(point)
}

fn backup_component(
    repo: &IndexedRepository,
    env: &RunEnv,
    tenant: &Tenant,
    point: &str,
    name: &str,
    c: &ComponentConfig,
    observer: &Observer,
) -> ComponentRecord {
    let started = Instant::now();
    let tags = vec![
        tenant_tag(&tenant.name),
        point_tag(point),
        component_tag(name),
    ];
    let mut record = ComponentRecord {
        kind: c.kind().to_string(),
        source: describe(c),
        status: ComponentStatus::Failed,
        error: None,
        snapshot: None,
        bytes: 0,
        bytes_added: 0,
        seconds: 0.0,
        fingerprint: None,
        paths: vec![],
        warnings: vec![],
        attempts: 1,
    };
    let outcome = match c {
        ComponentConfig::Files(f) => {
            // As the snapshot records them (`..` resolved), so that restore finds them.
            record.paths = f
                .paths
                .iter()
                .map(|p| {
                    haven_repo::backup::resolve_path(p)
                        .unwrap_or_else(|_| p.clone())
                        .display()
                        .to_string()
                })
                .collect();
            crate::files::backup_files(repo, env, f, tags, observer.progress.clone()).map(
                |(result, fp, warnings)| {
                    record.warnings = warnings;
                    (result, fp)
                },
            )
        }
        _ => {
            let component = env.component(c).expect("a stream kind");
            backup_stream_component(repo, env, name, component.as_ref(), tags, observer)
        }
    };
    match outcome {
        Ok((result, fingerprint)) => {
            let s = &result.snapshot.summary;
            record.status = ComponentStatus::Ok;
            record.snapshot = Some(result.id.to_hex());
            record.bytes = s.bytes_total;
            record.bytes_added = s.bytes_added_stored;
            record.fingerprint = Some(fingerprint);
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    record.seconds = started.elapsed().as_secs_f64();
    record
}

fn backup_stream_component(
    repo: &IndexedRepository,
    env: &RunEnv,
    name: &str,
    component: &dyn StreamComponent,
    tags: Vec<String>,
    observer: &Observer,
) -> Result<(haven_repo::backup::BackupResult, haven_sources::Fingerprint), OpsError> {
    let work = env.work(name)?;
    let file_name = format!("{name}.{}", component.stream_name());
    let mut stored = None;
    let fingerprint = component.backup(
        &mut |reader| {
            let result = backup_stream(
                repo.clone(),
                reader,
                &file_name,
                tags.clone(),
                None,
                observer.progress.clone(),
            )
            .map_err(|e| SourceError::failed("storing the stream", e.to_string()))?;
            stored = Some(result);
            Ok(())
        },
        work.path(),
    )?;
    let result = stored.ok_or_else(|| {
        OpsError::Invalid(format!(
            "the {} component produced no stream",
            component.kind()
        ))
    })?;
    Ok((result, fingerprint))
}
