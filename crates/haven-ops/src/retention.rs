//! Retention of recovery points: the tenant's plan (`retention = { keep-daily = 15 }`)
//! applied to its complete points, newest first, with the repository engine's keep rules.
//! A point that is not kept loses its manifest first (so it stops being a point), then
//! its component snapshots. Failed points are removed once they are older than the
//! oldest kept complete point. Snapshots of a killed run (component snapshots without a
//! manifest) are removed when older than that too. A point carrying a label in effect
//! ([`crate::label`]) is kept whatever the plan says; a label whose expiry has passed is
//! removed (its point is then treated like any other). Archived WAL of physical
//! PostgreSQL components is removed below the oldest segment a kept base backup needs
//! ([`crate::wal::expired`]). Then `prune` (exclusive lock)
//! frees the data nothing references any more.
//!
//! Retention runs under a shared lock; labelling a point takes the exclusive one, so a
//! point is never removed after a label on it was written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::prune::{prune, PruneOptions, PruneReport};
use haven_repo::retention::{apply, GroupBy};
use haven_store::FileKind;
use serde::Serialize;

use chrono::{DateTime, Utc};
use haven_repo::id::SnapshotId;

use crate::backup::{open_tenant_view, Observer};
use crate::config::Config;
use crate::label::list_labels;
use crate::point::{list_points, point_tag, tenant_tag, PointStatus, MANIFEST_TAG};
use crate::OpsError;
use haven_sources::postgres::physical::BaseFacts;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub tenant: String,
    /// Point ids kept and removed.
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Points kept only because a label protects them: (point id, label).
    pub kept_by_label: Vec<(String, String)>,
    /// Labels removed because their expiry passed: (point id, label).
    pub labels_expired: Vec<(String, String)>,
    /// Snapshot files deleted (manifests and component snapshots).
    pub snapshots_removed: usize,
    /// Archived WAL files no kept base backup needs (counted in `snapshots_removed` too).
    pub wal_removed: usize,
    pub prune: Option<PruneReport>,
}

/// Apply the tenant's retention to its recovery points, then prune when `prune_after`.
pub fn apply_retention(
    config: &Config,
    tenant: &str,
    lock_wait: Duration,
    prune_after: bool,
    observer: &Observer,
) -> Result<RetentionReport, OpsError> {
    apply_retention_at(config, tenant, lock_wait, prune_after, Utc::now(), observer)
}

/// [`apply_retention`] with labels judged at `now` (labels expire in real time: the
/// daemon passes the wall clock, a test a later time).
pub fn apply_retention_at(
    config: &Config,
    tenant: &str,
    lock_wait: Duration,
    prune_after: bool,
    now: DateTime<Utc>,
    observer: &Observer,
) -> Result<RetentionReport, OpsError> {
    let t = config.tenant(tenant)?;
    let mut report = RetentionReport {
        tenant: tenant.to_string(),
        ..Default::default()
    };
    {
        let (view, _lock) = open_tenant_view(
            config,
            t,
            &format!("retention {tenant}"),
            lock_wait,
            crate::location::SiteAccess::Writing,
        )?;
        let (points, _damaged) = list_points(&view, tenant)?;
        let repo = &view.repo;
        let complete: Vec<_> = points
            .iter()
            .filter(|p| p.point.status == PointStatus::Complete)
            .map(|p| p.manifest.clone())
            .collect();
        let mut keep: HashSet<String> = HashSet::new();
        for decision in apply(
            complete,
            &t.plan.retention,
            GroupBy {
                host: false,
                paths: false,
                tags: false,
            },
        ) {
            for (s, _) in decision.keep {
                keep.insert(s.id.to_hex());
            }
        }
        let oldest_kept = points
            .iter()
            .filter(|p| keep.contains(&p.manifest.id.to_hex()))
            .map(|p| p.point.started)
            .min();
        let Some(oldest_kept) = oldest_kept else {
            observer.line(&format!(
                "retention {tenant}: no complete recovery point, nothing removed"
            ));
            return Ok(report);
        };
        let backend = repo.repo.backend();
        // Expired labels go first: from then on they protect nothing, here or elsewhere.
        let mut gone: HashSet<SnapshotId> = HashSet::new();
        for l in list_labels(&view, tenant).0 {
            if !l.label.in_effect(now) {
                backend.remove(FileKind::Snapshot, &l.snapshot.id.to_hex())?;
                report.snapshots_removed += 1;
                report
                    .labels_expired
                    .push((l.label.point.clone(), l.label.name.clone()));
                gone.insert(l.snapshot.id);
            }
        }
        let mut doomed = vec![];
        for p in &points {
            if keep.contains(&p.manifest.id.to_hex()) {
                report.kept.push(p.point.id.clone());
            } else if let Some(label) = p.protected_by(now) {
                report.kept.push(p.point.id.clone());
                report
                    .kept_by_label
                    .push((p.point.id.clone(), label.name.clone()));
            } else if p.point.status == PointStatus::Complete || p.point.started < oldest_kept {
                report.removed.push(p.point.id.clone());
                doomed.push(p);
            }
        }
        let (mut snapshots, _) = repo.repo.snapshots()?;
        snapshots.retain(|s| !gone.contains(&s.id));
        let known: HashSet<String> = points.iter().map(|p| point_tag(&p.point.id)).collect();
        for p in &doomed {
            // The manifest first: from here on the point is gone even if the rest fails.
            backend.remove(FileKind::Snapshot, &p.manifest.id.to_hex())?;
            report.snapshots_removed += 1;
            let tag = point_tag(&p.point.id);
            for s in snapshots.iter().filter(|s| s.snapshot.tags.contains(&tag)) {
                if s.id != p.manifest.id {
                    backend.remove(FileKind::Snapshot, &s.id.to_hex())?;
                    report.snapshots_removed += 1;
                }
            }
        }
        // Component snapshots of runs that never wrote a manifest (killed), once old.
        let tenant_tag = tenant_tag(tenant);
        for s in &snapshots {
            let tags = &s.snapshot.tags;
            let orphan = tags.contains(&tenant_tag)
                && !tags.iter().any(|t| t == MANIFEST_TAG)
                && !tags.iter().any(|t| known.contains(t))
                && s.snapshot.time < oldest_kept;
            if orphan {
                backend.remove(FileKind::Snapshot, &s.id.to_hex())?;
                report.snapshots_removed += 1;
            }
        }
        // WAL no kept base backup needs any more (physical PostgreSQL components).
        let kept_points: Vec<_> = points
            .iter()
            .filter(|p| report.kept.contains(&p.point.id))
            .collect();
        for name in t.components.keys() {
            let kept_bases: Vec<BaseFacts> = kept_points
                .iter()
                .filter(|p| p.point.status == PointStatus::Complete)
                .filter_map(|p| p.point.components.get(name))
                .filter_map(|r| BaseFacts::from_fingerprint(r.fingerprint.as_ref()?).ok())
                .collect();
            let archived = crate::wal::list_wal(&snapshots, tenant, name);
            for old in crate::wal::expired(&archived, &kept_bases) {
                backend.remove(FileKind::Snapshot, &old.entry.id.to_hex())?;
                report.snapshots_removed += 1;
                report.wal_removed += 1;
            }
        }
        observer.line(&format!(
            "retention {tenant}: kept {} points ({} by a label), removed {} ({} snapshots, {} WAL files), {} expired label(s) removed",
            report.kept.len(),
            report.kept_by_label.len(),
            report.removed.len(),
            report.snapshots_removed,
            report.wal_removed,
            report.labels_expired.len()
        ));
    }
    if prune_after && report.snapshots_removed > 0 {
        let rc = config.repository_of(t);
        let (repo, _) = crate::open_repository(rc, false)?;
        let _lock = RepoLock::acquire(
            &repo,
            true,
            &format!("prune after retention {tenant}"),
            lock_wait,
        )?;
        let repo = repo.indexed()?;
        let r = prune(
            &repo,
            &PruneOptions::default(),
            Arc::new(Progress::default()),
        )?;
        observer.line(&format!(
            "prune: freed {} bytes, {} packs deleted, {} repacked",
            r.bytes_freed, r.packs_deleted, r.packs_repacked
        ));
        report.prune = Some(r);
    }
    Ok(report)
}
