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
//!
//! With retries (the daemon, [`RetryRun`]): a failed component waits and is tried again on
//! its own thread, beside the first tries and retries of the others (`retries.parallel`
//! tries at a time). A component whose system does not answer ([`Unreachable`]: connection
//! refused, unknown host, connect timeout; a dump cut off mid-way is probed to tell) is
//! reported at once through [`Observer::on_unreachable`], together with every component
//! that does not answer a probe either: the daemon's `source-down` alert.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use haven_repo::backup::backup_stream;
use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::IndexedRepository;
use haven_sources::postgres::{PostgresMode, WalMode};
use haven_sources::{SourceError, StreamComponent};

use crate::config::{ComponentConfig, Config, Tenant};
use crate::label::NewLabel;
use crate::location::SiteAccess;
use crate::plan::Retries;
use crate::point::{
    component_tag, new_point_id, point_tag, save_manifest, tenant_tag, ComponentRecord,
    ComponentStatus, PointStatus, RecoveryPoint, MANIFEST_FORMAT,
};
use crate::run::RunEnv;
use crate::OpsError;

/// What [`Observer::on_unreachable`] calls.
pub type OnUnreachable = Box<dyn Fn(&[Unreachable]) + Send + Sync>;

/// Receives progress of a tenant operation: a line per step, and byte counters.
pub struct Observer {
    pub progress: Arc<Progress>,
    /// The component being worked on.
    pub component: Arc<std::sync::Mutex<Option<String>>>,
    /// When the job this run is part of must end (the daemon's `job-timeout`): every
    /// program the run starts is stopped then.
    pub deadline: Option<Instant>,
    /// Told of components whose systems do not answer, as soon as they are found (the
    /// daemon alerts `source-down` with them).
    pub on_unreachable: Option<OnUnreachable>,
    on_line: Box<dyn Fn(&str) + Send + Sync>,
}

impl Observer {
    pub fn new(on_line: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Observer {
            progress: Arc::new(Progress::default()),
            component: Arc::default(),
            deadline: None,
            on_unreachable: None,
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

    /// Report components found unreachable.
    pub fn unreachable(&self, found: &[Unreachable]) {
        if let Some(f) = &self.on_unreachable {
            f(found)
        }
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
    let t = config.tenant(tenant)?;
    backup_tenant_with_retries(config, t, lock_wait, observer, &RetryRun::once())
}

/// How a backup run retries its failed components (the daemon's plan; `tenant backup`
/// tries each once).
pub struct RetryRun<'a> {
    pub retries: Retries,
    /// Waits before a retry (the daemon's clock; returns early when the daemon stops).
    pub sleep: &'a (dyn Fn(Duration) + Sync),
    /// `Some(reason)` when further tries are pointless (the tenant moved to other
    /// servers): the remaining tries are skipped.
    pub give_up: &'a (dyn Fn() -> Option<String> + Sync),
}

fn no_sleep(_: Duration) {}

fn never_give_up() -> Option<String> {
    None
}

impl RetryRun<'static> {
    /// One try per component.
    pub fn once() -> RetryRun<'static> {
        RetryRun {
            retries: Retries::ONCE,
            sleep: &no_sleep,
            give_up: &never_give_up,
        }
    }
}

/// A component whose system did not answer during a backup: the site may be down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub component: String,
    /// The error, naming the system (without passwords).
    pub detail: String,
}

/// Back up every component of `t` (a tenant of `config`, or the tenant as a failover
/// left it: [`crate::failover::effective_tenant`]) as one recovery point.
///
/// The components are tried one after another; a component that fails waits
/// `retries.backoff` (doubled each time) and is tried again on its own thread, beside
/// the others' first tries and retries, at most `retries.parallel` tries at a time. When a
/// component's system does not answer, every other component is probed at once
/// (in parallel) and every unreachable one is reported together through
/// [`Observer::on_unreachable`], before any retry waits. The manifest is written when
/// every component has its final result: complete only if all succeeded.
pub fn backup_tenant_with_retries(
    config: &Config,
    t: &Tenant,
    lock_wait: Duration,
    observer: &Observer,
    run: &RetryRun<'_>,
) -> Result<RecoveryPoint, OpsError> {
    backup_point(config, t, lock_wait, observer, run, None)
}

/// [`backup_tenant`], then (when the point is complete) `label` on it, under the backup's
/// own lock. A name already in use on another point is refused before anything is
/// backed up; a failed point gets no label.
pub fn backup_tenant_labelled(
    config: &Config,
    tenant: &str,
    lock_wait: Duration,
    observer: &Observer,
    label: &NewLabel,
) -> Result<RecoveryPoint, OpsError> {
    crate::label::check_label_name(&label.name)?;
    let t = config.tenant(tenant)?;
    backup_point(
        config,
        t,
        lock_wait,
        observer,
        &RetryRun::once(),
        Some(label),
    )
}

fn backup_point(
    config: &Config,
    t: &Tenant,
    lock_wait: Duration,
    observer: &Observer,
    run: &RetryRun<'_>,
    label: Option<&NewLabel>,
) -> Result<RecoveryPoint, OpsError> {
    let tenant = t.name.as_str();
    let started = Utc::now();
    let (repo, _lock) = open_tenant_repository(
        config,
        t,
        true,
        &format!("tenant backup {tenant}"),
        lock_wait,
        observer,
    )?;
    if let Some(label) = label {
        crate::label::check_free(&repo, tenant, &label.name)
            .map_err(|e| OpsError::Invalid(format!("{e} (no backup was made)")))?;
    }
    let id = new_point_id();
    let env = RunEnv::new(config, observer);
    let slots = Slots::new(run.retries.parallel.max(1));
    let results = Mutex::new(BTreeMap::new());
    let reported = Mutex::new(BTreeSet::new());
    let finish = |name: &str, record: ComponentRecord| {
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
        results
            .lock()
            .expect("backup results")
            .insert(name.to_string(), record);
    };
    let components: Vec<(&String, &ComponentConfig)> = t.components.iter().collect();
    // Report what is new. The first report also probes every other component: the site
    // may have died under the ones already done, and they are named together.
    let report = |name: &str, detail: String| {
        let mut seen = reported.lock().expect("unreachable components");
        if !seen.insert(name.to_string()) {
            return;
        }
        let mut found = vec![Unreachable {
            component: name.to_string(),
            detail,
        }];
        if seen.len() == 1 {
            let others: Vec<_> = components
                .iter()
                .copied()
                .filter(|(n, _)| n.as_str() != name)
                .collect();
            found.extend(probe_unreachable(&env, &others));
            seen.extend(found.iter().map(|u| u.component.clone()));
        }
        drop(seen);
        observer.unreachable(&found);
    };
    let try_once = |name: &str, c: &ComponentConfig| {
        let _slot = slots.acquire();
        let (record, unreachable) = backup_component(&repo, &env, t, &id, name, c, observer);
        if let Some(detail) = unreachable {
            report(name, detail);
        }
        record
    };
    std::thread::scope(|scope| {
        for (name, c) in components.iter().copied() {
            observer.set_component(Some(name));
            observer.line(&format!(
                "{name} ({}): backing up {}",
                c.kind(),
                describe(c)
            ));
            let record = try_once(name, c);
            if record.status == ComponentStatus::Ok || record.attempts >= run.retries.attempts {
                finish(name, record);
                continue;
            }
            // Retried on its own thread: the other components go on meanwhile.
            let (try_once, finish) = (&try_once, &finish);
            let lane = move || {
                let mut record = record;
                let mut wait = run.retries.backoff;
                while record.status == ComponentStatus::Failed
                    && record.attempts < run.retries.attempts
                {
                    let error = record.error.clone().unwrap_or_else(|| "failed".into());
                    observer.line(&format!(
                        "{name}: attempt {} of {} failed ({error}); retrying in {}",
                        record.attempts,
                        run.retries.attempts,
                        crate::plan::format_span(wait)
                    ));
                    (run.sleep)(wait);
                    if let Some(why) = (run.give_up)() {
                        observer.line(&format!("{name}: not retried: {why}"));
                        record.error = Some(format!("{error}; not retried: {why}"));
                        break;
                    }
                    wait *= 2;
                    let attempts = record.attempts;
                    record = try_once(name, c);
                    record.attempts = attempts + 1;
                }
                finish(name, record);
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("haven-retry-{name}"))
                .spawn_scoped(scope, lane)
            {
                observer.line(&format!("{name}: cannot start its retry thread: {e}"));
            }
        }
    });
    observer.set_component(None);
    let components = results.into_inner().expect("backup results");
    let status = if components.len() == t.components.len()
        && components.values().all(|c| c.status == ComponentStatus::Ok)
    {
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
    if let (Some(label), PointStatus::Complete) = (label, point.status) {
        // A fresh view: it lists the manifest just written and the tenant's labels.
        let view = ReadView::open(repo.repo.clone())?;
        let l = crate::label::put_label(&view, tenant, &point.id, label).map_err(|e| {
            OpsError::Invalid(format!(
                "recovery point {} of tenant {tenant} was made but not labelled: {e}; label it with `haven tenant label {tenant} {} {}`",
                point.id, point.id, label.name
            ))
        })?;
        observer.line(&format!("{}: labelled {}", point.id, l.name));
    }
    Ok(point)
}

/// The components of `t` whose systems do not answer a probe, probed in parallel (the
/// daemon's `probe-every`). `files` components are not probed.
pub fn unreachable_components(config: &Config, t: &Tenant) -> Vec<Unreachable> {
    let env = RunEnv::new(config, &Observer::quiet());
    let all: Vec<(&String, &ComponentConfig)> = t.components.iter().collect();
    probe_unreachable(&env, &all)
}

/// The components of `which` whose systems do not answer a probe, probed in parallel.
fn probe_unreachable(env: &RunEnv, which: &[(&String, &ComponentConfig)]) -> Vec<Unreachable> {
    std::thread::scope(|scope| {
        let probes: Vec<_> = which
            .iter()
            .filter_map(|(name, c)| {
                let component = env.component(c)?;
                Some((*name, scope.spawn(move || component.probe())))
            })
            .collect();
        probes
            .into_iter()
            .filter_map(|(name, probe)| match probe.join() {
                Ok(Err(e)) if e.is_unreachable() => Some(Unreachable {
                    component: name.clone(),
                    detail: e.to_string(),
                }),
                _ => None,
            })
            .collect()
    })
}

/// A counting semaphore: the tries of one run that may run at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().expect("slots");
        while *free == 0 {
            free = self.freed.wait(free).expect("slots");
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slots") += 1;
        self.0.freed.notify_one();
    }
}

fn backup_component(
    repo: &IndexedRepository,
    env: &RunEnv,
    tenant: &Tenant,
    point: &str,
    name: &str,
    c: &ComponentConfig,
    observer: &Observer,
) -> (ComponentRecord, Option<String>) {
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
        ComponentConfig::Postgres(pg)
            if pg.mode == PostgresMode::Physical && crate::base_files::may_use_files(pg) =>
        {
            match crate::base_files::backup_base_files(
                repo,
                env,
                pg,
                tags.clone(),
                observer.progress.clone(),
            ) {
                Ok(Some((result, fp, warnings))) => {
                    record.warnings = warnings;
                    Ok((result, fp))
                }
                Ok(None) => {
                    let component = env.component(c).expect("a stream kind");
                    backup_stream_component(repo, env, name, component.as_ref(), tags, observer)
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            let component = env.component(c).expect("a stream kind");
            backup_stream_component(repo, env, name, component.as_ref(), tags, observer)
        }
    };
    if let (Ok((_, fingerprint)), ComponentConfig::Postgres(pg)) = (&outcome, c) {
        if pg.wal == WalMode::Stream {
            if let Some(w) = wait_for_receiver(repo, env, &tenant.name, name, pg, fingerprint) {
                record.warnings.push(w);
            }
        }
    }
    // Whether the failure (if any) was the system not answering.
    let outcome_error = outcome.as_ref().err().map(OpsError::is_unreachable);
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
    let unreachable = match (&outcome_error, env.component(c)) {
        (None, _) => None,
        (Some(true), _) => record.error.clone(),
        // A dump cut off mid-way (the server died under it) says "failed": ask the
        // system whether it still answers.
        (Some(false), Some(component)) => match component.probe() {
            Err(e) if e.is_unreachable() => Some(e.to_string()),
            _ => None,
        },
        (Some(false), None) => None,
    };
    (record, unreachable)
}

/// How long a base backup of a streaming component waits for the receiver to store the
/// WAL that makes it consistent.
const RECEIVER_WAIT: Duration = Duration::from_secs(60);

/// A base backup of a streaming component is restorable once the receiver stored the
/// segment it ended in: make the server write past it, then wait for it (a restore or
/// drill right after the backup would otherwise find it missing). A warning when it does
/// not arrive in time (no receiver running?); the backup itself stays good.
fn wait_for_receiver(
    repo: &IndexedRepository,
    env: &RunEnv,
    tenant: &str,
    name: &str,
    pg: &haven_sources::postgres::PostgresConfig,
    fingerprint: &haven_sources::Fingerprint,
) -> Option<String> {
    use haven_sources::postgres::physical::{lsn::segment_of, BaseFacts};
    let facts = BaseFacts::from_fingerprint(fingerprint).ok()?;
    let segno = segment_of(facts.end_lsn, facts.segment_size);
    let mut component = haven_sources::postgres::PostgresComponent::new(pg.clone());
    component.set_deadline(env.deadline);
    if let Err(e) = component.write_a_commit() {
        return Some(format!(
            "could not make the server complete the WAL segment the base backup ended in: {e}"
        ));
    }
    match crate::wal::wait_for_segment(
        &repo.repo,
        tenant,
        name,
        facts.timeline,
        segno,
        RECEIVER_WAIT,
    ) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "the WAL this base backup needs (up to {}) was not in the repository {} s after it: \
             is the receiver running (`haven serve` or `haven wal receive {tenant} {name}`)? The \
             backup restores once it is",
            facts.end_lsn,
            RECEIVER_WAIT.as_secs()
        )),
        Err(e) => Some(format!(
            "could not look for the WAL this base backup needs: {e}"
        )),
    }
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
