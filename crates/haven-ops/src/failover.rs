//! After a failover: which servers now serve a tenant. A disaster-recovery run that moved
//! tenant `acme` onto the servers declared for `acme-dr` records that here
//! ([`adopt`]); from then on the daemon and the CLI back `acme` up from `acme-dr`'s
//! component configs ([`effective_tenant`]): same tenant name, repository, plan and
//! points, other servers. Nobody edits the config. [`release`] undoes it (fail back).
//!
//! ```text
//! haven dr run (succeeded) ──adopt(acme, acme-dr, run)──> tenant_meta served-by
//! daemon backup slot ──effective_tenant(config, catalog, acme)──> acme with acme-dr's components
//! ```
//! Stored in the catalog's `tenant_meta` (key [`SERVED_BY`], JSON [`Adoption`]) on the
//! tenant's bound repository: bind the repositories ([`Catalog::bind_repositories`])
//! before calling these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, Tenant};
use crate::OpsError;

/// `tenant_meta` key holding the tenant's [`Adoption`].
pub const SERVED_BY: &str = "served-by";

/// Tenant `tenant` is served by the servers declared for `served_by` since `since`,
/// because of disaster-recovery run `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    pub served_by: String,
    pub since: DateTime<Utc>,
    pub run: String,
}

/// Record that `tenant` is now served by the components of `served_by`.
pub fn adopt(
    catalog: &Catalog,
    tenant: &str,
    served_by: &str,
    run: &str,
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    let a = Adoption {
        served_by: served_by.to_string(),
        since: now,
        run: run.to_string(),
    };
    let json = serde_json::to_string(&a).expect("an adoption serializes");
    catalog.set_tenant_meta(tenant, SERVED_BY, &json)
}

/// The tenant's adoption, if a failover moved it.
pub fn served_by(catalog: &Catalog, tenant: &str) -> Result<Option<Adoption>, CatalogError> {
    match catalog.tenant_meta(tenant, SERVED_BY)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Ok(serde_json::from_str(&s).ok()),
    }
}

/// Serve the tenant from its own config again (fail back).
pub fn release(catalog: &Catalog, tenant: &str) -> Result<(), CatalogError> {
    catalog.set_tenant_meta(tenant, SERVED_BY, "")
}

/// The tenant as it must be backed up now: its own config, or, after a failover, its
/// name, repository and plan with the components of the tenant that serves it.
pub fn effective_tenant(
    config: &Config,
    catalog: &Catalog,
    tenant: &str,
) -> Result<Tenant, OpsError> {
    let own = config.tenant(tenant)?;
    let Some(a) = served_by(catalog, tenant)? else {
        return Ok(own.clone());
    };
    let Some(by) = config.tenants.get(&a.served_by) else {
        return Err(OpsError::Invalid(format!(
            "tenant {tenant} is served by {} since disaster-recovery run {}, but {} declares no tenant {}; declare it again, or fail back with `haven dr release {tenant}`",
            a.served_by,
            a.run,
            config.file.display(),
            a.served_by
        )));
    };
    let mut t = own.clone();
    t.components = by.components.clone();
    Ok(t)
}
