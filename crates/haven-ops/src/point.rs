//! Recovery points: the snapshots of all components of a tenant taken in one run, tied
//! together by a manifest that is itself stored in the repository (encrypted, as a
//! one-file snapshot), so the repository alone is enough to list and restore them.
//!
//! ```text
//! component snapshots  tags: haven-tenant=T, haven-point=P, haven-component=C
//! manifest snapshot    tags: haven-recovery-point, haven-tenant=T, haven-point=P
//!                      one file, recovery-point.json: RecoveryPoint (written last)
//! label snapshots      tags: haven-label, haven-tenant=T, haven-point=P (crate::label)
//! ```
//! A point is restorable only when its manifest exists and says `complete`. A run that
//! was killed before writing the manifest leaves component snapshots without one: they
//! are never listed as a point (prune/forget treat them as ordinary snapshots).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use haven_repo::backup::backup_stream;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::restore::restore_to_writer;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::IndexedRepository;
use haven_sources::Fingerprint;

use crate::label::Label;
use crate::OpsError;

/// Tag on every manifest snapshot.
pub const MANIFEST_TAG: &str = "haven-recovery-point";
/// File name of the manifest inside its snapshot.
pub const MANIFEST_NAME: &str = "recovery-point.json";
/// Version of the manifest's JSON layout.
pub const MANIFEST_FORMAT: u32 = 1;

pub fn tenant_tag(tenant: &str) -> String {
    format!("haven-tenant={tenant}")
}

pub fn point_tag(point: &str) -> String {
    format!("haven-point={point}")
}

pub fn component_tag(component: &str) -> String {
    format!("haven-component={component}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointStatus {
    /// Every component succeeded: restorable.
    Complete,
    /// At least one component failed: never restored.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentStatus {
    Ok,
    Failed,
}

/// What one component's backup recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRecord {
    pub kind: String,
    /// The system that was backed up (no passwords).
    pub source: String,
    pub status: ComponentStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The component's snapshot (hex id), when one was written.
    pub snapshot: Option<String>,
    /// Bytes backed up (dump size, or total file size).
    pub bytes: u64,
    /// Bytes newly stored in the repository (after dedup and compression).
    pub bytes_added: u64,
    pub seconds: f64,
    pub fingerprint: Option<Fingerprint>,
    /// `files`: the source paths, in config order (restores map them by position).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Non-fatal problems (a failing post-hook, unreadable files skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How many attempts the backup of this component took (retries after failures).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// The manifest of one recovery point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    pub format: u32,
    /// 16 hex digits, random.
    pub id: String,
    pub tenant: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub status: PointStatus,
    pub components: BTreeMap<String, ComponentRecord>,
}

impl RecoveryPoint {
    /// Total bytes backed up and newly stored.
    pub fn sizes(&self) -> (u64, u64) {
        self.components
            .values()
            .fold((0, 0), |(b, a), c| (b + c.bytes, a + c.bytes_added))
    }

    /// One line per failed component: `name: reason`.
    pub fn failures(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| c.status == ComponentStatus::Failed)
            .map(|(n, c)| format!("{n}: {}", c.error.as_deref().unwrap_or("failed")))
            .collect()
    }
}

/// A fresh point id.
pub fn new_point_id() -> String {
    hex::encode(haven_repo::crypto::random_bytes::<8>())
}

/// Store the manifest (after every component snapshot is durable).
pub fn save_manifest(repo: &IndexedRepository, point: &RecoveryPoint) -> Result<(), OpsError> {
    let json = serde_json::to_vec_pretty(point).expect("a manifest serialises");
    backup_stream(
        repo.clone(),
        json.as_slice(),
        MANIFEST_NAME,
        vec![
            MANIFEST_TAG.to_string(),
            tenant_tag(&point.tenant),
            point_tag(&point.id),
        ],
        None,
        Arc::new(Progress::default()),
    )?;
    Ok(())
}

/// A recovery point with the snapshot its manifest lives in, and its labels (expired
/// ones included: see [`Label::in_effect`]).
#[derive(Debug, Clone)]
pub struct ListedPoint {
    pub manifest: SnapshotEntry,
    pub point: RecoveryPoint,
    pub labels: Vec<Label>,
}

impl ListedPoint {
    /// The label in effect at `now` that protects the point from retention, if any.
    pub fn protected_by(&self, now: DateTime<Utc>) -> Option<&Label> {
        self.labels.iter().find(|l| l.in_effect(now))
    }
}

/// Manifests that could not be read: (snapshot id, reason).
pub type Unreadable = Vec<(String, String)>;

/// Every recovery point of `tenant`, oldest first. Manifests that cannot be read are
/// returned beside the list.
/// The view's snapshots were listed before its index was loaded, so a point committed
/// meanwhile is either absent or readable, never "unreadable".
pub fn list_points(
    view: &ReadView,
    tenant: &str,
) -> Result<(Vec<ListedPoint>, Unreadable), OpsError> {
    let (repo, snapshots, mut damaged) = (&view.repo, view.snapshots.clone(), view.damaged.clone());
    let want = tenant_tag(tenant);
    let mut points = vec![];
    for entry in snapshots {
        let tags = &entry.snapshot.tags;
        if !tags.iter().any(|t| t == MANIFEST_TAG) || !tags.contains(&want) {
            continue;
        }
        let mut json = vec![];
        let loaded = restore_to_writer(repo, &entry.snapshot, None, &mut json)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                serde_json::from_slice::<RecoveryPoint>(&json).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(point) if point.format <= MANIFEST_FORMAT => points.push(ListedPoint {
                manifest: entry,
                point,
                labels: vec![],
            }),
            Ok(point) => damaged.push((
                entry.id.to_hex(),
                format!(
                    "manifest format {} is newer than this haven; upgrade haven",
                    point.format
                ),
            )),
            Err(why) => damaged.push((entry.id.to_hex(), format!("manifest unreadable: {why}"))),
        }
    }
    let (labels, unreadable) = crate::label::list_labels(view, tenant);
    damaged.extend(unreadable);
    for l in crate::label::effective(&labels) {
        if let Some(p) = points.iter_mut().find(|p| p.point.id == l.label.point) {
            p.labels.push(l.label.clone());
        }
    }
    points.sort_by_key(|p| p.point.started);
    Ok((points, damaged))
}

/// Which point a restore or verify uses.
#[derive(Debug, Clone, Default)]
pub enum PointChoice {
    /// The newest complete point.
    #[default]
    Latest,
    /// A point id or a unique prefix of one.
    Id(String),
    /// The newest complete point taken at or before this time.
    At(DateTime<Utc>),
    /// The point carrying this label (`--point label:NAME`), while the label is in effect.
    Label(String),
}

impl PointChoice {
    /// `--point` text: `label:NAME`, else a point id or a unique prefix of one.
    pub fn parse(text: &str) -> PointChoice {
        match text.strip_prefix("label:") {
            Some(name) => PointChoice::Label(name.to_string()),
            None => PointChoice::Id(text.to_string()),
        }
    }
}

/// Pick a restorable (complete) point of `tenant`.
pub fn choose_point(
    points: &[ListedPoint],
    tenant: &str,
    choice: &PointChoice,
) -> Result<RecoveryPoint, OpsError> {
    let complete = |p: &&ListedPoint| p.point.status == PointStatus::Complete;
    let none = |what: String| {
        OpsError::Invalid(format!(
            "tenant {tenant} has {what}; list its recovery points with `haven tenant points {tenant}`"
        ))
    };
    let found = match choice {
        PointChoice::Latest => points
            .iter()
            .rev()
            .find(complete)
            .ok_or_else(|| none("no complete recovery point".into()))?,
        PointChoice::At(t) => points
            .iter()
            .rev()
            .filter(complete)
            .find(|p| p.point.started <= *t)
            .ok_or_else(|| none(format!("no complete recovery point taken at or before {t}")))?,
        PointChoice::Label(name) => {
            let now = Utc::now();
            let labelled = points
                .iter()
                .rev()
                .find_map(|p| p.labels.iter().find(|l| l.name == *name).map(|l| (p, l)));
            match labelled {
                Some((p, l)) if l.in_effect(now) => p,
                Some((p, l)) => {
                    return Err(OpsError::Invalid(format!(
                        "label {name} of tenant {tenant} expired at {}; choose recovery point {} by its id (--point {}) or label it again",
                        l.expires.map(|e| e.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default(),
                        p.point.id,
                        p.point.id
                    )))
                }
                None => return Err(none(format!("no label {name:?}"))),
            }
        }
        PointChoice::Id(prefix) => {
            let prefix = prefix.to_lowercase();
            let matches: Vec<_> = points
                .iter()
                .filter(|p| p.point.id.starts_with(&prefix))
                .collect();
            match matches.as_slice() {
                [one] => *one,
                [] => return Err(none(format!("no recovery point {prefix:?}"))),
                _ => {
                    return Err(OpsError::Invalid(format!(
                        "{prefix:?} matches several recovery points of tenant {tenant}; give more digits"
                    )))
                }
            }
        }
    };
    if found.point.status != PointStatus::Complete {
        return Err(OpsError::Invalid(format!(
            "recovery point {} of tenant {tenant} failed ({}); it cannot be restored: choose a complete one from `haven tenant points {tenant}`",
            found.point.id,
            found.point.failures().join("; ")
        )));
    }
    Ok(found.point.clone())
}
