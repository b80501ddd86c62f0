//! Which backend a repository location opens. The one place that knows the URL schemes:
//!
//! * `s3://BUCKET/PREFIX` and `s3:http(s)://HOST:PORT/BUCKET/PREFIX`: [`haven_s3::S3Backend`]
//!   (endpoint, region and credentials from the `AWS_*` environment variables), wrapped in
//!   the standard retry/limit stack ([`haven_store::wrap`]: the only retry layer; the S3
//!   client itself does not retry).
//! * `mirror:NAME=LOCATION,NAME=LOCATION,...`: one repository on several sites
//!   ([`haven_store::MirrorBackend`], semantics in `docs/MIRROR.md`), each site a location
//!   of the other kinds, wrapped in the standard retry/limit stack.
//! * anything else: a local folder (`haven_store::open_location`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use haven_store::{
    DynBackend, ErrorClass, MinSites, MirrorBackend, MirrorEvent, StackOptions, StoreError,
};

/// Open the backend for a repository location.
pub fn open_backend(location: &str, min_sites: MinSites) -> Result<DynBackend, StoreError> {
    match open_mirror(location, min_sites)? {
        Some(m) => Ok(m),
        None if haven_s3::is_s3_url(location) => Ok(haven_store::wrap(
            open_site(location)?,
            &StackOptions::default(),
        )),
        None => open_site(location),
    }
}

/// The mirror behind a `mirror:` location, or `None` for any other location. A site that
/// misses a write is announced once per site on stderr.
pub fn open_mirror(
    location: &str,
    min_sites: MinSites,
) -> Result<Option<Arc<MirrorBackend>>, StoreError> {
    let Some(spec) = location.strip_prefix("mirror:") else {
        return Ok(None);
    };
    let mut sites = vec![];
    for (name, loc) in haven_store::parse_mirror_sites(spec)? {
        if loc.starts_with("mirror:") {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                location,
                "",
                format!("mirror site {name} is itself a mirror; list every site in one mirror: location"),
            ));
        }
        let backend = open_site(&loc).map_err(|mut e| {
            e.message = format!("mirror site {name}: {}", e.message);
            e
        })?;
        sites.push((name, backend));
    }
    let warned = Mutex::new(HashSet::new());
    let mirror = haven_store::mirror_stack(sites, min_sites, &StackOptions::default())?.with_warning_hook(move |event| {
        if let MirrorEvent::Degraded { missed, .. } = event {
            for (site, why) in missed {
                if warned.lock().expect("warned sites").insert(site.clone()) {
                    eprintln!("haven: warning: mirror site {site} missed a write ({why}); continuing on the other sites (--min-sites). Run `haven repair` when it is back");
                }
            }
        }
    });
    Ok(Some(Arc::new(mirror)))
}

/// One site: S3 or a local folder.
fn open_site(location: &str) -> Result<DynBackend, StoreError> {
    if haven_s3::is_s3_url(location) {
        return Ok(Arc::new(haven_s3::S3Backend::open(location)?));
    }
    haven_store::open_location(location)
}
