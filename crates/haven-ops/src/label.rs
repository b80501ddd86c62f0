//! Labelled recovery points: a name on a point (`pre-upgrade-2.4`) that keeps it out of
//! retention until the label is removed or its optional expiry passes, and by which a
//! restore can choose it (`--point label:pre-upgrade-2.4`).
//!
//! ```text
//! label snapshot   tags: haven-label, haven-tenant=T, haven-point=P
//!                  one file, label.json: Label { name, point, created, expires }
//! label:   exclusive lock ─> point exists and is complete ─> name free (or on P) ─> write
//! unlabel: shared lock ─> remove every label snapshot of that name
//! ```
//! Like manifests, labels live in the repository (encrypted like every snapshot), so it
//! alone says what is protected; a mirror or `copy` carries them along. A label snapshot
//! carries its point's tag, so when a point is removed its labels go with it. Labelling
//! takes the exclusive lock so that it cannot interleave with retention (which runs under
//! a shared lock): retention either sees the label or has already removed the point, in
//! which case labelling fails. Labelling the point a backup just made happens under that
//! backup's own lock (the newest point is never removed by retention).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use haven_repo::backup::backup_stream;
use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::restore::restore_to_writer;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::IndexedRepository;
use haven_store::FileKind;

use crate::backup::Observer;
use crate::config::Config;
use crate::location::SiteAccess;
use crate::point::{list_points, point_tag, tenant_tag, PointChoice, PointStatus, Unreadable};
use crate::OpsError;

/// Tag on every label snapshot.
pub const LABEL_TAG: &str = "haven-label";
/// File name of the label inside its snapshot.
pub const LABEL_NAME: &str = "label.json";
/// Version of the label's JSON layout.
pub const LABEL_FORMAT: u32 = 1;
/// Longest label name.
pub const MAX_LABEL_LEN: usize = 64;

/// One label on one recovery point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub format: u32,
    pub name: String,
    pub tenant: String,
    pub point: String,
    pub created: DateTime<Utc>,
    /// After this the label no longer protects the point (and retention removes it).
    pub expires: Option<DateTime<Utc>>,
}

impl Label {
    /// True while the label protects its point.
    pub fn in_effect(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// A label with the snapshot it is stored in.
#[derive(Debug, Clone)]
pub struct ListedLabel {
    pub snapshot: SnapshotEntry,
    pub label: Label,
}

/// A label to put on a point: its name, and how long it protects it (`None`: until
/// unlabelled).
#[derive(Debug, Clone)]
pub struct NewLabel {
    pub name: String,
    pub expires_in: Option<Duration>,
}

/// Refuse names that could not be typed back (`label:NAME`) or shown in a table.
pub fn check_label_name(name: &str) -> Result<(), OpsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > MAX_LABEL_LEN || !first_ok || !name.chars().all(ok_char) {
        return Err(OpsError::Invalid(format!(
            "{name:?} is not a label name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most {MAX_LABEL_LEN} characters (e.g. pre-upgrade-2.4)"
        )));
    }
    Ok(())
}

/// Every label snapshot of `tenant` in the view (several of one name after an interrupted
/// relabel: [`effective`] picks the newest), and label snapshots that cannot be read.
pub fn list_labels(view: &ReadView, tenant: &str) -> (Vec<ListedLabel>, Unreadable) {
    let want = tenant_tag(tenant);
    let mut labels = vec![];
    let mut damaged = vec![];
    for entry in &view.snapshots {
        let tags = &entry.snapshot.tags;
        if !tags.iter().any(|t| t == LABEL_TAG) || !tags.contains(&want) {
            continue;
        }
        let mut json = vec![];
        let loaded = restore_to_writer(&view.repo, &entry.snapshot, None, &mut json)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice::<Label>(&json).map_err(|e| e.to_string()));
        match loaded {
            Ok(label) if label.format <= LABEL_FORMAT => labels.push(ListedLabel {
                snapshot: entry.clone(),
                label,
            }),
            Ok(label) => damaged.push((
                entry.id.to_hex(),
                format!(
                    "label format {} is newer than this haven; upgrade haven",
                    label.format
                ),
            )),
            Err(why) => damaged.push((entry.id.to_hex(), format!("label unreadable: {why}"))),
        }
    }
    (labels, damaged)
}

/// One label per name: the newest written.
pub fn effective(labels: &[ListedLabel]) -> Vec<&ListedLabel> {
    let mut by_name: std::collections::BTreeMap<&str, &ListedLabel> = Default::default();
    for l in labels {
        let newer = by_name
            .get(l.label.name.as_str())
            .is_none_or(|old| l.label.created > old.label.created);
        if newer {
            by_name.insert(&l.label.name, l);
        }
    }
    by_name.into_values().collect()
}

fn save_label(repo: &IndexedRepository, label: &Label) -> Result<(), OpsError> {
    let json = serde_json::to_vec_pretty(label).expect("a label serialises");
    backup_stream(
        repo.clone(),
        json.as_slice(),
        LABEL_NAME,
        vec![
            LABEL_TAG.to_string(),
            tenant_tag(&label.tenant),
            point_tag(&label.point),
        ],
        None,
        Arc::new(Progress::default()),
    )?;
    Ok(())
}

fn expiry(
    now: DateTime<Utc>,
    expires_in: Option<Duration>,
) -> Result<Option<DateTime<Utc>>, OpsError> {
    expires_in
        .map(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| OpsError::Invalid("the label's expiry is too far away".into()))
        })
        .transpose()
}

/// Put `new` on point `point` of `tenant` within an open view (the caller holds the lock
/// that keeps retention away). The same name already on that point is replaced (a new
/// expiry); on another point it is refused.
pub(crate) fn put_label(
    view: &ReadView,
    tenant: &str,
    point: &str,
    new: &NewLabel,
) -> Result<Label, OpsError> {
    check_label_name(&new.name)?;
    let (labels, _) = list_labels(view, tenant);
    let now = Utc::now();
    refuse_in_use(&labels, tenant, &new.name, Some(point), now)?;
    let same: Vec<&ListedLabel> = labels.iter().filter(|l| l.label.name == new.name).collect();
    let label = Label {
        format: LABEL_FORMAT,
        name: new.name.clone(),
        tenant: tenant.to_string(),
        point: point.to_string(),
        created: now,
        expires: expiry(now, new.expires_in)?,
    };
    save_label(&view.repo, &label)?;
    // The new label is durable: the ones it replaces (same name) can go.
    let backend = view.repo.repo.backend();
    for old in same {
        backend.remove(FileKind::Snapshot, &old.snapshot.id.to_hex())?;
    }
    Ok(label)
}

/// Refuse `name` when a label in effect of that name is on a point other than `point`.
fn refuse_in_use(
    labels: &[ListedLabel],
    tenant: &str,
    name: &str,
    point: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), OpsError> {
    let other = labels.iter().find(|l| {
        l.label.name == name && Some(l.label.point.as_str()) != point && l.label.in_effect(now)
    });
    match other {
        Some(other) => Err(OpsError::Invalid(format!(
            "label {name} of tenant {tenant} already names recovery point {}; remove it first with `haven tenant unlabel {tenant} {name}`",
            other.label.point
        ))),
        None => Ok(()),
    }
}

/// Before a `backup --label`: refuse a name already in use, so that a long backup does
/// not end in a point that cannot be labelled. (`put_label` checks again afterwards.)
pub(crate) fn check_free(
    repo: &IndexedRepository,
    tenant: &str,
    name: &str,
) -> Result<(), OpsError> {
    check_label_name(name)?;
    let (snapshots, damaged) = repo.repo.snapshots()?;
    // Listed after the index was loaded: a label written in between may not be readable
    // yet; it is then caught by the check after the backup.
    let view = ReadView {
        snapshots,
        damaged,
        repo: repo.clone(),
    };
    let (labels, _) = list_labels(&view, tenant);
    refuse_in_use(&labels, tenant, name, None, Utc::now())
}

/// `haven tenant label T POINT NAME [--expires D]`: label a complete recovery point.
pub fn label_point(
    config: &Config,
    tenant: &str,
    point: &PointChoice,
    new: &NewLabel,
    lock_wait: Duration,
    observer: &Observer,
) -> Result<Label, OpsError> {
    check_label_name(&new.name)?;
    let t = config.tenant(tenant)?;
    let (repo, _) = crate::open_repository_as(config.repository_of(t), false, SiteAccess::Writing)?;
    // Exclusive: retention (shared lock) cannot remove the point between the check below
    // and the label being written.
    let _lock = RepoLock::acquire(&repo, true, &format!("tenant label {tenant}"), lock_wait)?;
    let view = ReadView::open(repo)?;
    let (points, _) = list_points(&view, tenant)?;
    let chosen = crate::point::choose_point(&points, tenant, point)?;
    if chosen.status != PointStatus::Complete {
        return Err(OpsError::Invalid(format!(
            "recovery point {} of tenant {tenant} failed; only complete points can be labelled",
            chosen.id
        )));
    }
    let label = put_label(&view, tenant, &chosen.id, new)?;
    observer.line(&format!(
        "labelled recovery point {} of tenant {tenant} {}{}",
        label.point,
        label.name,
        label
            .expires
            .map(|e| format!(" until {}", e.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default()
    ));
    Ok(label)
}

/// `haven tenant unlabel T NAME`: remove the label; the point is then subject to
/// retention again. Returns the label removed.
pub fn unlabel(
    config: &Config,
    tenant: &str,
    name: &str,
    lock_wait: Duration,
    observer: &Observer,
) -> Result<Label, OpsError> {
    let t = config.tenant(tenant)?;
    let (view, _lock) = crate::backup::open_tenant_view(
        config,
        t,
        &format!("tenant unlabel {tenant}"),
        lock_wait,
        SiteAccess::Writing,
    )?;
    let (labels, _) = list_labels(&view, tenant);
    let same: Vec<&ListedLabel> = labels.iter().filter(|l| l.label.name == name).collect();
    let Some(newest) = effective(&labels)
        .into_iter()
        .find(|l| l.label.name == name)
    else {
        return Err(OpsError::Invalid(format!(
            "tenant {tenant} has no label {name:?}; its labels are shown by `haven tenant points {tenant}`"
        )));
    };
    let backend = view.repo.repo.backend();
    for l in &same {
        backend.remove(FileKind::Snapshot, &l.snapshot.id.to_hex())?;
    }
    observer.line(&format!(
        "removed label {name} from recovery point {} of tenant {tenant}",
        newest.label.point
    ));
    Ok(newest.label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_checked() {
        for ok in ["pre-upgrade-2.4", "a", "v1_2", "2026.12.05"] {
            check_label_name(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "label:x",
            &"x".repeat(65),
            "ü",
        ] {
            let e = check_label_name(bad).unwrap_err().to_string();
            assert!(e.contains("not a label name"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_label_is_in_effect_until_it_expires() {
        let now = Utc::now();
        let mut l = Label {
            format: LABEL_FORMAT,
            name: "x".into(),
            tenant: "t".into(),
            point: "p".into(),
            created: now,
            expires: None,
        };
        assert!(l.in_effect(now));
        l.expires = Some(now + chrono::Duration::seconds(1));
        assert!(l.in_effect(now));
        assert!(!l.in_effect(now + chrono::Duration::seconds(1)));
    }
}
