//! [`MirrorBackend`]: one repository stored in full on several named sites.
//!
//! Semantics (binding; explained with the failure matrix in `docs/MIRROR.md`):
//! * `write`, `remove` and `create` go to every site in parallel. They succeed when at
//!   least [`MinSites`] sites succeeded (default: all); otherwise the error names every
//!   failed site. A success that missed some site is *degraded* and is recorded as a
//!   [`MirrorEvent::Degraded`] (see [`MirrorBackend::events`] and the warning hook).
//! * `read` and `read_range` try the sites in order and fail over on any error. A file
//!   missing on one site but found on a later one is a divergence, recorded.
//! * `list` is the union over the sites that answer; a size disagreement is recorded and
//!   the first site's size is returned.
//! * [`MirrorBackend::repair`] copies what a site lacks from a site that has it and reads
//!   it back; [`MirrorBackend::compare`] reports files missing or differently sized.
//!
//! Durability is each site's own: a site's `write` returns only when the file is durable
//! there, so a successful mirror write is durable on at least `min_sites` sites.
//!
//! A site whose operation failed with a transient error (after its own retries) is held
//! *down* for [`DOWN_FOR`]: operations skip it at once (a missed write, an unlisted site,
//! a read tried last) instead of paying its retry budget again for every file. The first
//! operation after that period tries it again; a success clears the mark.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{DynBackend, ErrorClass, FileInfo, FileKind, ReadBackend, StoreError, WriteBackend};

/// The kinds a repair copies and a compare checks, in the repository's write order
/// (packs before the indexes naming them before the snapshots naming those), so that a
/// site interrupted in the middle of a repair is still a consistent repository.
/// Locks are left out: they are short-lived and belong to the site they were taken on.
pub const MIRRORED_KINDS: [FileKind; 6] = [
    FileKind::Marker,
    FileKind::Config,
    FileKind::Key,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Snapshot,
];

/// How many sites must accept a write for it to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinSites {
    /// Every site (the default): a down site makes writes fail.
    #[default]
    All,
    /// At least this many sites (clamped to 1..=number of sites).
    AtLeast(usize),
}

/// Something a CLI should warn about: the mirror kept working but the sites now differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorEvent {
    /// A write, remove or create succeeded without reaching these sites.
    Degraded {
        operation: &'static str,
        kind: Option<FileKind>,
        name: String,
        /// Site names and the error each gave.
        missed: Vec<(String, String)>,
    },
    /// A read found the file only after these sites reported it missing.
    Divergence {
        kind: FileKind,
        name: String,
        missing_on: Vec<String>,
        found_on: String,
    },
    /// Sites list the same file with different sizes.
    SizeMismatch {
        kind: FileKind,
        name: String,
        sizes: Vec<(String, u64)>,
    },
    /// A site could not be listed; the listing is the union of the others.
    Unlisted {
        kind: FileKind,
        site: String,
        error: String,
    },
}

type Hook = Box<dyn Fn(&MirrorEvent) + Send + Sync>;

/// How long a site that failed transiently is skipped before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(30);

/// A repository mirrored on several named sites.
pub struct MirrorBackend {
    sites: Vec<(String, DynBackend)>,
    min_sites: MinSites,
    events: Mutex<Vec<MirrorEvent>>,
    hook: Option<Hook>,
    /// Sites held down (by index): since when, and the error that put them there.
    down: Mutex<BTreeMap<usize, (Instant, String)>>,
}

impl std::fmt::Debug for MirrorBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorBackend")
            .field("location", &self.location())
            .field("min_sites", &self.min_sites)
            .finish()
    }
}

/// One missing or different file on one site, as [`MirrorBackend::compare`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub site: String,
    pub kind: FileKind,
    pub name: String,
    pub problem: DisagreementKind,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DisagreementKind {
    /// Other sites have the file, this one does not.
    Missing,
    /// This site's size differs from the first site holding the file.
    Size { here: u64, elsewhere: u64 },
}

/// What [`MirrorBackend::compare`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompareReport {
    pub disagreements: Vec<Disagreement>,
    /// Sites that could not be listed, with the error: they were not compared.
    pub unreachable: Vec<(String, String)>,
}

impl CompareReport {
    /// Every site answered and all hold the same files with the same sizes.
    pub fn in_sync(&self) -> bool {
        self.disagreements.is_empty() && self.unreachable.is_empty()
    }
}

/// One file copied by [`MirrorBackend::repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub site: String,
    pub kind: FileKind,
    pub name: String,
    pub bytes: u64,
}

/// What [`MirrorBackend::repair`] did and what it could not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub copied: Vec<Copied>,
    /// Human-readable problems: unreachable sites, size conflicts, failed copies or
    /// verifications. Empty when the repair is complete.
    pub problems: Vec<String>,
}

impl RepairReport {
    /// Files copied to `site`.
    pub fn copied_to(&self, site: &str) -> usize {
        self.copied.iter().filter(|c| c.site == site).count()
    }

    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Parse the site list of a `mirror:` location: `NAME=LOCATION,NAME=LOCATION,...`
/// (without the `mirror:` prefix). Names must be unique and non-empty. Opening each
/// location is the caller's business.
pub fn parse_mirror_sites(spec: &str) -> Result<Vec<(String, String)>, StoreError> {
    let bad = |msg: String| StoreError::new(ErrorClass::Permanent, spec, "", msg);
    let mut out: Vec<(String, String)> = Vec::new();
    for part in spec.split(',') {
        let (name, loc) = part.split_once('=').ok_or_else(|| {
            bad(format!(
                "mirror site `{part}` has no name; write mirror:NAME=LOCATION,NAME=LOCATION"
            ))
        })?;
        let (name, loc) = (name.trim(), loc.trim());
        if name.is_empty() || loc.is_empty() {
            return Err(bad(format!(
                "mirror site `{part}` needs both a name and a location (NAME=LOCATION)"
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("mirror site name `{name}` is used twice")));
        }
        out.push((name.to_string(), loc.to_string()));
    }
    if out.len() < 2 {
        return Err(bad("a mirror needs at least two sites".to_string()));
    }
    Ok(out)
}

impl MirrorBackend {
    /// A mirror of `sites` (name, backend), tried in this order for reads.
    pub fn new(sites: Vec<(String, DynBackend)>, min_sites: MinSites) -> Result<Self, StoreError> {
        if sites.is_empty() {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                "mirror:",
                "",
                "a mirror needs at least one site",
            ));
        }
        for (i, (n, _)) in sites.iter().enumerate() {
            if sites[..i].iter().any(|(m, _)| m == n) {
                return Err(StoreError::new(
                    ErrorClass::Permanent,
                    "mirror:",
                    "",
                    format!("mirror site name `{n}` is used twice"),
                ));
            }
        }
        Ok(MirrorBackend {
            sites,
            min_sites,
            events: Mutex::new(Vec::new()),
            hook: None,
            down: Mutex::new(BTreeMap::new()),
        })
    }

    /// Call `hook` on every recorded event as it happens (e.g. to print a warning).
    pub fn with_warning_hook(
        mut self,
        hook: impl Fn(&MirrorEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    pub fn sites(&self) -> impl Iterator<Item = (&str, &DynBackend)> {
        self.sites.iter().map(|(n, b)| (n.as_str(), b))
    }

    /// The number of sites a write must reach.
    pub fn required_sites(&self) -> usize {
        match self.min_sites {
            MinSites::All => self.sites.len(),
            MinSites::AtLeast(n) => n.clamp(1, self.sites.len()),
        }
    }

    /// Events recorded so far (degraded writes, divergences), oldest first.
    pub fn events(&self) -> Vec<MirrorEvent> {
        self.events.lock().expect("mirror lock poisoned").clone()
    }

    /// Events recorded so far, clearing the record.
    pub fn take_events(&self) -> Vec<MirrorEvent> {
        std::mem::take(&mut *self.events.lock().expect("mirror lock poisoned"))
    }

    /// Sites that missed at least one write, remove or create, with how many.
    pub fn degraded_sites(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.events.lock().expect("mirror lock poisoned").iter() {
            if let MirrorEvent::Degraded { missed, .. } = e {
                for (site, _) in missed {
                    *out.entry(site.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    fn record(&self, event: MirrorEvent) {
        if let Some(hook) = &self.hook {
            hook(&event);
        }
        self.events
            .lock()
            .expect("mirror lock poisoned")
            .push(event);
    }

    /// The error of a site held down, if it is (and the hold has not expired).
    fn held_down(&self, i: usize) -> Option<StoreError> {
        let down = self.down.lock().expect("mirror lock poisoned");
        let (since, why) = down.get(&i)?;
        (since.elapsed() < DOWN_FOR).then(|| {
            StoreError::new(
                ErrorClass::Transient,
                &self.sites[i].1.location(),
                "",
                format!(
                    "skipped: the site failed {} s ago ({why}); it is tried again after {} s",
                    since.elapsed().as_secs(),
                    DOWN_FOR.as_secs()
                ),
            )
        })
    }

    /// Update site `i`'s down mark from the result of an operation on it.
    fn observe<T>(&self, i: usize, r: &Result<T, StoreError>) {
        let mut down = self.down.lock().expect("mirror lock poisoned");
        match r {
            Ok(_) => {
                down.remove(&i);
            }
            Err(e) if e.class == ErrorClass::Transient => {
                down.insert(i, (Instant::now(), e.message.clone()));
            }
            Err(_) => {}
        }
    }

    /// Run `op` on every site in parallel (sites held down are skipped); results in
    /// site order.
    fn on_all<T: Send>(
        &self,
        op: impl Fn(&dyn WriteBackend) -> Result<T, StoreError> + Sync,
    ) -> Vec<Result<T, StoreError>> {
        if self.sites.len() == 1 {
            return vec![op(&*self.sites[0].1)];
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .sites
                .iter()
                .enumerate()
                .map(|(i, (_, b))| {
                    let op = &op;
                    s.spawn(move || {
                        if let Some(e) = self.held_down(i) {
                            return Err(e);
                        }
                        let r = op(&**b);
                        self.observe(i, &r);
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a mirror site thread panicked"))
                .collect()
        })
    }

    /// Apply the min-sites rule to the results of a write-like operation.
    fn settle(
        &self,
        operation: &'static str,
        kind: Option<FileKind>,
        name: &str,
        results: Vec<Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let mut failed: Vec<(String, StoreError)> = Vec::new();
        for ((site, _), r) in self.sites.iter().zip(results) {
            if let Err(e) = r {
                failed.push((site.clone(), e));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let ok = self.sites.len() - failed.len();
        let required = self.required_sites();
        if ok >= required {
            self.record(MirrorEvent::Degraded {
                operation,
                kind,
                name: name.to_string(),
                missed: failed
                    .iter()
                    .map(|(s, e)| (s.clone(), e.to_string()))
                    .collect(),
            });
            return Ok(());
        }
        // Transient only if every failure is; otherwise the first lasting class.
        let class = failed
            .iter()
            .map(|(_, e)| e.class)
            .find(|c| *c != ErrorClass::Transient)
            .unwrap_or(ErrorClass::Transient);
        let names: Vec<&str> = failed.iter().map(|(s, _)| s.as_str()).collect();
        let details: Vec<String> = failed.iter().map(|(s, e)| format!("{s}: {e}")).collect();
        let file = kind.map(|k| k.path(name)).unwrap_or_default();
        Err(StoreError::new(
            class,
            &self.location(),
            &file,
            format!(
                "{operation} reached {ok} of {} mirror sites but {required} are required; failed sites: {} ({}). Bring the failed sites back, or lower --min-sites to continue degraded, then run `haven repair`",
                self.sites.len(),
                names.join(", "),
                details.join("; ")
            ),
        ))
    }

    /// Try the sites in order until one answers.
    fn read_any<T>(
        &self,
        kind: FileKind,
        name: &str,
        op: impl Fn(&dyn WriteBackend) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut missing_on = Vec::new();
        let mut first_other: Option<StoreError> = None;
        let mut first_missing: Option<StoreError> = None;
        // Sites held down are tried last.
        let mut order: Vec<usize> = (0..self.sites.len()).collect();
        order.sort_by_key(|i| self.held_down(*i).is_some());
        for i in order {
            let (site, b) = &self.sites[i];
            let r = op(&**b);
            if self.sites.len() > 1 {
                self.observe(i, &r);
            }
            match r {
                Ok(v) => {
                    if !missing_on.is_empty() {
                        self.record(MirrorEvent::Divergence {
                            kind,
                            name: name.to_string(),
                            missing_on,
                            found_on: site.clone(),
                        });
                    }
                    return Ok(v);
                }
                Err(e) if e.is_not_found() => {
                    missing_on.push(site.clone());
                    first_missing.get_or_insert(e);
                }
                Err(e) => {
                    first_other.get_or_insert(e);
                }
            }
        }
        // NotFound only when every site said so; an unreachable site might have it.
        Err(first_other
            .or(first_missing)
            .expect("a mirror has at least one site"))
    }

    /// List one kind on every site: per site, name -> size (or the error).
    fn list_sites(&self, kind: FileKind) -> Vec<Result<BTreeMap<String, u64>, StoreError>> {
        self.on_all(|b| {
            b.list(kind)
                .map(|l| l.into_iter().map(|f| (f.name, f.size)).collect())
        })
    }

    /// Files missing on a site, or listed with a different size, for `check`.
    pub fn compare(&self) -> CompareReport {
        // An explicit look at every site: none is skipped as down.
        self.down.lock().expect("mirror lock poisoned").clear();
        let mut report = CompareReport::default();
        for kind in MIRRORED_KINDS {
            let listed = self.list_sites(kind);
            let mut union: BTreeMap<&str, u64> = BTreeMap::new();
            for l in listed.iter().flatten() {
                for (n, s) in l {
                    union.entry(n.as_str()).or_insert(*s);
                }
            }
            for ((site, _), l) in self.sites.iter().zip(&listed) {
                let l = match l {
                    Ok(l) => l,
                    Err(e) => {
                        if !report.unreachable.iter().any(|(s, _)| s == site) {
                            report.unreachable.push((site.clone(), e.to_string()));
                        }
                        continue;
                    }
                };
                for (name, &size) in &union {
                    let problem = match l.get(*name) {
                        None => DisagreementKind::Missing,
                        Some(&here) if here != size => DisagreementKind::Size {
                            here,
                            elsewhere: size,
                        },
                        Some(_) => continue,
                    };
                    report.disagreements.push(Disagreement {
                        site: site.clone(),
                        kind,
                        name: name.to_string(),
                        problem,
                    });
                }
            }
        }
        report
    }

    /// Copy every file a site lacks from a site that has it, and verify the copy by
    /// reading it back. Sites that cannot be listed are skipped (reported as problems);
    /// files whose sizes disagree between sites are not touched (reported: which copy is
    /// right needs `haven check --read-data`). A site without a repository layout is
    /// created first. Safe to run again after an interruption.
    pub fn repair(&self) -> RepairReport {
        self.down.lock().expect("mirror lock poisoned").clear();
        let mut report = RepairReport::default();
        let mut skip = vec![false; self.sites.len()];
        for kind in MIRRORED_KINDS {
            let listed = self.list_sites(kind);
            for (i, l) in listed.iter().enumerate() {
                if let Err(e) = l {
                    if !skip[i] {
                        report.problems.push(format!(
                            "site {} could not be listed and was not repaired: {e}",
                            self.sites[i].0
                        ));
                        skip[i] = true;
                    }
                }
            }
            let mut holders: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
            for (i, l) in listed.iter().enumerate() {
                if let Ok(l) = l {
                    for (n, s) in l {
                        holders.entry(n.as_str()).or_default().push((i, *s));
                    }
                }
            }
            if kind == FileKind::Marker && !holders.is_empty() {
                for (i, l) in listed.iter().enumerate() {
                    if matches!(l, Ok(l) if l.is_empty()) && !skip[i] {
                        // A site that was down at init: give it the layout. "Exists" is fine.
                        let _ = self.sites[i].1.create();
                    }
                }
            }
            for (name, have) in holders {
                let size = have[0].1;
                if have.iter().any(|(_, s)| *s != size) {
                    let sizes: Vec<String> = have
                        .iter()
                        .map(|(i, s)| format!("{}: {s} bytes", self.sites[*i].0))
                        .collect();
                    report.problems.push(format!(
                        "{} differs in size between sites ({}); not repaired, run `haven check --read-data` on each site",
                        kind.path(name),
                        sizes.join(", ")
                    ));
                    continue;
                }
                let targets: Vec<usize> = (0..self.sites.len())
                    .filter(|i| !skip[*i] && !have.iter().any(|(h, _)| h == i))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let data = have.iter().find_map(|(i, _)| {
                    self.sites[*i]
                        .1
                        .read(kind, name)
                        .ok()
                        .filter(|d| d.len() as u64 == size)
                });
                let Some(data) = data else {
                    report.problems.push(format!(
                        "{} could not be read in full from any site that lists it",
                        kind.path(name)
                    ));
                    continue;
                };
                for t in targets {
                    let (site, b) = &self.sites[t];
                    let verified = b
                        .write(kind, name, &data)
                        .and_then(|()| b.read(kind, name))
                        .map(|back| back == data);
                    match verified {
                        Ok(true) => report.copied.push(Copied {
                            site: site.clone(),
                            kind,
                            name: name.to_string(),
                            bytes: size,
                        }),
                        Ok(false) => report.problems.push(format!(
                            "{} copied to site {site} but reads back different bytes",
                            kind.path(name)
                        )),
                        Err(e) => report.problems.push(format!(
                            "{} could not be copied to site {site}: {e}",
                            kind.path(name)
                        )),
                    }
                }
            }
        }
        report
    }
}

impl ReadBackend for MirrorBackend {
    fn location(&self) -> String {
        let sites: Vec<String> = self
            .sites
            .iter()
            .map(|(n, b)| format!("{n}={}", b.location()))
            .collect();
        format!("mirror:{}", sites.join(","))
    }

    fn remote(&self) -> bool {
        self.sites.iter().any(|(_, b)| b.remote())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        let listed = self.list_sites(kind);
        let mut union: BTreeMap<String, Vec<(usize, u64)>> = BTreeMap::new();
        let mut first_err = None;
        let mut answered = 0;
        for (i, l) in listed.into_iter().enumerate() {
            match l {
                Ok(l) => {
                    answered += 1;
                    for (n, s) in l {
                        union.entry(n).or_default().push((i, s));
                    }
                }
                Err(e) => {
                    self.record(MirrorEvent::Unlisted {
                        kind,
                        site: self.sites[i].0.clone(),
                        error: e.to_string(),
                    });
                    first_err.get_or_insert(e);
                }
            }
        }
        if answered == 0 {
            return Err(first_err.expect("a mirror has at least one site"));
        }
        Ok(union
            .into_iter()
            .map(|(name, have)| {
                let size = have[0].1;
                if have.iter().any(|(_, s)| *s != size) {
                    self.record(MirrorEvent::SizeMismatch {
                        kind,
                        name: name.clone(),
                        sizes: have
                            .iter()
                            .map(|(i, s)| (self.sites[*i].0.clone(), *s))
                            .collect(),
                    });
                }
                FileInfo { name, size }
            })
            .collect())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        self.read_any(kind, name, |b| b.read(kind, name))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.read_any(kind, name, |b| b.read_range(kind, name, offset, length))
    }
}

impl WriteBackend for MirrorBackend {
    fn create(&self) -> Result<(), StoreError> {
        let results = self.on_all(|b| b.create());
        self.settle("create", None, "", results)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let results = self.on_all(|b| b.write(kind, name, data));
        self.settle("write", Some(kind), name, results)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        let results = self.on_all(|b| b.remove(kind, name));
        self.settle("remove", Some(kind), name, results)
    }

    fn remove_stale_temporaries(&self, min_age: std::time::Duration) -> Result<usize, StoreError> {
        // Best effort per site: leftovers on a down site are cleaned next time.
        let results = self.on_all(|b| b.remove_stale_temporaries(min_age));
        let mut total = 0;
        let mut first_err = None;
        let mut ok = 0;
        for r in results {
            match r {
                Ok(n) => {
                    ok += 1;
                    total += n;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if ok == 0 => Err(e),
            _ => Ok(total),
        }
    }
}
