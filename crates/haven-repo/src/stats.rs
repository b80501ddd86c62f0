//! Repository statistics from the index, pack listing and snapshot summaries
//! (no tree walk, so it is fast on any size).

use haven_store::FileKind;

use crate::error::Result;
use crate::index::MasterIndex;
use crate::pack::BlobKind;
use crate::read::ReadView;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    pub packs: u64,
    pub index_files: u64,
    pub blobs: u64,
    pub tree_blobs: u64,
    /// Bytes stored in pack files.
    pub stored_bytes: u64,
    /// Unique bytes before compression (sum of distinct blob sizes).
    pub unique_raw_bytes: u64,
    /// Bytes all snapshots would restore (sum of their sizes).
    pub restore_bytes: u64,
    /// `restore_bytes / stored_bytes`: dedup and compression together.
    pub space_saving_ratio: f64,
    /// Memory the loaded index takes per blob.
    pub index_bytes_per_blob: u64,
    /// The repository's compression setting (`zstd level N`).
    pub compression: String,
    /// Each snapshot's bytes as its backup recorded them, oldest first.
    pub per_snapshot: Vec<SnapshotSpace>,
}

/// Where one snapshot's space goes, from its summary: the bytes it holds (`raw`), the
/// new unique bytes its backup added (`deduplicated`: after dedup, before compression)
/// and what those took in packs (`stored`). Later prunes do not change these figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotSpace {
    pub id: crate::id::SnapshotId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub raw: u64,
    pub deduplicated: u64,
    pub stored: u64,
}

/// How `stats` names a repository's compression level.
pub fn compression_setting(level: i32) -> String {
    match level {
        crate::compress::AUTO => {
            "auto (zstd level 3 for text-like chunks, level 1 for the rest)".into()
        }
        1 => "zstd level 1 (fastest)".into(),
        19 => "zstd level 19 (max)".into(),
        n => format!("zstd level {n}"),
    }
}

pub fn stats(view: &ReadView) -> Result<RepoStats> {
    let (repo, snaps) = (&view.repo, &view.snapshots);
    let packs = repo.repo.backend.list(FileKind::Pack)?;
    let mut s = RepoStats {
        snapshots: snaps.len() as u64,
        packs: packs.len() as u64,
        index_files: repo.index.files.len() as u64,
        stored_bytes: packs.iter().map(|p| p.size).sum(),
        restore_bytes: snaps.iter().map(|s| s.snapshot.summary.bytes_total).sum(),
        index_bytes_per_blob: MasterIndex::BYTES_PER_BLOB as u64,
        compression: compression_setting(repo.repo.config.compression_level),
        per_snapshot: snaps
            .iter()
            .map(|s| SnapshotSpace {
                id: s.id,
                time: s.snapshot.time,
                raw: s.snapshot.summary.bytes_total,
                deduplicated: s.snapshot.summary.bytes_added_raw,
                stored: s.snapshot.summary.bytes_added_stored,
            })
            .collect(),
        ..Default::default()
    };
    for loc in repo.index.iter() {
        s.blobs += 1;
        s.unique_raw_bytes += loc.blob.raw_length as u64;
        if loc.blob.kind == BlobKind::Tree {
            s.tree_blobs += 1;
        }
    }
    if s.stored_bytes > 0 {
        s.space_saving_ratio = s.restore_bytes as f64 / s.stored_bytes as f64;
    }
    Ok(s)
}
