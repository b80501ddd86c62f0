//! Snapshots: one backup of one source at one time. A snapshot file exists only after
//! every pack and index file it depends on is durable, so a snapshot that exists is complete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use haven_store::FileKind;

use crate::codec::ObjectKind;
use crate::error::{RepoError, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;

/// Figures recorded by the backup that made the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub files_unchanged: u64,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub warnings: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub tree: BlobId,
    pub parent: Option<SnapshotId>,
    /// For `--stdin` backups: the name of the single file.
    pub stdin_name: Option<String>,
    pub summary: Summary,
    pub program_version: String,
}

/// A snapshot with its id.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotEntry {
    pub id: SnapshotId,
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// Snapshots that failed to load, with the reason.
pub type Damaged = Vec<(String, String)>;

impl Repository {
    /// Store a new snapshot under a fresh random id (FORMAT.md 6.3: snapshot ids are
    /// random so that they survive `copy` into another repository).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let id = SnapshotId(crate::crypto::random_bytes());
        self.save_snapshot_as(&id, snap)?;
        Ok(id)
    }

    /// Store a snapshot under a given id (`copy` keeps the source's id).
    pub fn save_snapshot_as(&self, id: &SnapshotId, snap: &Snapshot) -> Result<()> {
        self.save_object_named(
            FileKind::Snapshot,
            &id.to_hex(),
            &crate::codec::encode(ObjectKind::Snapshot, snap),
        )
    }

    /// Replace the snapshot `old` with `snap` (its tags changed): `snap` is written under
    /// a fresh id first, then `old` is removed, so an interruption leaves both, never
    /// neither (snapshot files are never modified, FORMAT.md section 15).
    pub fn replace_snapshot(&self, old: &SnapshotId, snap: &Snapshot) -> Result<SnapshotId> {
        let id = self.save_snapshot(snap)?;
        self.backend.remove(FileKind::Snapshot, &old.to_hex())?;
        Ok(id)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.load_object(FileKind::Snapshot, ObjectKind::Snapshot, &id.to_hex())
    }

    /// All readable snapshots, oldest first, and the ones that could not be read.
    pub fn snapshots(&self) -> Result<(Vec<SnapshotEntry>, Damaged)> {
        let mut out = vec![];
        let mut damaged = vec![];
        let listed: Vec<(SnapshotId, String)> = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|info| Some((SnapshotId::from_hex(&info.name)?, info.name)))
            .collect();
        let loaded = crate::parallel::map(self.parallel_requests(), &listed, |(id, _)| {
            self.load_snapshot(id)
        });
        for ((id, name), result) in listed.into_iter().zip(loaded) {
            match result {
                Ok(snapshot) => out.push(SnapshotEntry { id, snapshot }),
                Err(RepoError::Store(e)) if e.is_not_found() => {}
                Err(RepoError::Corrupt { detail, .. }) => damaged.push((name, detail)),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok((out, damaged))
    }

    /// Resolve `latest`, a full id or a unique id prefix. A reader that also needs the
    /// index uses [`crate::read::ReadView::find`] (snapshots first, then the index).
    pub fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        let (all, damaged) = self.snapshots()?;
        find_in(&all, &damaged, spec, self).cloned()
    }
}

/// Resolve `latest`, a full id or a unique id prefix among listed snapshots.
pub(crate) fn find_in<'a>(
    all: &'a [SnapshotEntry],
    damaged: &Damaged,
    spec: &str,
    repo: &Repository,
) -> Result<&'a SnapshotEntry> {
    let spec_lower = spec.to_lowercase();
    if let Some((name, why)) = damaged
        .iter()
        .find(|(name, _)| spec != "latest" && name.starts_with(&spec_lower))
    {
        return Err(RepoError::corrupt(
            format!("snapshot {}", &name[..8]),
            format!("{why}; run `haven check`, and restore from another snapshot"),
        ));
    }
    if spec == "latest" {
        return all.last().ok_or_else(|| {
            RepoError::InvalidInput(format!(
                "the repository at {} has no snapshots yet",
                repo.location()
            ))
        });
    }
    let matches: Vec<_> = all
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&spec_lower))
        .collect();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(RepoError::InvalidInput(format!(
            "no snapshot matches {spec:?}; list them with `haven snapshots`"
        ))),
        _ => Err(RepoError::InvalidInput(format!(
            "{spec:?} matches several snapshots; give more digits"
        ))),
    }
}
