//! Retention of recovery points: the tenant's plan (`retention = { keep-daily = 15 }`)
//! applied to its complete points, newest first, with the repository engine's keep rules.
//! A point that is not kept loses its manifest first (so it stops being a point), then
//! its component snapshots. Failed points are removed once they are older than the
//! oldest kept complete point. Snapshots of a killed run (component snapshots without a
//! manifest) are removed when older than that too. Then `prune` (exclusive lock) frees
//! the data nothing references any more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::prune::{prune, PruneOptions, PruneReport};
use haven_repo::retention::{apply, GroupBy};
use haven_store::FileKind;
use serde::Serialize;

use crate::backup::{open_tenant_view, Observer};
use crate::config::Config;
use crate::point::{list_points, point_tag, tenant_tag, PointStatus, MANIFEST_TAG};
use crate::OpsError;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub tenant: String,
    /// Point ids kept and removed.
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Snapshot files deleted (manifests and component snapshots).
    pub snapshots_removed: usize,
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
        let mut doomed = vec![];
        for p in &points {
            if keep.contains(&p.manifest.id.to_hex()) {
                report.kept.push(p.point.id.clone());
            } else if p.point.status == PointStatus::Complete || p.point.started < oldest_kept {
                report.removed.push(p.point.id.clone());
                doomed.push(p);
            }
        }
        let (snapshots, _) = repo.repo.snapshots()?;
        let known: HashSet<String> = points.iter().map(|p| point_tag(&p.point.id)).collect();
        let backend = repo.repo.backend();
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
        observer.line(&format!(
            "retention {tenant}: kept {} points, removed {} ({} snapshots)",
            report.kept.len(),
            report.removed.len(),
            report.snapshots_removed
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
