//! The read ordering: snapshots first, then the index (`docs/FORMAT.md` 17.8).
//!
//! A backup makes its index durable before its snapshot. A reader that lists the
//! snapshots first and loads the index afterwards therefore finds every blob of every
//! snapshot it listed; one that loads the index first can list a snapshot committed in
//! between whose blobs it does not know (false damage in `check`, a failed
//! `restore latest`). [`ReadView`] is the only way to get both for reading, in that
//! order; `check` takes one.

use crate::error::Result;
use crate::index::IndexedRepository;
use crate::repository::Repository;
use crate::snapshot::{Damaged, SnapshotEntry};

/// Snapshots as listed, and the index loaded after they were listed.
#[derive(Debug, Clone)]
pub struct ReadView {
    /// Every readable snapshot, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Snapshots that could not be read, with the reason.
    pub damaged: Damaged,
    /// The repository with the index loaded after the listing.
    pub repo: IndexedRepository,
}

impl ReadView {
    /// List the snapshots, then load the index.
    pub fn open(repo: Repository) -> Result<ReadView> {
        Self::open_with(repo, |_| {})
    }

    /// [`ReadView::open`], running `between` after the listing and before the index is
    /// loaded (tests use it to commit a backup in that window).
    pub fn open_with(repo: Repository, between: impl FnOnce(&Repository)) -> Result<ReadView> {
        let (snapshots, damaged) = repo.snapshots()?;
        between(&repo);
        let repo = repo.indexed()?;
        Ok(ReadView {
            snapshots,
            damaged,
            repo,
        })
    }

    /// Resolve `latest`, a full id or a unique id prefix among the listed snapshots.
    pub fn find(&self, spec: &str) -> Result<&SnapshotEntry> {
        crate::snapshot::find_in(&self.snapshots, &self.damaged, spec, &self.repo.repo)
    }
}
