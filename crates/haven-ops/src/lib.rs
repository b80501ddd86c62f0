//! Tenants and recovery points: the operations layer above the repository engine and
//! the sources.
//!
//! ```text
//! haven.toml ──Config::load──> Config { repositories, tenants }
//! backup_tenant:  every component ──stream / tree──> its snapshot; fingerprints
//!                 ──> RecoveryPoint manifest (written last; complete or failed)
//! restore_tenant: RecoveryPoint ──> components restored side by side (side_by_side) into
//!                 the target tenant's ──> fingerprint compared + health probe ──> TenantReport
//! verify_tenant:  the same into scratch targets (throwaway databases/servers), removed after
//! ```
//! Main types: [`config::Config`], [`point::RecoveryPoint`], [`report::TenantReport`],
//! [`OpsError`]. Component kinds are `haven_sources`' stream components plus [`files`].
//! Every program an operation runs (dump tools, hooks, `command` scripts) goes through
//! `haven_sources::process`; `run` gives it the operation's private work folder (under
//! `work-dir`) and the job's deadline.

pub mod alerts;
pub mod backup;
mod base_files;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod dr_runner;
pub mod failover;
pub mod files;
pub mod label;
pub mod location;
pub mod pitr;
pub mod plan;
pub mod point;
pub mod readiness;
pub mod report;
pub mod restore;
pub mod retention;
mod run;
pub mod runbook;
pub mod schedule;
pub mod side_by_side;
pub mod verify;
pub mod wal;
pub mod wal_receiver;

use haven_repo::keys::Secret;
use haven_repo::{RepoError, Repository};
use haven_sources::SourceError;

pub use backup::backup_tenant;
pub use config::{Config, ConfigError};
pub use restore::{restore_tenant, RestoreRequest};
pub use verify::{verify_tenant, verify_tenant_parallel};

/// Errors of tenant operations. Component failures are not errors of the operation: they
/// are recorded in the recovery point or the report.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] haven_store::StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Boxed: a catalog error can itself carry an `OpsError` (rebuilding from a repository).
    #[error(transparent)]
    Catalog(Box<catalog::CatalogError>),
    #[error("{0}")]
    Invalid(String),
}

impl OpsError {
    /// A component's system did not answer (see [`SourceError::is_unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OpsError::Source(e) if e.is_unreachable())
    }
}

impl From<catalog::CatalogError> for OpsError {
    fn from(e: catalog::CatalogError) -> Self {
        OpsError::Catalog(Box::new(e))
    }
}

/// Open a repository declared in the config (its key from password-file or key-file,
/// else `HAVEN_PASSWORD_FILE` / `HAVEN_PASSWORD`). When `create` is set and there is no
/// repository yet, one is made (only in an empty location); the flag says so.
pub fn open_repository(
    rc: &config::RepositoryConfig,
    create: bool,
) -> Result<(Repository, bool), OpsError> {
    open_repository_as(rc, create, location::SiteAccess::Writing)
}

/// [`open_repository`] for a command that does `access` (a reader needs only the
/// mirror sites that answer).
pub fn open_repository_as(
    rc: &config::RepositoryConfig,
    create: bool,
    access: location::SiteAccess,
) -> Result<(Repository, bool), OpsError> {
    let min_sites = access.min_sites(rc.min_sites);
    let backend = location::open_backend(&rc.url, min_sites)?;
    let secret = secret_of(rc)?;
    if backend.list(haven_store::FileKind::Marker)?.is_empty() {
        // `init` itself refuses a location that holds anything.
        if create {
            let repo = Repository::init(backend, &secret, &haven_repo::InitOptions::default())?;
            return Ok((repo, true));
        }
        haven_repo::repository::require_marker(&backend)?;
    }
    Ok((Repository::open(backend, &secret)?, false))
}

fn secret_of(rc: &config::RepositoryConfig) -> Result<Secret, OpsError> {
    if let Some(path) = &rc.key_file {
        return Ok(Secret::from_key_file(path)?);
    }
    if let Some(path) = &rc.password_file {
        return Ok(Secret::from_password_file(path)?);
    }
    if let Some(path) = std::env::var_os("HAVEN_PASSWORD_FILE") {
        return Ok(Secret::from_password_file(std::path::Path::new(&path))?);
    }
    match std::env::var("HAVEN_PASSWORD") {
        Ok(pw) if !pw.is_empty() => Ok(Secret::Passphrase(pw)),
        _ => Err(OpsError::Invalid(format!(
            "repository {} has no password-file or key-file in the config, and neither HAVEN_PASSWORD_FILE nor HAVEN_PASSWORD is set",
            rc.name
        ))),
    }
}
