//! Disaster-recovery runbooks: the engine that runs a runbook's steps (restore, command,
//! http, sql, dns, wait, notify) as a graph, persists each step in the catalog and resumes
//! a killed run. `docs/DR.md` is the spec; the runbook model is
//! [`haven_ops::runbook::Runbook`].
//!
//! ```text
//! Config.runbooks[NAME] ──Dr::start──> dr_runs row + dr_steps (pending)
//!   engine: ready steps in parallel (std threads) ──steps::attempt──> outputs / failure
//!   every step: row written before and after; audit line per event (secrets redacted)
//! Dr::resume(RUN, decisions) ── Dr::abort(RUN) ── check::plan (dry run, `dr plan`)
//! succeeded real run ──failover::adopt(tenant, into)──> the daemon backs up the new site
//! ```
//! Main types: [`Dr`] (config + catalog + progress sink), [`StartOptions`],
//! [`Decision`], [`Outcome`], [`check::Plan`], [`DrError`].

pub mod check;
mod engine;
mod secrets;
pub mod steps;

pub use engine::{new_run_id, pid_alive, Decision, Dr, Outcome, Progress, StartOptions};

/// Errors of the engine itself (a failing step is not one: it is the run's outcome).
#[derive(Debug, thiserror::Error)]
pub enum DrError {
    #[error("no runbook {name:?} in {file} (declared: {declared}); add a [runbooks.{name}] table")]
    NoRunbook {
        name: String,
        file: String,
        declared: String,
    },
    #[error("no disaster-recovery run {0:?} in the catalog; list runs with `haven dr status`")]
    NoRun(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Catalog(#[from] haven_ops::catalog::CatalogError),
    #[error(transparent)]
    Ops(#[from] haven_ops::OpsError),
}

/// The catalog the daemon uses (`[daemon] state-dir`/catalog.sqlite), with every
/// tenant bound to its repository as the daemon binds them: runs started from the CLI
/// are seen by the daemon and the API.
pub fn open_catalog(config: &haven_ops::Config) -> Result<haven_ops::catalog::Catalog, DrError> {
    let dir = &config.daemon.state_dir;
    let catalog = haven_ops::catalog::Catalog::open(&dir.join("catalog.sqlite"))?;
    let repos: Vec<(String, String)> = config
        .tenants
        .values()
        .map(|t| {
            let url = &config.repository_of(t).url;
            (t.name.clone(), haven_ops::location::canonical_location(url))
        })
        .collect();
    catalog.bind_repositories(repos.iter().map(|(t, r)| (t.as_str(), r.as_str())))?;
    Ok(catalog)
}
