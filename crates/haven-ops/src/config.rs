//! `haven.toml`: repositories and tenants. Two layers: a raw serde layer
//! (`deny_unknown_fields`, kebab-case keys, spans kept) checked by [`Config::parse`] into
//! the validated [`Config`]. Every error names the file, the line and the key.
//!
//! ```toml
//! [repositories.main]
//! url = "/var/backups/haven"           # a folder, s3://..., s3:http://..., or mirror:...
//! password-file = "/etc/haven/password" # or key-file = "..."; relative paths are relative to this file
//!
//! [tenants.acme]
//! repository = "main"
//! [tenants.acme.components.db]
//! kind = "postgres"                     # postgres | redis | etcd | files | command
//! url = "postgresql://postgres@127.0.0.1:5432/app"
//! ```
//! The keys of each component kind are those of its config struct
//! (`haven_sources::postgres::PostgresConfig`, ..., [`FilesConfig`]); `docs/CONFIG.md`
//! lists them all.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::plan::{parse_span, DaemonSettings, Plan, RawDaemon, RawRetention, RawRetries, Retries};
use crate::runbook::Runbook;

use haven_sources::command::CommandConfig;
use haven_sources::etcd::EtcdConfig;
use haven_sources::postgres::PostgresConfig;
use haven_sources::redis::RedisConfig;

/// A config error: which file, which line, which key, and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!(", key {key}") })]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// A file-tree component: the folders to back up, and optional hooks run with `sh -c`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesConfig {
    /// Absolute paths of the folders (or files). Restoring into another tenant puts the
    /// contents of the n-th path of the source into the n-th path of the target.
    pub paths: Vec<PathBuf>,
    /// Runs before the backup (e.g. to quiesce); when it fails, the component fails.
    pub pre: Option<String>,
    /// Runs after the backup, always (also when the pre-hook or the backup failed).
    pub post: Option<String>,
    /// How long each hook may run before it is stopped with everything it started
    /// (default 1 hour, `run::DEFAULT_HOOK_TIMEOUT`).
    #[serde(default)]
    pub timeout: Option<haven_sources::process::Span>,
    /// Patterns of entries to leave out (`haven backup --exclude`'s rules).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files of such patterns, one per line.
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out the contents of folders holding a `CACHEDIR.TAG`.
    #[serde(default)]
    pub exclude_caches: bool,
    /// Leave out the contents of folders holding one of these files (`NAME[:HEADER]`).
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    /// Stay on the file systems of `paths`.
    #[serde(default)]
    pub one_file_system: bool,
}

impl FilesConfig {
    /// The exclude rules these keys make (an error names the bad pattern or file).
    pub fn exclude_rules(&self) -> Result<haven_repo::backup::ExcludeRules, String> {
        let mut rules = haven_repo::backup::ExcludeRules::default();
        for p in &self.exclude {
            rules.pattern(p, false)?;
        }
        for f in &self.exclude_file {
            rules.pattern_file(f, false)?;
        }
        if self.exclude_caches {
            rules.caches();
        }
        for spec in &self.exclude_if_present {
            rules.if_present(spec)?;
        }
        if self.one_file_system {
            rules.one_file_system(&self.paths);
        }
        Ok(rules)
    }
}

/// An alert sink, by `kind` (`webhook`, `smtp`); see [`crate::alerts`].
pub type AlertSinkConfig = crate::alerts::AlertSinkConfig;

/// One component of a tenant, by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ComponentConfig {
    Postgres(PostgresConfig),
    Redis(RedisConfig),
    Etcd(EtcdConfig),
    Files(FilesConfig),
    Command(CommandConfig),
}

impl ComponentConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ComponentConfig::Postgres(_) => "postgres",
            ComponentConfig::Redis(_) => "redis",
            ComponentConfig::Etcd(_) => "etcd",
            ComponentConfig::Files(_) => "files",
            ComponentConfig::Command(_) => "command",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    repositories: BTreeMap<String, Spanned<RawRepository>>,
    #[serde(default)]
    tenants: BTreeMap<String, Spanned<RawTenant>>,
    #[serde(default)]
    daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    alerts: BTreeMap<String, Spanned<AlertSinkConfig>>,
    work_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    runbooks: BTreeMap<String, Spanned<crate::runbook::RawRunbook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRepository {
    url: Spanned<String>,
    password_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    min_sites: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTenant {
    repository: Spanned<String>,
    #[serde(default)]
    components: BTreeMap<String, Spanned<ComponentConfig>>,
    schedule: Option<Spanned<String>>,
    retention: Option<Spanned<RawRetention>>,
    rpo: Option<Spanned<String>>,
    retries: Option<Spanned<RawRetries>>,
    alerts: Option<Spanned<Vec<String>>>,
    verify_schedule: Option<Spanned<String>>,
    probe_every: Option<Spanned<String>>,
}

/// Where a repository is and how to open it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryConfig {
    pub name: String,
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// For `mirror:` URLs: how many sites must take each write (default: all).
    pub min_sites: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: String,
    pub repository: String,
    pub components: BTreeMap<String, ComponentConfig>,
    /// Schedule, retention, RPO, retries, alerts (defaults when not given).
    pub plan: Plan,
}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub repositories: BTreeMap<String, RepositoryConfig>,
    pub tenants: BTreeMap<String, Tenant>,
    /// `[daemon]` settings of `haven serve` (defaults when not given).
    pub daemon: DaemonSettings,
    /// `[alerts.NAME]` sinks.
    pub alerts: BTreeMap<String, AlertSinkConfig>,
    /// `work-dir`: where the private work folders of backups, restores and verifies are
    /// made (dumps, RDB copies, etcd snapshots in plaintext). The CLI's `--work-dir` (or
    /// `HAVEN_WORK_DIR`) replaces it; default: the system's temporary directory.
    pub work_dir: Option<PathBuf>,
    /// `[runbooks.NAME]`: disaster-recovery runbooks (see [`crate::runbook`]).
    pub runbooks: BTreeMap<String, Runbook>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A cron expression the scheduler accepts.
/// `probe-every` when the tenant does not say: a tenant whose RPO is under an hour is probed
/// every quarter of its RPO, between 10 s and 1 min (a 2-minute RPO: every 30 s), so that a
/// site that dies between two backups is alerted within about a minute (issue 11's game day:
/// 695 s before). Longer RPOs are not probed unless asked: their next backup finds it.
fn default_probe_every(rpo: std::time::Duration) -> Option<std::time::Duration> {
    use std::time::Duration;
    (rpo < Duration::from_secs(3600))
        .then(|| (rpo / 4).clamp(Duration::from_secs(10), Duration::from_secs(60)))
}

fn check_cron(expr: &str) -> Result<(), String> {
    crate::schedule::Schedule::parse(expr).map(|_| ())
}

/// Validate `[daemon]`; errors carry the key inside the table.
fn daemon_settings(
    d: RawDaemon,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<DaemonSettings, (&'static str, String)> {
    let mut s = DaemonSettings::default();
    if let Some(dir) = d.state_dir {
        s.state_dir = resolve(&dir);
    }
    if let Some(l) = d.listen {
        s.listen = l.parse().map_err(|_| {
            (
                "listen",
                format!("{l:?} is not an address: use IP:PORT, e.g. 127.0.0.1:8470"),
            )
        })?;
    }
    if d.api_token.is_some() && d.api_token_file.is_some() {
        return Err((
            "api-token",
            "give either api-token or api-token-file, not both".into(),
        ));
    }
    s.api_token = d.api_token;
    s.api_token_file = d.api_token_file.map(|p| resolve(&p));
    if let Some(c) = d.concurrency {
        if c == 0 {
            return Err(("concurrency", "concurrency must be at least 1".into()));
        }
        s.concurrency = c;
    }
    if let Some(r) = d.retention_schedule {
        check_cron(&r).map_err(|m| ("retention-schedule", m))?;
        s.retention_schedule = r;
    }
    if let Some(r) = d.reminder {
        s.reminder = parse_span(&r).map_err(|m| ("reminder", m))?;
    }
    if let Some(g) = d.shutdown_grace {
        s.shutdown_grace = parse_span(&g).map_err(|m| ("shutdown-grace", m))?;
    }
    if let Some(t) = d.job_timeout {
        s.job_timeout = parse_span(&t).map_err(|m| ("job-timeout", m))?;
        if s.job_timeout.is_zero() {
            return Err((
                "job-timeout",
                "a job timeout of 0 would stop every job at once: give e.g. 12h".into(),
            ));
        }
    }
    Ok(s)
}

/// The `[table]` header above a byte offset (the key path an error is inside of).
fn enclosing_table(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    text[..line_end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

/// Names of tenants and components end up in tags and scratch names: keep them plain.
/// The keys of a PostgreSQL component that only make sense together: (key, why) when not.
fn check_postgres(
    pg: &haven_sources::postgres::PostgresConfig,
) -> Result<(), (&'static str, String)> {
    use haven_sources::postgres::physical::stream::{parse_wal_size, valid_slot_name};
    use haven_sources::postgres::physical::BaseMethod;
    use haven_sources::postgres::{PostgresMode, WalMode};
    let streaming = pg.mode == PostgresMode::Physical && pg.wal == WalMode::Stream;
    let stream_only = [
        ("synchronous", pg.synchronous),
        ("slot", pg.slot.is_some()),
        ("slot-max-lag", pg.slot_max_lag.is_some()),
    ];
    if let Some((key, _)) = stream_only.iter().find(|(_, set)| *set && !streaming) {
        return Err((
            key,
            format!("{key} applies to mode = \"physical\" with wal = \"stream\" only"),
        ));
    }
    if pg.base_backup != BaseMethod::Auto && pg.mode != PostgresMode::Physical {
        return Err((
            "base-backup",
            "base-backup applies to mode = \"physical\" only".into(),
        ));
    }
    if let Some(slot) = &pg.slot {
        if !valid_slot_name(slot) {
            return Err((
                "slot",
                format!("{slot:?} cannot name a replication slot: use 1 to 63 of a-z, 0-9 and _"),
            ));
        }
    }
    if let Some(lag) = &pg.slot_max_lag {
        let bytes = parse_wal_size(lag).map_err(|m| ("slot-max-lag", m))?;
        if bytes < 64 << 20 {
            return Err((
                "slot-max-lag",
                format!("{lag} is below 64MB: the slot would be dropped in normal operation"),
            ));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Config {
    /// Read and validate the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!(
                "cannot read the config file: {e}; pass --config FILE or set HAVEN_CONFIG"
            ),
        })?;
        Config::parse(path, &text)
    }

    /// Validate config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |span: Option<Range<usize>>, key: String, message: String| ConfigError {
            file: file.clone(),
            line: span.map(|s| line_of(text, s.start)),
            key,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            let key = e
                .span()
                .map(|s| enclosing_table(text, s.start))
                .unwrap_or_default();
            err(e.span(), key, message)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let mut repositories = BTreeMap::new();
        for (name, raw_repo) in raw.repositories {
            let span = raw_repo.span();
            let r = raw_repo.into_inner();
            let key = format!("repositories.{name}");
            if r.url.get_ref().trim().is_empty() {
                return Err(err(
                    Some(r.url.span()),
                    format!("{key}.url"),
                    "the url is empty; give a folder, s3://bucket/prefix or mirror:... location"
                        .into(),
                ));
            }
            if let Some(m) = &r.min_sites {
                if *m.get_ref() == 0 {
                    return Err(err(
                        Some(m.span()),
                        format!("{key}.min-sites"),
                        "min-sites must be at least 1".into(),
                    ));
                }
            }
            if r.password_file.is_some() && r.key_file.is_some() {
                return Err(err(
                    Some(span),
                    key,
                    "give either password-file or key-file, not both".into(),
                ));
            }
            repositories.insert(
                name.clone(),
                RepositoryConfig {
                    name,
                    url: r.url.into_inner(),
                    password_file: r.password_file.map(|p| resolve(p.get_ref())),
                    key_file: r.key_file.map(|p| resolve(p.get_ref())),
                    min_sites: r.min_sites.map(Spanned::into_inner),
                },
            );
        }

        let mut alerts = BTreeMap::new();
        for (name, sink) in raw.alerts {
            let span = sink.span();
            let mut sink = sink.into_inner();
            if let Err(e) = sink.validate() {
                return Err(err(Some(span), format!("alerts.{name}"), e.to_string()));
            }
            sink.resolve_paths(base);
            alerts.insert(name, sink);
        }
        let daemon = match raw.daemon {
            None => DaemonSettings::default(),
            Some(d) => {
                let span = d.span();
                daemon_settings(d.into_inner(), &resolve).map_err(|(key, message)| {
                    err(Some(span.clone()), format!("daemon.{key}"), message)
                })?
            }
        };

        let mut tenants = BTreeMap::new();
        for (name, raw_tenant) in raw.tenants {
            let span = raw_tenant.span();
            let t = raw_tenant.into_inner();
            let key = format!("tenants.{name}");
            if !valid_name(&name) {
                return Err(err(
                    Some(span),
                    key,
                    "tenant names use letters, digits, - and _ only (at most 64)".into(),
                ));
            }
            if !repositories.contains_key(t.repository.get_ref()) {
                let declared: Vec<&str> = repositories.keys().map(String::as_str).collect();
                return Err(err(
                    Some(t.repository.span()),
                    format!("{key}.repository"),
                    format!(
                        "no repository {:?} is declared (declared: {}); add a [repositories.{}] table",
                        t.repository.get_ref(),
                        if declared.is_empty() { "none".to_string() } else { declared.join(", ") },
                        t.repository.get_ref()
                    ),
                ));
            }
            if t.components.is_empty() {
                return Err(err(Some(span), key, format!("the tenant has no components; add a [tenants.{name}.components.NAME] table with a kind")));
            }
            let mut plan = Plan::default();
            if let Some(v) = &t.schedule {
                check_cron(v.get_ref())
                    .map_err(|m| err(Some(v.span()), format!("{key}.schedule"), m))?;
                plan.schedule = v.get_ref().clone();
            }
            if let Some(v) = &t.verify_schedule {
                check_cron(v.get_ref())
                    .map_err(|m| err(Some(v.span()), format!("{key}.verify-schedule"), m))?;
                plan.verify_schedule = Some(v.get_ref().clone());
            }
            if let Some(v) = &t.retention {
                plan.retention = v
                    .get_ref()
                    .policy()
                    .map_err(|m| err(Some(v.span()), format!("{key}.retention"), m))?;
            }
            if let Some(v) = &t.rpo {
                plan.rpo = parse_span(v.get_ref())
                    .map_err(|m| err(Some(v.span()), format!("{key}.rpo"), m))?;
            }
            plan.probe_every = default_probe_every(plan.rpo);
            match &t.probe_every {
                Some(v) if v.get_ref() == "off" => plan.probe_every = None,
                Some(v) => {
                    let every = parse_span(v.get_ref())
                        .map_err(|m| err(Some(v.span()), format!("{key}.probe-every"), m))?;
                    if every < std::time::Duration::from_secs(1) {
                        return Err(err(
                            Some(v.span()),
                            format!("{key}.probe-every"),
                            "probe-every must be at least 1s, or \"off\"".into(),
                        ));
                    }
                    plan.probe_every = Some(every);
                }
                None => {}
            }
            if let Some(v) = &t.retries {
                let r = v.get_ref();
                let mut retries = Retries::default();
                if let Some(a) = r.attempts {
                    if a == 0 {
                        return Err(err(
                            Some(v.span()),
                            format!("{key}.retries.attempts"),
                            "attempts must be at least 1 (1 = no retry)".into(),
                        ));
                    }
                    retries.attempts = a;
                }
                if let Some(b) = &r.backoff {
                    retries.backoff = parse_span(b)
                        .map_err(|m| err(Some(v.span()), format!("{key}.retries.backoff"), m))?;
                }
                if let Some(p) = r.parallel {
                    if p == 0 {
                        return Err(err(
                            Some(v.span()),
                            format!("{key}.retries.parallel"),
                            "parallel must be at least 1 (1 = one component at a time)".into(),
                        ));
                    }
                    retries.parallel = p;
                }
                plan.retries = retries;
            }
            if let Some(v) = &t.alerts {
                if let Some(unknown) = v.get_ref().iter().find(|a| !alerts.contains_key(*a)) {
                    return Err(err(
                        Some(v.span()),
                        format!("{key}.alerts"),
                        format!(
                            "no alert sink {unknown:?} is declared (declared: {}); add an [alerts.{unknown}] table",
                            if alerts.is_empty() { "none".to_string() } else { alerts.keys().cloned().collect::<Vec<_>>().join(", ") }
                        ),
                    ));
                }
                plan.alerts = Some(v.get_ref().clone());
            }
            let mut components = BTreeMap::new();
            for (cname, c) in t.components {
                let ckey = format!("{key}.components.{cname}");
                let cspan = c.span();
                if !valid_name(&cname) {
                    return Err(err(
                        Some(cspan),
                        ckey,
                        "component names use letters, digits, - and _ only (at most 64)".into(),
                    ));
                }
                let c = c.into_inner();
                if let ComponentConfig::Files(f) = &c {
                    if f.paths.is_empty() {
                        return Err(err(
                            Some(cspan),
                            format!("{ckey}.paths"),
                            "name at least one path".into(),
                        ));
                    }
                    if let Some(p) = f.paths.iter().find(|p| !p.is_absolute()) {
                        return Err(err(
                            Some(cspan),
                            format!("{ckey}.paths"),
                            format!("{} is not an absolute path", p.display()),
                        ));
                    }
                    let mut rules = haven_repo::backup::ExcludeRules::default();
                    for p in &f.exclude {
                        rules
                            .pattern(p, false)
                            .map_err(|m| err(Some(cspan.clone()), format!("{ckey}.exclude"), m))?;
                    }
                    for spec in &f.exclude_if_present {
                        rules.if_present(spec).map_err(|m| {
                            err(Some(cspan.clone()), format!("{ckey}.exclude-if-present"), m)
                        })?;
                    }
                }
                if let ComponentConfig::Postgres(pg) = &c {
                    check_postgres(pg)
                        .map_err(|(k, m)| err(Some(cspan), format!("{ckey}.{k}"), m))?;
                }
                components.insert(cname, c);
            }
            tenants.insert(
                name.clone(),
                Tenant {
                    name,
                    repository: t.repository.into_inner(),
                    components,
                    plan,
                },
            );
        }
        let mut runbooks = BTreeMap::new();
        {
            let known = crate::runbook::check::Known {
                tenants: &tenants,
                sinks: alerts.keys().map(String::as_str).collect(),
                resolve: &resolve,
            };
            for (name, raw_book) in raw.runbooks {
                let book = crate::runbook::check_runbook(&name, raw_book, &known)
                    .map_err(|(span, key, message)| err(span, key, message))?;
                runbooks.insert(name, book);
            }
        }
        Ok(Config {
            file: path.to_path_buf(),
            runbooks,
            repositories,
            tenants,
            daemon,
            alerts,
            work_dir: raw.work_dir.map(|p| resolve(p.get_ref())),
        })
    }

    /// The directory work folders are made under: `work_dir`, else the system's
    /// temporary directory.
    pub fn work_base(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// The tenant called `name`, or an error listing the declared ones.
    pub fn tenant(&self, name: &str) -> Result<&Tenant, ConfigError> {
        self.tenants.get(name).ok_or_else(|| ConfigError {
            file: self.file.display().to_string(),
            line: None,
            key: format!("tenants.{name}"),
            message: format!(
                "no tenant {name:?} is declared (declared: {})",
                self.tenants.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The repository of a tenant (validated to exist).
    pub fn repository_of(&self, tenant: &Tenant) -> &RepositoryConfig {
        &self.repositories[&tenant.repository]
    }
}
