//! The snapshots behind the top folders, and their names there.
//!
//! [`Listing`] holds the snapshots as last listed and the index loaded after that
//! listing (the read ordering, FORMAT.md 17.8). [`Listing::refresh`] lists them again
//! at most every [`REFRESH_EVERY`]; when a snapshot appeared it reloads the index, so
//! every snapshot shown finds its blobs. A snapshot removed by `forget` disappears from
//! the folders; what is open inside it stays readable (our shared lock keeps prune away).
//!
//! Names: `ids/<short id>`, and in each group (all snapshots, one host, one tag) one
//! folder per snapshot named by its time in UTC (`2026-12-06T10:45:26Z`, then `-1`,
//! `-2` for snapshots of the same second, oldest first) plus `latest`, a symlink to the
//! newest.

use std::time::{Duration, Instant};

use haven_repo::id::SnapshotId;
use haven_repo::read::ReadView;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::IndexedRepository;

/// The least time between two listings of the repository's snapshots.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3);

/// Which snapshots a folder of time-named snapshots holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    All,
    Host(String),
    Tag(String),
}

/// See the module doc.
pub struct Listing {
    pub repo: IndexedRepository,
    /// Oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    listed_at: Instant,
    /// A refresh failure is reported once until one succeeds again.
    failing: bool,
}

impl Listing {
    pub fn new(view: ReadView) -> Listing {
        Listing {
            repo: view.repo,
            snapshots: view.snapshots,
            listed_at: Instant::now(),
            failing: false,
        }
    }

    /// List the snapshots again if the last listing is older than [`REFRESH_EVERY`].
    pub fn refresh(&mut self) {
        if self.listed_at.elapsed() < REFRESH_EVERY {
            return;
        }
        self.listed_at = Instant::now();
        let result = self.repo.repo.snapshots().and_then(|(snapshots, _)| {
            let known = |id: &SnapshotId| self.snapshots.iter().any(|s| &s.id == id);
            if snapshots.iter().all(|s| known(&s.id)) {
                return Ok((snapshots, None));
            }
            // Listed first, index second: the new snapshots' blobs are in it.
            let repo = self.repo.repo.clone().indexed()?;
            Ok((snapshots, Some(repo)))
        });
        match result {
            Ok((snapshots, repo)) => {
                self.snapshots = snapshots;
                if let Some(r) = repo {
                    self.repo = r;
                }
                self.failing = false;
            }
            Err(e) if !self.failing => {
                self.failing = true;
                eprintln!("haven: warning: listing the snapshots again failed ({e}); showing the previous listing");
            }
            Err(_) => {}
        }
    }

    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .snapshots
            .iter()
            .map(|s| s.snapshot.hostname.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn tags(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .snapshots
            .iter()
            .flat_map(|s| s.snapshot.tags.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// `ids/` names: the short id, or the full id where two short ids collide.
    pub fn by_id(&self) -> Vec<(String, &SnapshotEntry)> {
        self.snapshots
            .iter()
            .map(|s| {
                let short = s.id.short();
                let shared = self
                    .snapshots
                    .iter()
                    .filter(|o| o.id.short() == short)
                    .count()
                    > 1;
                (if shared { s.id.to_hex() } else { short }, s)
            })
            .collect()
    }

    /// A group's snapshots by their time names, oldest first.
    pub fn by_time(&self, group: &Group) -> Vec<(String, &SnapshotEntry)> {
        let mut out: Vec<(String, &SnapshotEntry)> = vec![];
        let members = self.snapshots.iter().filter(|s| match group {
            Group::All => true,
            Group::Host(h) => &s.snapshot.hostname == h,
            Group::Tag(t) => s.snapshot.tags.contains(t),
        });
        for s in members {
            let base = s.snapshot.time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let mut name = base.clone();
            let mut n = 0;
            while out.iter().any(|(o, _)| o == &name) || name == "latest" {
                n += 1;
                name = format!("{base}-{n}");
            }
            out.push((name, s));
        }
        out
    }

    /// The name `latest` points to in a group.
    pub fn latest(&self, group: &Group) -> Option<String> {
        self.by_time(group).pop().map(|(name, _)| name)
    }
}
