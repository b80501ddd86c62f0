//! Restore of a physical PostgreSQL component to a moment: its base backup from the
//! recovery point, the archived WAL after it staged from the repository, replay to the
//! target, promotion, and the checks that prove it.
//!
//! ```text
//! record.fingerprint ──BaseFacts──> start/end LSN, timeline, segment size
//! repository snapshots ──wal::list_wal──> archived files ──wal::needed_from──> staged in
//!     parallel into a private folder (wal::stage)
//! refused before anything starts: the WAL to the backup's consistency point is not all
//!     archived; `--latest` or an LSN past a gap in the archive (the gap is named)
//! PostgresComponent::restore_physical (haven-sources): unpack, pg_verifybackup, recover
//! ```

use std::time::Instant;

use chrono::{DateTime, Utc};

use haven_repo::restore::restore_to_writer;
use haven_repo::IndexedRepository;
use haven_sources::postgres::physical::lsn::segment_of;
use haven_sources::postgres::physical::{
    Base, BaseFacts, Recovered, RecoveryTarget, WalFile, FILES_METHOD,
};
use haven_sources::postgres::{PostgresComponent, PostgresConfig};
use haven_sources::{SourceError, StreamComponent};

use crate::point::{ComponentRecord, ListedPoint, PointStatus};
use crate::run::RunEnv;
use crate::wal;
use crate::OpsError;

/// Parallel fetches of WAL files from the repository.
const STAGE_JOBS: usize = 4;

/// What a physical restore did.
#[derive(Debug, Clone)]
pub struct PhysicalRestore {
    pub recovered: Recovered,
    pub base_bytes: u64,
    pub wal_files: usize,
    pub wal_bytes: u64,
    pub stage_seconds: f64,
}

/// Whether a component record is a physical base backup.
pub fn is_base_backup(record: &ComponentRecord) -> bool {
    record
        .fingerprint
        .as_ref()
        .is_some_and(|f| f.facts.contains_key("start-lsn"))
}

/// Restore `record` (a base backup of component `name` of `tenant`) into the physical
/// component `target`, replaying WAL to `recovery`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_physical(
    repo: &IndexedRepository,
    env: &RunEnv,
    tenant: &str,
    name: &str,
    record: &ComponentRecord,
    target: &PostgresConfig,
    recovery: &RecoveryTarget,
    force: bool,
) -> Result<PhysicalRestore, OpsError> {
    let fingerprint = record.fingerprint.as_ref().ok_or_else(|| {
        OpsError::Invalid("the recovery point records no facts of the base backup".into())
    })?;
    let base = BaseFacts::from_fingerprint(fingerprint).map_err(OpsError::Invalid)?;
    let (snapshots, _) = repo.repo.snapshots()?;
    let archived = wal::list_wal(&snapshots, tenant, name);
    check_reachable(&archived, &base, recovery, tenant, name)?;
    let needed = wal::cut_at(
        wal::needed_from(&archived, &base),
        recovery,
        base.segment_size,
    );
    let staging = env.work(&format!("{name}-wal"))?;
    let clock = Instant::now();
    let wal_bytes = wal::stage(repo, &needed, staging.path(), STAGE_JOBS)?;
    let stage_seconds = clock.elapsed().as_secs_f64();
    let snapshot = repo
        .repo
        .find_snapshot(record.snapshot.as_deref().ok_or_else(|| {
            OpsError::Invalid("the recovery point records no snapshot for it".into())
        })?)?;
    let mut component = PostgresComponent::new(target.clone());
    component.set_deadline(env.deadline);
    let mut base_bytes = 0;
    let as_files = fingerprint.facts.get("method").map(String::as_str) == Some(FILES_METHOD);
    let recovered = if as_files {
        let label = fingerprint
            .facts
            .get("backup-label")
            .cloned()
            .ok_or_else(|| {
                OpsError::Invalid("the base backup's record has no backup-label".into())
            })?;
        let source = snapshot.snapshot.paths.first().cloned().ok_or_else(|| {
            OpsError::Invalid("the base backup's snapshot names no data directory".into())
        })?;
        component.restore_physical(
            Base::Files {
                write: &mut |dir| {
                    base_bytes = crate::base_files::restore_data_dir(
                        repo,
                        &snapshot.snapshot,
                        std::path::Path::new(&source),
                        dir,
                    )?;
                    Ok(base_bytes)
                },
                label,
            },
            &base,
            staging.path(),
            recovery,
            force,
        )
    } else {
        component.restore_physical(
            Base::Tar(&mut |w| {
                base_bytes = restore_to_writer(repo, &snapshot.snapshot, None, w).map_err(|e| {
                    SourceError::failed(
                        "reading the base backup from the repository",
                        e.to_string(),
                    )
                })?;
                Ok(base_bytes)
            }),
            &base,
            staging.path(),
            recovery,
            force,
        )
    };
    let recovered = recovered.map_err(|e| explain_failure(e, &archived, &base))?;
    Ok(PhysicalRestore {
        recovered,
        base_bytes,
        wal_files: needed.len(),
        wal_bytes,
        stage_seconds,
    })
}

/// Refuse, before anything is written, a restore the archive cannot carry out.
pub(crate) fn check_reachable(
    archived: &[wal::ArchivedWal],
    base: &BaseFacts,
    recovery: &RecoveryTarget,
    tenant: &str,
    name: &str,
) -> Result<(), OpsError> {
    let has = |segno: u64| {
        archived.iter().any(|a| {
            matches!(a.file, WalFile::Segment { segno: s, timeline } if s == segno && timeline >= base.timeline)
        })
    };
    let last_needed = segment_of(base.end_lsn, base.segment_size);
    let first = segment_of(base.start_lsn, base.segment_size);
    if let Some(missing) = (first..=last_needed).find(|s| !has(*s)) {
        return Err(OpsError::Invalid(format!(
            "the WAL that makes this base backup consistent (to {}) is not archived: segment {} \
             of component {name} of tenant {tenant} is missing; check the server's \
             archive_command (haven wal push) and its log, or for a streaming component \
             the WAL receiver of `haven serve` and its log",
            base.end_lsn,
            WalFile::Segment {
                timeline: base.timeline,
                segno: missing
            }
            .name(base.segment_size)
        )));
    }
    let gaps = wal::gaps(archived, base);
    let Some(first_gap) = gaps.first() else {
        return Ok(());
    };
    let past_gap = match recovery {
        RecoveryTarget::Latest => true,
        RecoveryTarget::Lsn(l) => {
            let gap_seg = WalFile::parse(first_gap, base.segment_size).and_then(|f| f.segno());
            gap_seg.is_some_and(|g| segment_of(*l, base.segment_size) >= g)
        }
        _ => false,
    };
    if past_gap {
        return Err(OpsError::Invalid(format!(
            "the archived WAL of component {name} of tenant {tenant} has a gap: {} missing \
             (first {first_gap}); recovery would stop there. Restore to a target before it \
             (--lsn, --at), or put the missing files back",
            gaps.len()
        )));
    }
    Ok(())
}

/// A recovery that stopped short names the archive's gaps, the likely reason.
fn explain_failure(e: SourceError, archived: &[wal::ArchivedWal], base: &BaseFacts) -> OpsError {
    let gaps = wal::gaps(archived, base);
    let text = e.to_string();
    if gaps.is_empty() || !text.contains("before configured recovery target") {
        return e.into();
    }
    OpsError::Invalid(format!(
        "{text}; the archived WAL has a gap at {} (first of {} missing), so targets past it \
         cannot be reached",
        gaps[0],
        gaps.len()
    ))
}

/// The moments a physical component can be restored to.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Window {
    /// When the oldest base backup became consistent.
    pub from: Option<DateTime<Utc>>,
    /// The last transaction in the archived WAL after it, up to the first gap.
    pub to: Option<DateTime<Utc>>,
    pub base_backups: usize,
    pub wal_files: usize,
    /// Missing segments after the oldest base backup (first ones).
    pub gaps: Vec<String>,
    /// Each base backup's WAL chain, oldest base first.
    pub chains: Vec<Chain>,
}

/// Whether the WAL from one base backup's start to the newest archived WAL is all there
/// (what `haven tenant points --check` proves for every kept base backup).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chain {
    /// The recovery point holding the base backup.
    pub point: String,
    /// The segment its replay starts in.
    pub from: String,
    /// The newest archived segment (complete or partial) of its timeline or later.
    pub to: Option<String>,
    /// The first missing segment between them, if any.
    pub gap: Option<String>,
}

impl Window {
    pub fn describe(&self) -> String {
        let when = |t: Option<DateTime<Utc>>| {
            t.map_or("?".to_string(), |t| {
                t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
            })
        };
        let mut s = format!(
            "{} to {} ({} base backups, {} WAL files)",
            when(self.from),
            when(self.to),
            self.base_backups,
            self.wal_files
        );
        if let Some(g) = self.gaps.first() {
            s.push_str(&format!("; gap at {g} ({} missing)", self.gaps.len()));
        }
        s
    }
}

/// The base backups of component `name` in complete points, oldest first.
fn bases<'a>(points: &'a [ListedPoint], name: &str) -> Vec<(&'a ComponentRecord, BaseFacts)> {
    based_points(points, name)
        .into_iter()
        .map(|(_, r, f)| (r, f))
        .collect()
}

/// [`bases`] with the id of the point holding each.
fn based_points<'a>(
    points: &'a [ListedPoint],
    name: &str,
) -> Vec<(&'a str, &'a ComponentRecord, BaseFacts)> {
    points
        .iter()
        .filter(|p| p.point.status == PointStatus::Complete)
        .filter_map(|p| Some((p.point.id.as_str(), p.point.components.get(name)?)))
        .filter(|(_, r)| is_base_backup(r))
        .filter_map(|(id, r)| {
            Some((
                id,
                r,
                BaseFacts::from_fingerprint(r.fingerprint.as_ref()?).ok()?,
            ))
        })
        .collect()
}

/// The WAL chain of every base backup of component `name`.
pub fn chains(points: &[ListedPoint], archived: &[wal::ArchivedWal], name: &str) -> Vec<Chain> {
    based_points(points, name)
        .into_iter()
        .map(|(id, _, base)| {
            let newest = archived
                .iter()
                .filter(|a| a.file.timeline() >= base.timeline)
                .filter_map(|a| match a.file {
                    WalFile::Segment { segno, .. } | WalFile::Partial { segno, .. } => {
                        Some((segno, a.name.clone()))
                    }
                    _ => None,
                })
                .max();
            Chain {
                point: id.to_string(),
                from: WalFile::Segment {
                    timeline: base.timeline,
                    segno: wal::segment_of_lsn(&base),
                }
                .name(base.segment_size),
                to: newest.map(|(_, n)| n),
                gap: wal::gaps(archived, &base).into_iter().next(),
            }
        })
        .collect()
}

fn end_time(record: &ComponentRecord) -> Option<DateTime<Utc>> {
    let text = record.fingerprint.as_ref()?.facts.get("end-time")?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The restorable window of component `name`.
pub fn window(points: &[ListedPoint], archived: &[wal::ArchivedWal], name: &str) -> Window {
    let bases = bases(points, name);
    let Some((oldest_record, oldest)) = bases.first() else {
        return Window::default();
    };
    let gaps = wal::gaps(archived, oldest);
    let first_gap = gaps
        .first()
        .and_then(|g| WalFile::parse(g, oldest.segment_size))
        .and_then(|f| f.segno());
    let to = archived
        .iter()
        .filter(|a| match (a.file.segno(), first_gap) {
            (Some(s), Some(g)) => s < g,
            (Some(_), None) => true,
            (None, _) => false,
        })
        .filter_map(|a| a.last_commit())
        .max();
    Window {
        from: end_time(oldest_record),
        to,
        base_backups: bases.len(),
        wal_files: archived.len(),
        gaps: gaps.into_iter().take(5).collect(),
        chains: chains(points, archived, name),
    }
}

/// Choose the base backup of physical component `name` for `recovery` (`at` is the
/// `--at` moment) among the tenant's points, and the recovery target to use with it. A
/// target outside the restorable window is refused here, with the window named.
pub fn choose_base(
    points: &[ListedPoint],
    archived: &[wal::ArchivedWal],
    tenant: &str,
    name: &str,
    recovery: &RecoveryTarget,
    at: Option<DateTime<Utc>>,
) -> Result<(ComponentRecord, RecoveryTarget), OpsError> {
    let bases = bases(points, name);
    let window = window(points, archived, name);
    let refuse = |why: String| {
        OpsError::Invalid(format!(
            "component {name} of tenant {tenant}: {why}; its restorable window is {}",
            window.describe()
        ))
    };
    let newest = |ok: &dyn Fn(&ComponentRecord, &BaseFacts) -> bool| {
        bases
            .iter()
            .rev()
            .find(|(r, f)| ok(r, f))
            .map(|(r, _)| (*r).clone())
    };
    match recovery {
        RecoveryTarget::Time(_) => {
            let at = at.expect("a time target comes with --at");
            let record = newest(&|r, _| end_time(r).is_some_and(|e| e <= at)).ok_or_else(|| {
                refuse(format!(
                    "no base backup was consistent by {at} (the target is before the window)"
                ))
            })?;
            match window.to {
                Some(to) if at > to => Err(refuse(format!(
                    "{at} is after the last archived transaction ({to}); transactions after it may \
                     not be archived yet: restore --latest for everything archived"
                ))),
                // Nothing committed after the target: recovery would look for a later commit
                // and stop short; the end of the archive is the same state.
                Some(to) if at == to => Ok((record, RecoveryTarget::Latest)),
                _ => Ok((record, recovery.clone())),
            }
        }
        RecoveryTarget::Lsn(l) => newest(&|_, f| f.end_lsn <= *l)
            .map(|r| (r, recovery.clone()))
            .ok_or_else(|| refuse(format!("no base backup was consistent by LSN {l}"))),
        RecoveryTarget::Name(n) => {
            let at_segment = archived
                .iter()
                .rev()
                .find(|a| a.restore_points().any(|p| p == n))
                .and_then(|a| a.file.segno());
            let Some(seg) = at_segment else {
                let mut known: Vec<&str> =
                    archived.iter().flat_map(|a| a.restore_points()).collect();
                known.dedup();
                return Err(refuse(format!(
                    "no restore point {n:?} in the archived WAL (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            newest(&|_, f| segment_of(f.end_lsn, f.segment_size) <= seg)
                .map(|r| (r, recovery.clone()))
                .ok_or_else(|| {
                    refuse(format!(
                        "restore point {n:?} is older than every base backup"
                    ))
                })
        }
        RecoveryTarget::Latest | RecoveryTarget::Immediate => newest(&|_, _| true)
            .map(|r| (r, recovery.clone()))
            .ok_or_else(|| refuse("no base backup".into())),
    }
}
