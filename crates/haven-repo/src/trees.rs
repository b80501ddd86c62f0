//! Tree blobs read a pack at a time, kept in memory and, for remote repositories, on
//! local disk.
//!
//! Walking a snapshot (ls, restore planning, check, the parent of a backup) reads every
//! tree blob it reaches. One ranged read per tree is thousands of round trips to a remote
//! store. [`TreeCache`] instead reads, the first time one of its trees is needed, the
//! span of the pack that holds all of the pack's tree blobs (one request: tree blobs
//! live in tree packs of their own) and keeps it in memory, up to [`MEMORY_BUDGET`]
//! bytes, oldest span dropped first.
//!
//! With a remote backend ([`haven_store::ReadBackend::remote`]) spans are also kept on
//! local disk ([`DiskCache`], `<cache dir>/<repository id>/trees/<pack id>`), written by
//! backups as they upload tree packs and by reads as they fetch them, so a backup's
//! parent walk and a restore's planning need no request at all. The cache folder is
//! `$HAVEN_CACHE_DIR`, else `$XDG_CACHE_HOME/haven`, else `~/.cache/haven`;
//! `HAVEN_CACHE_DIR=off` turns it off.
//!
//! Security: a span is cached exactly as stored (ciphertext); every blob is
//! authenticated when it is opened. A cached copy can therefore neither leak plaintext
//! nor feed a wrong tree: a blob that does not open from a cached span is read from the
//! repository instead and the span forgotten. `check` uses a cache without the disk
//! ([`crate::IndexedRepository::without_disk_cache`]) so that it judges what is stored.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use haven_store::FileKind;

use crate::id::PackId;
use crate::index::{BlobLocation, MasterIndex};
use crate::pack::{BlobKind, PackBlob};
use crate::repository::Repository;

/// Most bytes of tree spans kept in memory by one process.
pub const MEMORY_BUDGET: usize = 256 << 20;
/// A span larger than this is never read whole (a pack is 16 MiB by default).
const MAX_SPAN: u64 = 64 << 20;

/// Where tree blobs lie in one pack: the smallest range holding all of them.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    /// Sum of the tree blobs' stored lengths.
    tree_bytes: u64,
}

impl Span {
    /// Worth reading whole: mostly trees (so a pack of file data is never read for
    /// the sake of one tree) and of bounded size.
    fn worth_reading(&self) -> bool {
        let len = self.end - self.start;
        len <= MAX_SPAN && self.tree_bytes * 2 >= len
    }
}

/// A span read from storage or from the disk cache.
struct Loaded {
    start: u64,
    data: Vec<u8>,
    from_disk: bool,
}

impl Loaded {
    fn blob(&self, b: &PackBlob) -> Option<&[u8]> {
        let at = (b.offset as u64).checked_sub(self.start)? as usize;
        self.data.get(at..at.checked_add(b.length as usize)?)
    }
}

#[derive(Default)]
struct Memory {
    spans: HashMap<PackId, Arc<Loaded>>,
    order: VecDeque<PackId>,
    bytes: usize,
}

/// Tree spans of one repository; see the module doc.
pub struct TreeCache {
    disk: Option<DiskCache>,
    /// Computed from the index on first use.
    spans: OnceLock<HashMap<PackId, Span>>,
    memory: Mutex<Memory>,
}

impl std::fmt::Debug for TreeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeCache")
            .field("disk", &self.disk.as_ref().map(|d| &d.dir))
            .finish_non_exhaustive()
    }
}

impl TreeCache {
    /// A cache for `repo`: on disk too when its backend is remote and a cache folder
    /// can be used.
    pub fn new(repo: &Repository) -> TreeCache {
        let disk = if repo.backend.remote() {
            DiskCache::for_repository(&repo.config.repo_id)
        } else {
            None
        };
        Self::with_disk(disk)
    }

    fn with_disk(disk: Option<DiskCache>) -> TreeCache {
        TreeCache {
            disk,
            spans: OnceLock::new(),
            memory: Mutex::new(Memory::default()),
        }
    }

    /// An empty cache for a new index, sharing the disk folder.
    pub fn renewed(&self) -> TreeCache {
        Self::with_disk(self.disk.clone())
    }

    /// An empty cache that never uses the disk.
    pub fn memory_only() -> TreeCache {
        Self::with_disk(None)
    }

    /// The disk cache, if any (backups store the tree packs they upload there).
    pub fn disk(&self) -> Option<&DiskCache> {
        self.disk.as_ref()
    }

    /// Forget every span held in memory.
    pub fn clear_memory(&self) {
        *self.memory.lock().expect("tree cache") = Memory::default();
    }

    /// The sealed bytes of the tree blob at `loc`, from a cached or freshly read span;
    /// `None` when its pack is not worth reading whole or the span could not be read
    /// (the caller then reads the blob alone, with its own error reporting).
    pub(crate) fn sealed<R>(
        &self,
        repo: &Repository,
        index: &MasterIndex,
        loc: &BlobLocation,
        open: impl Fn(&[u8]) -> Option<R>,
    ) -> Option<R> {
        let span = *self
            .spans
            .get_or_init(|| tree_spans(index))
            .get(&loc.pack)?;
        if !span.worth_reading() {
            return None;
        }
        let loaded = self.load(repo, &loc.pack, span)?;
        if let Some(r) = loaded.blob(&loc.blob).and_then(&open) {
            return Some(r);
        }
        // A stale or damaged cached copy: forget it, and read the span once more from
        // the repository (which may hold a newer layout of the pack's trees).
        self.forget(&loc.pack);
        if loaded.from_disk {
            let fresh = self.load(repo, &loc.pack, span)?;
            return fresh.blob(&loc.blob).and_then(open);
        }
        None
    }

    fn load(&self, repo: &Repository, pack: &PackId, span: Span) -> Option<Arc<Loaded>> {
        let mut memory = self.memory.lock().expect("tree cache");
        if let Some(l) = memory.spans.get(pack) {
            return Some(l.clone());
        }
        let name = pack.to_hex();
        let from_disk = self
            .disk
            .as_ref()
            .and_then(|d| d.read(&name))
            .filter(|(start, data)| *start <= span.start && *start + data.len() as u64 >= span.end);
        let loaded = match from_disk {
            Some((start, data)) => Loaded {
                start,
                data,
                from_disk: true,
            },
            None => {
                let data = repo
                    .backend
                    .read_range(FileKind::Pack, &name, span.start, span.end - span.start)
                    .ok()?;
                if let Some(d) = &self.disk {
                    d.store(&name, span.start, &data);
                }
                Loaded {
                    start: span.start,
                    data,
                    from_disk: false,
                }
            }
        };
        let loaded = Arc::new(loaded);
        memory.bytes += loaded.data.len();
        memory.order.push_back(*pack);
        memory.spans.insert(*pack, loaded.clone());
        while memory.bytes > MEMORY_BUDGET && memory.order.len() > 1 {
            let oldest = memory.order.pop_front().expect("not empty");
            if let Some(l) = memory.spans.remove(&oldest) {
                memory.bytes -= l.data.len();
            }
        }
        Some(loaded)
    }

    fn forget(&self, pack: &PackId) {
        let mut memory = self.memory.lock().expect("tree cache");
        if let Some(l) = memory.spans.remove(pack) {
            memory.bytes -= l.data.len();
            memory.order.retain(|p| p != pack);
        }
        drop(memory);
        if let Some(d) = &self.disk {
            d.remove(&pack.to_hex());
        }
    }
}

fn tree_spans(index: &MasterIndex) -> HashMap<PackId, Span> {
    let mut spans: HashMap<PackId, Span> = HashMap::new();
    for loc in index.iter().filter(|l| l.blob.kind == BlobKind::Tree) {
        let (start, end) = blob_extent(&loc.blob);
        let s = spans.entry(loc.pack).or_insert(Span {
            start,
            end,
            tree_bytes: 0,
        });
        s.start = s.start.min(start);
        s.end = s.end.max(end);
        s.tree_bytes += loc.blob.length as u64;
    }
    spans
}

fn blob_extent(b: &PackBlob) -> (u64, u64) {
    (b.offset as u64, b.offset as u64 + b.length as u64)
}

/// The span of a pack's tree blobs, when every blob of the pack is a tree.
pub fn tree_pack_span(blobs: &[PackBlob]) -> Option<(u64, u64)> {
    if blobs.is_empty() || blobs.iter().any(|b| b.kind != BlobKind::Tree) {
        return None;
    }
    let start = blobs.iter().map(|b| blob_extent(b).0).min()?;
    let end = blobs.iter().map(|b| blob_extent(b).1).max()?;
    Some((start, end))
}

/// Tree spans of one repository on local disk: one file per pack holding the span's
/// start (8 bytes, little endian) and its sealed bytes. Every failure to read or write
/// is silent: the cache only ever saves requests.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// The folder for a repository, created (mode 0700) if needed; `None` when caching
    /// is off or no folder can be made.
    pub fn for_repository(repo_id: &[u8; 32]) -> Option<DiskCache> {
        let dir = cache_root()?.join(hex::encode(repo_id)).join("trees");
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.recursive(true).create(&dir).ok()?;
        Some(DiskCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Option<(u64, Vec<u8>)> {
        let mut data = std::fs::read(self.dir.join(name)).ok()?;
        let start = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        data.drain(..8);
        Some((start, data))
    }

    /// Keep a span (written to a temporary file, then renamed into place).
    pub fn store(&self, name: &str, start: u64, data: &[u8]) {
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&start.to_le_bytes())?;
            f.write_all(data)?;
            std::fs::rename(&tmp, self.dir.join(name))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Drop a pack's span (after prune removed the pack, or when it was found damaged).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }
}

fn cache_root() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env("HAVEN_CACHE_DIR") {
        return (dir != "off").then(|| PathBuf::from(dir));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("haven"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache").join("haven"))
}
