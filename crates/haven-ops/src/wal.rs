//! The WAL archive of physical PostgreSQL components, kept in the tenant's repository.
//!
//! ```text
//! archive_command ──haven wal push──> one-file snapshot per WAL file
//!     tags: haven-wal, haven-wal-tenant=T, haven-component=C, haven-wal-file=NAME,
//!           haven-wal-system=SYSID (segments)
//! restore ──stage──> every archived file the base backup's replay can need, restored in
//!     parallel into a folder; the server's restore_command copies from there
//! haven wal fetch NAME PATH ──> one file (a restore_command of the user's own)
//! ```
//! WAL snapshots carry their own tenant tag (`haven-wal-tenant`), not the points'
//! `haven-tenant`, so the retention of points never takes them for orphans; [`expired`]
//! is their own retention: a file is kept while a kept base backup may need it.
//!
//! A push of a name that is already archived with the same content succeeds without
//! storing anything (PostgreSQL retries a push whose success it did not record); with
//! other content it fails, as PostgreSQL's documentation asks of an archive command. A
//! segment of another cluster (its header's system identifier differs from the
//! component's archive) is refused.
//!
//! Limits: every push and fetch lists the repository's snapshots (a process per file,
//! as `archive_command` runs it); a repository holding many thousands of WAL files makes
//! each push slower.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use haven_repo::backup::backup_stream;
use haven_repo::progress::Progress;
use haven_repo::restore::restore_to_writer;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::IndexedRepository;
use haven_sources::postgres::physical::lsn::{segment_header, segment_of};
use haven_sources::postgres::physical::{BaseFacts, RecoveryTarget, WalFile};
use haven_sources::postgres::{PostgresComponent, PostgresConfig, PostgresMode};

use crate::backup::{open_tenant_repository, open_tenant_view, Observer};
use crate::config::{ComponentConfig, Config, Tenant};
use crate::location::SiteAccess;
use crate::point::component_tag;
use crate::OpsError;

/// Tag on every archived WAL file.
pub const WAL_TAG: &str = "haven-wal";
/// The default segment size, used to read names when nothing says otherwise.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

pub fn wal_tenant_tag(tenant: &str) -> String {
    format!("haven-wal-tenant={tenant}")
}

fn file_tag(name: &str) -> String {
    format!("haven-wal-file={name}")
}

fn system_tag(sysid: u64) -> String {
    format!("haven-wal-system={sysid}")
}

/// One archived WAL file.
#[derive(Debug, Clone)]
pub struct ArchivedWal {
    pub name: String,
    pub file: WalFile,
    pub entry: SnapshotEntry,
}

impl ArchivedWal {
    /// When it was archived.
    pub fn time(&self) -> DateTime<Utc> {
        self.entry.snapshot.time
    }

    /// The time of its last transaction (commit or abort), when it holds one.
    pub fn last_commit(&self) -> Option<DateTime<Utc>> {
        let text = self.tag("haven-wal-last-commit=")?;
        chrono::NaiveDateTime::parse_from_str(text.trim_end_matches(" UTC"), "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc())
    }

    /// The restore points made in it.
    pub fn restore_points(&self) -> impl Iterator<Item = &str> {
        self.entry
            .snapshot
            .tags
            .iter()
            .filter_map(|t| t.strip_prefix("haven-wal-restore-point="))
    }

    fn tag(&self, prefix: &str) -> Option<&str> {
        self.entry
            .snapshot
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(prefix))
    }

    /// The system identifier of the cluster it came from (segments).
    pub(crate) fn system(&self) -> Option<&str> {
        self.entry
            .snapshot
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("haven-wal-system="))
    }
}

/// The physical PostgreSQL component `component` of `tenant`, or why it is not one.
pub fn physical_component<'a>(
    tenant: &'a Tenant,
    component: &str,
) -> Result<&'a PostgresConfig, OpsError> {
    match tenant.components.get(component) {
        Some(ComponentConfig::Postgres(pg)) if pg.mode == PostgresMode::Physical => Ok(pg),
        Some(_) => Err(OpsError::Invalid(format!(
            "component {component} of tenant {} is not a PostgreSQL component with mode = \"physical\"; \
             WAL is archived only for those",
            tenant.name
        ))),
        None => Err(OpsError::Invalid(format!(
            "tenant {} has no component {component} (declared: {})",
            tenant.name,
            tenant.components.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Every archived WAL file of a component, in WAL order (history files first); of
/// several snapshots of one name, the oldest — but of a partial segment (stored again
/// each time the receiver saw it grow), the newest.
pub fn list_wal(snapshots: &[SnapshotEntry], tenant: &str, component: &str) -> Vec<ArchivedWal> {
    let mut out: Vec<ArchivedWal> = snapshots
        .iter()
        .filter_map(|e| {
            let name = wal_file_of(e, tenant, component)?.to_string();
            let file = WalFile::parse(&name, DEFAULT_SEGMENT_SIZE)?;
            Some(ArchivedWal {
                name,
                file,
                entry: e.clone(),
            })
        })
        .collect();
    let when = |a: &ArchivedWal| {
        let t = a.entry.snapshot.time.timestamp_nanos_opt().unwrap_or(0);
        if matches!(a.file, WalFile::Partial { .. }) {
            -t
        } else {
            t
        }
    };
    out.sort_by_key(|a| (order_key(&a.file), when(a)));
    out.dedup_by(|later, first| later.name == first.name);
    out
}

/// The WAL file name a snapshot archives for `component` of `tenant`, if it is one.
pub(crate) fn wal_file_of<'a>(
    e: &'a SnapshotEntry,
    tenant: &str,
    component: &str,
) -> Option<&'a str> {
    let tags = &e.snapshot.tags;
    let ours = tags.iter().any(|t| t == WAL_TAG)
        && tags.contains(&wal_tenant_tag(tenant))
        && tags.contains(&component_tag(component));
    if !ours {
        return None;
    }
    tags.iter().find_map(|t| t.strip_prefix("haven-wal-file="))
}

/// History files first, then segments by position, timeline, partial after complete.
fn order_key(f: &WalFile) -> (u8, u64, u32, u8) {
    match *f {
        WalFile::History { timeline } => (0, 0, timeline, 0),
        WalFile::Segment { timeline, segno } => (1, segno, timeline, 0),
        WalFile::Partial { timeline, segno } => (1, segno, timeline, 1),
        WalFile::Backup {
            timeline, segno, ..
        } => (1, segno, timeline, 2),
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The same name with the same content was archived already.
    AlreadyArchived,
}

/// Archive the WAL file at `path` for `component` of `tenant` (`archive_command`).
/// With `ahead` > 1, up to `ahead - 1` more segments the server has marked ready
/// (`pg_wal/archive_status/*.ready`) are archived by the same call, their `pg_waldump`
/// summaries made in parallel and the repository opened and listed once; the server's
/// own later calls for them then find them pushed (a mark in the work folder holding
/// their hash) and return at once.
pub fn push_wal(
    config: &Config,
    tenant: &str,
    component: &str,
    path: &Path,
    ahead: usize,
    lock_wait: Duration,
) -> Result<Pushed, OpsError> {
    let t = config.tenant(tenant)?;
    let pg = PostgresComponent::new(physical_component(t, component)?.clone());
    // Keyed by the repository too: two configs archiving one cluster into two
    // repositories must not take each other's marks.
    let repo_key = blake3::hash(config.repository_of(t).url.as_bytes()).to_hex();
    let marks = config.work_base().join(format!(
        "haven-wal-ahead-{tenant}-{component}-{}",
        &repo_key[..16]
    ));
    let first = Pending::read(path)?;
    if take_mark(&marks, &first) {
        return Ok(Pushed::AlreadyArchived);
    }
    let mut batch = vec![first];
    if ahead > 1 {
        batch.extend(
            ready_siblings(path, &batch[0].name, ahead - 1)
                .iter()
                .filter_map(|p| Pending::read(p).ok()),
        );
    }
    // pg_waldump per segment: the part of a push that costs CPU, done side by side.
    let tagged: Vec<Result<Vec<String>, OpsError>> = std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .iter()
            .map(|p| s.spawn(|| p.tags(&pg, tenant, component)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(OpsError::Invalid("a WAL summary panicked".into())))
            })
            .collect()
    });
    let (repo, _lock) =
        open_tenant_repository(config, t, false, "wal push", lock_wait, &Observer::quiet())?;
    let (snapshots, _) = repo.repo.snapshots()?;
    let archived = list_wal(&snapshots, tenant, component);
    let mut result = None;
    for (i, (pending, tags)) in batch.iter().zip(tagged).enumerate() {
        let pushed = tags.and_then(|tags| pending.store(&repo, &archived, tenant, component, tags));
        if i == 0 {
            result = Some(pushed?);
            continue;
        }
        // One pushed ahead: a mark, so the server's own call returns at once. One that
        // failed is left to that call, which reports why.
        if pushed.is_ok() {
            let _ = fs::create_dir_all(&marks).and_then(|()| {
                fs::write(marks.join(&pending.name), pending.hash.to_hex().as_str())
            });
        }
    }
    Ok(result.expect("the first file is always in the batch"))
}

/// A WAL file read for a push.
struct Pending {
    name: String,
    path: PathBuf,
    bytes: Vec<u8>,
    hash: blake3::Hash,
    /// The cluster's system identifier (segments only).
    system: Option<u64>,
}

impl Pending {
    fn read(path: &Path) -> Result<Pending, OpsError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| OpsError::Invalid(format!("{} names no WAL file", path.display())))?
            .to_string();
        let file = WalFile::parse(&name, DEFAULT_SEGMENT_SIZE).ok_or_else(|| {
            OpsError::Invalid(format!(
                "{name} is not a WAL file name (a segment, a .partial segment, a .history or a \
                 .backup file); \
                 archive_command passes %p"
            ))
        })?;
        let bytes = fs::read(path)
            .map_err(|e| OpsError::Invalid(format!("reading WAL file {}: {e}", path.display())))?;
        let system = match file {
            WalFile::History { .. } | WalFile::Backup { .. } => None,
            _ => Some(
                segment_header(&bytes)
                    .ok_or_else(|| {
                        OpsError::Invalid(format!(
                            "{} does not start with a WAL segment header; it is not a segment of a \
                             PostgreSQL cluster",
                            path.display()
                        ))
                    })?
                    .system_identifier,
            ),
        };
        Ok(Pending {
            hash: blake3::hash(&bytes),
            name,
            path: path.to_path_buf(),
            bytes,
            system,
        })
    }

    fn tags(
        &self,
        pg: &PostgresComponent,
        tenant: &str,
        component: &str,
    ) -> Result<Vec<String>, OpsError> {
        wal_tags(pg, tenant, component, &self.name, self.system, &self.path)
    }

    /// Store it unless archived already (same bytes: done; other bytes or another
    /// cluster: refused).
    fn store(
        &self,
        repo: &IndexedRepository,
        archived: &[ArchivedWal],
        tenant: &str,
        component: &str,
        tags: Vec<String>,
    ) -> Result<Pushed, OpsError> {
        let name = &self.name;
        if let Some(id) = self.system {
            let other = archived
                .iter()
                .filter_map(|a| a.system())
                .find(|s| *s != id.to_string());
            if let Some(other) = other {
                return Err(OpsError::Invalid(format!(
                    "{name} belongs to the cluster with system identifier {id}, but component {component} \
                     of tenant {tenant} archives cluster {other}: two clusters point their \
                     archive_command at one component; give each its own"
                )));
            }
        }
        if let Some(same) = archived.iter().find(|a| a.name == *name) {
            let mut stored = vec![];
            restore_to_writer(repo, &same.entry.snapshot, None, &mut stored)?;
            if stored == self.bytes {
                return Ok(Pushed::AlreadyArchived);
            }
            return Err(OpsError::Invalid(format!(
                "{name} is archived already with other content (snapshot {}); refusing to \
                 replace it: check that one cluster only archives into component {component}",
                same.entry.id.to_hex()
            )));
        }
        backup_stream(
            repo.clone(),
            self.bytes.as_slice(),
            name,
            tags,
            None,
            Arc::new(Progress::default()),
        )?;
        Ok(Pushed::Stored)
    }
}

/// Whether `pending` was pushed ahead by an earlier call (its mark holds its hash); the
/// mark is used up either way.
fn take_mark(marks: &Path, pending: &Pending) -> bool {
    let mark = marks.join(&pending.name);
    let Ok(text) = fs::read_to_string(&mark) else {
        return false;
    };
    let _ = fs::remove_file(&mark);
    text.trim() == pending.hash.to_hex().as_str()
}

/// Up to `n` other WAL files the server has marked ready for archiving, oldest first
/// (`archive_status/NAME.ready` beside `path`).
fn ready_siblings(path: &Path, name: &str, n: usize) -> Vec<PathBuf> {
    let Some(dir) = path.parent() else {
        return vec![];
    };
    let Ok(entries) = fs::read_dir(dir.join("archive_status")) else {
        return vec![];
    };
    let mut ready: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(str::to_string)
        })
        .filter(|n| n != name && WalFile::parse(n, DEFAULT_SEGMENT_SIZE).is_some())
        .collect();
    ready.sort();
    ready.into_iter().take(n).map(|n| dir.join(n)).collect()
}

/// The tags of an archived WAL file: what it is, whose, and for segments (complete or
/// partial, read at `path`) its cluster, last commit and restore points.
pub(crate) fn wal_tags(
    pg: &PostgresComponent,
    tenant: &str,
    component: &str,
    name: &str,
    system: Option<u64>,
    path: &Path,
) -> Result<Vec<String>, OpsError> {
    let mut tags = vec![
        WAL_TAG.to_string(),
        wal_tenant_tag(tenant),
        component_tag(component),
        file_tag(name),
    ];
    if let Some(system) = system {
        tags.push(system_tag(system));
        let summary = pg.summarize_segment(path)?;
        if let Some(time) = summary.last_commit {
            tags.push(format!("haven-wal-last-commit={time}"));
        }
        tags.extend(
            summary
                .restore_points
                .iter()
                .map(|n| format!("haven-wal-restore-point={n}")),
        );
    }
    Ok(tags)
}

/// Restore the archived WAL file `name` to `dest` (`restore_command`). `Ok(false)` when
/// it is not archived (PostgreSQL then ends recovery or tries another source).
pub fn fetch_wal(
    config: &Config,
    tenant: &str,
    component: &str,
    name: &str,
    dest: &Path,
    lock_wait: Duration,
) -> Result<bool, OpsError> {
    let t = config.tenant(tenant)?;
    physical_component(t, component)?;
    let (view, _lock) = open_tenant_view(config, t, "wal fetch", lock_wait, SiteAccess::Reading)?;
    let archived = list_wal(&view.snapshots, tenant, component);
    let Some(found) = archived.into_iter().find(|a| a.name == name) else {
        return Ok(false);
    };
    write_restored(&view.repo, &found, dest)?;
    Ok(true)
}

/// Write one archived file to `dest` through a temporary name, so the server never
/// reads a half-written file.
fn write_restored(
    repo: &IndexedRepository,
    wal: &ArchivedWal,
    dest: &Path,
) -> Result<(), OpsError> {
    let tmp = dest.with_extension("haven-partial");
    let written = fs::File::create(&tmp)
        .map_err(|e| OpsError::Invalid(format!("creating {}: {e}", tmp.display())))
        .and_then(|mut f| {
            restore_to_writer(repo, &wal.entry.snapshot, None, &mut f)?;
            f.flush()
                .map_err(|e| OpsError::Invalid(format!("writing {}: {e}", tmp.display())))?;
            // The server fsyncs each segment it restores: have it on disk by then.
            haven_repo::restore::start_writeback(&f, 0, 0);
            Ok(())
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, dest)
        .map_err(|e| OpsError::Invalid(format!("renaming {} into place: {e}", tmp.display())))
}

/// Which archived files a replay from `base` can read: every history file, and every
/// segment from the one holding the base's start on (every timeline: the server picks).
/// A partial segment counts when no complete one of its timeline and number is archived
/// (the receiver's newest WAL); it is staged under the segment's name.
pub fn needed_from(archived: &[ArchivedWal], base: &BaseFacts) -> Vec<ArchivedWal> {
    let first = segment_of(base.start_lsn, base.segment_size);
    let complete: BTreeSet<(u32, u64)> = archived
        .iter()
        .filter_map(|a| match a.file {
            WalFile::Segment { timeline, segno } => Some((timeline, segno)),
            _ => None,
        })
        .collect();
    archived
        .iter()
        .filter(|a| match a.file {
            WalFile::History { .. } => true,
            WalFile::Segment { segno, .. } => segno >= first,
            WalFile::Partial { timeline, segno } => {
                segno >= first && !complete.contains(&(timeline, segno))
            }
            // Read only by name, never by the server's recovery.
            WalFile::Backup { .. } => false,
        })
        .cloned()
        .collect()
}

/// For a time or LSN target on one timeline, the files a replay reads stop one segment
/// past the one where recovery stops (the first segment with a transaction after the
/// time, or the segment holding the LSN): the rest of the archive is not staged. With
/// several timelines, or a target it cannot place, everything stays.
pub fn cut_at(
    needed: Vec<ArchivedWal>,
    recovery: &RecoveryTarget,
    segment_size: u64,
) -> Vec<ArchivedWal> {
    let mut segments: Vec<(u64, &ArchivedWal)> = needed
        .iter()
        .filter_map(|a| a.file.segno().map(|s| (s, a)))
        .collect();
    let timelines: BTreeSet<u32> = segments.iter().map(|(_, a)| a.file.timeline()).collect();
    if timelines.len() > 1 {
        return needed;
    }
    segments.sort_by_key(|(s, _)| *s);
    let stop = match recovery {
        RecoveryTarget::Time(text) => {
            let Some(at) = parse_target_time(text) else {
                return needed;
            };
            segments
                .iter()
                .find(|(_, a)| a.last_commit().is_some_and(|c| c > at))
                .map(|(s, _)| *s)
        }
        RecoveryTarget::Lsn(l) => Some(segment_of(*l, segment_size)),
        _ => None,
    };
    let Some(stop) = stop else {
        return needed;
    };
    needed
        .into_iter()
        .filter(|a| a.file.segno().is_none_or(|s| s <= stop + 1))
        .collect()
}

/// A recovery target time as `tenant restore --at` writes it (`2026-12-04
/// 15:03:07.250000+00`) or RFC 3339.
fn parse_target_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(&format!("{text}00"), "%Y-%m-%d %H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The name the server's recovery asks for: a partial segment stands in for its segment.
fn staged_name(wal: &ArchivedWal, segment_size: u64) -> String {
    match wal.file {
        WalFile::Partial { timeline, segno } => {
            WalFile::Segment { timeline, segno }.name(segment_size)
        }
        _ => wal.name.clone(),
    }
}

/// Wait up to `limit` until the repository holds segment `segno` of `timeline` (or of a
/// later timeline) of the component, complete; whether it does. The snapshots are listed
/// every 100 ms.
pub(crate) fn wait_for_segment(
    repo: &haven_repo::Repository,
    tenant: &str,
    component: &str,
    timeline: u32,
    segno: u64,
    limit: std::time::Duration,
) -> Result<bool, OpsError> {
    let until = std::time::Instant::now() + limit;
    loop {
        let (snapshots, _) = repo.snapshots()?;
        let stored = list_wal(&snapshots, tenant, component).iter().any(|a| {
            matches!(a.file, WalFile::Segment { timeline: t, segno: s } if s == segno && t >= timeline)
        });
        if stored {
            return Ok(true);
        }
        if std::time::Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The segment holding the start of `base`'s replay.
pub fn segment_of_lsn(base: &BaseFacts) -> u64 {
    segment_of(base.start_lsn, base.segment_size)
}

/// The segments missing between the base's start and the newest archived segment of
/// the base's timeline (a gap makes every target past it unreachable).
pub fn gaps(archived: &[ArchivedWal], base: &BaseFacts) -> Vec<String> {
    let first = segment_of(base.start_lsn, base.segment_size);
    let have: BTreeSet<u64> = archived
        .iter()
        .filter_map(|a| match a.file {
            WalFile::Segment { timeline, segno } | WalFile::Partial { timeline, segno }
                if timeline >= base.timeline =>
            {
                Some(segno)
            }
            _ => None,
        })
        .collect();
    let Some(&last) = have.iter().next_back() else {
        return vec![];
    };
    (first..last)
        .filter(|s| !have.contains(s))
        .map(|s| {
            WalFile::Segment {
                timeline: base.timeline,
                segno: s,
            }
            .name(base.segment_size)
        })
        .collect()
}

/// Restore `files` into `dir`, `jobs` at a time. Returns the bytes written.
pub fn stage(
    repo: &IndexedRepository,
    files: &[ArchivedWal],
    dir: &Path,
    jobs: usize,
) -> Result<u64, OpsError> {
    fs::create_dir_all(dir)
        .map_err(|e| OpsError::Invalid(format!("creating {}: {e}", dir.display())))?;
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<OpsError>> = Mutex::new(None);
    let bytes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 16) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(wal) = files.get(i) else { break };
                if failure.lock().unwrap().is_some() {
                    break;
                }
                let dest: PathBuf = dir.join(staged_name(wal, DEFAULT_SEGMENT_SIZE));
                match write_restored(repo, wal, &dest) {
                    Ok(()) => {
                        let len = fs::metadata(&dest).map_or(0, |m| m.len());
                        bytes.fetch_add(len as usize, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(bytes.into_inner() as u64),
    }
}

/// Retention of the WAL archive: the files below the oldest segment any kept base
/// backup needs. History files are always kept (small, and a later timeline's recovery
/// reads them all); with no kept base backup nothing is removed (a component whose
/// backups all failed keeps its WAL rather than lose it).
pub fn expired<'a>(archived: &'a [ArchivedWal], kept_bases: &[BaseFacts]) -> Vec<&'a ArchivedWal> {
    let Some(keep_from) = kept_bases
        .iter()
        .map(|b| segment_of(b.start_lsn, b.segment_size))
        .min()
    else {
        return vec![];
    };
    archived
        .iter()
        .filter(|a| match a.file {
            WalFile::Segment { segno, .. }
            | WalFile::Partial { segno, .. }
            | WalFile::Backup { segno, .. } => segno < keep_from,
            WalFile::History { .. } => false,
        })
        .collect()
}
