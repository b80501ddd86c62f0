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
//!
//! How many mirror sites must accept a write depends on what the command does
//! ([`SiteAccess`]): a command that only reads writes nothing but its lock file, which
//! it takes on the sites that answer, so a dead site does not stop a restore.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use haven_store::{
    DynBackend, ErrorClass, FileKind, MinSites, MirrorBackend, MirrorEvent, StackOptions,
    StoreError,
};

/// What a command does to a repository, which decides how many mirror sites must
/// accept its writes (`docs/MIRROR.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteAccess {
    /// Reads only (restore, ls, snapshots, check, tenant restore): its only write is its
    /// lock file, taken on the sites that answer (at least one); a site that does not
    /// answer is announced and the command goes on.
    Reading,
    /// Adds or removes repository data: every site unless `--min-sites` says fewer.
    Writing,
}

impl SiteAccess {
    /// The min-sites rule for this access, given the configured `--min-sites`.
    pub fn min_sites(self, configured: Option<u32>) -> MinSites {
        match (configured, self) {
            (Some(n), _) => MinSites::AtLeast(n as usize),
            (None, SiteAccess::Reading) => MinSites::AtLeast(1),
            (None, SiteAccess::Writing) => MinSites::All,
        }
    }
}

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
        if let MirrorEvent::Degraded { missed, kind, .. } = event {
            for (site, why) in missed {
                if !warned.lock().expect("warned sites").insert(site.clone()) {
                    continue;
                }
                // Locks are not mirrored data: a lock missing on a site needs no repair.
                if *kind == Some(FileKind::Lock) {
                    eprintln!("haven: warning: mirror site {site} does not answer ({why}); the lock is taken on the other sites and the command goes on with them");
                } else {
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

/// The identity the daemon's catalog keys a tenant's history by: the repository's
/// canonical location. A local folder is made absolute with its symlinks resolved (as
/// far as it exists yet; `local:` dropped), so two spellings of one folder are one
/// repository; an S3 URL is kept as written without trailing slashes; a mirror is the
/// canonical location of each site, in order. (The repository's own id sits in its
/// sealed config: reading it needs the key and the store, at every daemon start, before
/// the first backup has created the repository.)
pub fn canonical_location(location: &str) -> String {
    if let Some(spec) = location.strip_prefix("mirror:") {
        return match haven_store::parse_mirror_sites(spec) {
            Ok(sites) => {
                let sites: Vec<String> = sites
                    .iter()
                    .map(|(name, loc)| format!("{name}={}", canonical_location(loc)))
                    .collect();
                format!("mirror:{}", sites.join(","))
            }
            Err(_) => location.to_string(),
        };
    }
    if haven_s3::is_s3_url(location) || location.contains("://") {
        return location.trim_end_matches('/').to_string();
    }
    let path = std::path::Path::new(location.strip_prefix("local:").unwrap_or(location));
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // The longest existing ancestor is resolved; the rest is appended as written.
    let mut missing = vec![];
    let mut at = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            let mut real = real;
            real.extend(missing.iter().rev());
            return real.display().to_string();
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return absolute.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_location;

    #[test]
    fn spellings_of_one_folder_have_one_canonical_location() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("repo");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let canonical = canonical_location(real.to_str().unwrap());
        for other in [
            format!("{}/link", dir.path().display()),
            format!("local:{}/./repo/", dir.path().display()),
        ] {
            assert_eq!(canonical_location(&other), canonical, "{other}");
        }
        let missing = canonical_location(&format!("{}/link/new/x", dir.path().display()));
        assert_eq!(missing, format!("{canonical}/new/x"));
        assert_eq!(canonical_location("s3://bucket/p/"), "s3://bucket/p");
    }
}
