//! How the engine treats a remote store: tree packs read whole and kept in the local
//! tree cache, several uploads and pack reads in flight at once, `check` judging what is
//! stored rather than the cache, `copy` reading a pack range at a time.
//!
//! [`Observed`] wraps a memory backend, says whether it is remote, counts pack reads and
//! records how many pack requests were in flight at once. To let overlap show without
//! real network latency, a pack request of a gated backend waits (up to one second)
//! for a second one to arrive: an engine that overlaps requests passes at once, a sequential one is seen
//! with one request in flight at a time.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use haven_repo::backup::{backup_paths, BackupOptions};
use haven_repo::check::check;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::snapshot::Snapshot;
use haven_repo::tree::NodeKind;
use haven_repo::{walk, IndexedRepository, Repository};
mod common;
use common::{fast_opts, pass, restore_all};
use haven_store::{
    DynBackend, FileInfo, FileKind, MemoryBackend, ReadBackend, StoreError, WriteBackend,
};

struct Observed {
    inner: MemoryBackend,
    remote: bool,
    /// Whether pack requests wait for a second one (only tests of overlap need it).
    gate: bool,
    pack_reads: AtomicUsize,
    in_flight: Mutex<usize>,
    arrived: Condvar,
    max_writes: AtomicUsize,
    max_reads: AtomicUsize,
}

impl Observed {
    fn new(remote: bool, gate: bool) -> Arc<Observed> {
        Arc::new(Observed {
            inner: MemoryBackend::new(),
            remote,
            gate,
            pack_reads: AtomicUsize::new(0),
            in_flight: Mutex::new(0),
            arrived: Condvar::new(),
            max_writes: AtomicUsize::new(0),
            max_reads: AtomicUsize::new(0),
        })
    }

    /// Run one pack request, waiting up to a second for a second one to overlap it.
    fn request<T>(&self, max: &AtomicUsize, f: impl FnOnce() -> T) -> T {
        let mut n = self.in_flight.lock().unwrap();
        *n += 1;
        max.fetch_max(*n, Ordering::SeqCst);
        self.arrived.notify_all();
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.gate && *n < 2 && Instant::now() < deadline {
            n = self
                .arrived
                .wait_timeout(n, deadline - Instant::now())
                .unwrap()
                .0;
        }
        drop(n);
        let out = f();
        *self.in_flight.lock().unwrap() -= 1;
        out
    }

    fn reset_counts(&self) {
        self.pack_reads.store(0, Ordering::SeqCst);
        self.max_reads.store(0, Ordering::SeqCst);
        self.max_writes.store(0, Ordering::SeqCst);
    }
}

impl ReadBackend for Observed {
    fn location(&self) -> String {
        "observed".into()
    }

    fn remote(&self) -> bool {
        self.remote
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        self.inner.list(kind)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        if kind != FileKind::Pack {
            return self.inner.read(kind, name);
        }
        self.pack_reads.fetch_add(1, Ordering::SeqCst);
        self.request(&self.max_reads, || self.inner.read(kind, name))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        if kind != FileKind::Pack {
            return self.inner.read_range(kind, name, offset, length);
        }
        self.pack_reads.fetch_add(1, Ordering::SeqCst);
        self.request(&self.max_reads, || {
            self.inner.read_range(kind, name, offset, length)
        })
    }
}

impl WriteBackend for Observed {
    fn create(&self) -> Result<(), StoreError> {
        self.inner.create()
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        if kind != FileKind::Pack {
            return self.inner.write(kind, name, data);
        }
        self.request(&self.max_writes, || self.inner.write(kind, name, data))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.inner.remove(kind, name)
    }
}

/// `dirs` folders with one small file each, plus `noise` bytes of incompressible data.
fn write_source(root: &Path, dirs: usize, noise: usize) {
    for i in 0..dirs {
        let d = root.join(format!("d{i:04}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), format!("file {i}\n")).unwrap();
    }
    std::fs::write(
        root.join("noise.bin"),
        common::noise(noise, 0x9e37_79b9_7f4a_7c15),
    )
    .unwrap();
}

fn open(backend: &DynBackend) -> IndexedRepository {
    Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap()
}

/// A repository on `observed` holding one backup of `src`.
fn backed_up(observed: &Arc<Observed>, src: &Path) -> (DynBackend, Snapshot) {
    let backend: DynBackend = observed.clone();
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let options = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..Default::default()
    };
    let done = backup_paths(open(&backend), &options, Arc::new(Progress::default())).unwrap();
    (backend, done.snapshot)
}

fn count_files(repo: &IndexedRepository, snap: &Snapshot) -> usize {
    let mut files = 0;
    walk::walk(
        repo,
        &snap.tree,
        &mut |_, node| {
            files += usize::from(node.kind == NodeKind::File);
            true
        },
        &mut |path, e| panic!("tree of {} unreadable: {e}", path.display()),
    );
    files
}

fn tree_cache_files(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for repo in std::fs::read_dir(cache).unwrap() {
        let trees = repo.unwrap().path().join("trees");
        for f in std::fs::read_dir(trees).unwrap() {
            let p = f.unwrap().path();
            if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_walk_reads_each_tree_pack_once_not_each_tree() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HAVEN_CACHE_DIR", cache.path());
    let src = tempfile::tempdir().unwrap();
    write_source(src.path(), 300, 0);
    let observed = Observed::new(false, false);
    let (backend, snap) = backed_up(&observed, src.path());
    let repo = open(&backend);
    observed.reset_counts();
    assert_eq!(count_files(&repo, &snap), 301);
    let reads = observed.pack_reads.load(Ordering::SeqCst);
    assert!(
        reads <= 2,
        "{reads} pack reads for ~300 trees: trees were read one request each"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "a local repository must not fill the tree cache"
    );
}

#[test]
fn a_remote_backup_fills_the_tree_cache_so_later_walks_send_no_request() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HAVEN_CACHE_DIR", cache.path());
    let src = tempfile::tempdir().unwrap();
    write_source(src.path(), 200, 0);
    let observed = Observed::new(true, false);
    let (backend, snap) = backed_up(&observed, src.path());
    assert!(
        !tree_cache_files(cache.path()).is_empty(),
        "the backup kept no tree pack in the cache"
    );
    let repo = open(&backend);
    observed.reset_counts();
    assert_eq!(count_files(&repo, &snap), 201);
    assert_eq!(
        observed.pack_reads.load(Ordering::SeqCst),
        0,
        "cache files: {:?}",
        tree_cache_files(cache.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect::<Vec<_>>()
    );

    // Damaged cached copies are not trusted: the walk reads storage and the cache is
    // made whole again.
    let cached = tree_cache_files(cache.path());
    let good: Vec<Vec<u8>> = cached.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for p in &cached {
        let mut bytes = std::fs::read(p).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    }
    let repo = open(&backend);
    observed.reset_counts();
    assert_eq!(count_files(&repo, &snap), 201);
    assert!(observed.pack_reads.load(Ordering::SeqCst) > 0);
    let again: Vec<Vec<u8>> = cached.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(again, good, "the damaged cache files were not replaced");
}

#[test]
fn check_judges_what_is_stored_not_the_tree_cache() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HAVEN_CACHE_DIR", cache.path());
    let src = tempfile::tempdir().unwrap();
    write_source(src.path(), 50, 0);
    let observed = Observed::new(true, false);
    let (backend, _) = backed_up(&observed, src.path());
    // Damage the stored tree pack; the cache keeps a good copy.
    let cached = tree_cache_files(cache.path());
    assert_eq!(cached.len(), 1);
    let name = cached[0].file_name().unwrap().to_string_lossy().to_string();
    let mut stored = observed.inner.read(FileKind::Pack, &name).unwrap();
    stored[100] ^= 0x01;
    observed.inner.tamper(FileKind::Pack, &name, stored);

    let repo = open(&backend);
    let report = check(
        &ReadView::open(repo.repo.clone()).unwrap(),
        false,
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("tree")),
        "check missed a damaged tree pack: {:?}",
        report.problems
    );
}

#[test]
fn a_remote_store_gets_overlapping_uploads_and_pack_reads() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HAVEN_CACHE_DIR", cache.path());
    let src = tempfile::tempdir().unwrap();
    write_source(src.path(), 3, 6 << 20);
    let observed = Observed::new(true, true);
    let (backend, snap) = backed_up(&observed, src.path());
    assert!(
        observed.max_writes.load(Ordering::SeqCst) >= 2,
        "pack uploads to a remote store never overlapped"
    );

    let repo = open(&backend);
    observed.reset_counts();
    let (_out, restored) = restore_all(&repo, &snap, src.path());
    assert_eq!(
        std::fs::read(restored.join("noise.bin")).unwrap(),
        std::fs::read(src.path().join("noise.bin")).unwrap()
    );
    assert!(
        observed.max_reads.load(Ordering::SeqCst) >= 2,
        "restore never had two pack reads in flight"
    );

    observed.reset_counts();
    let r = check(
        &ReadView::open(repo.repo.clone()).unwrap(),
        true,
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert!(
        observed.max_reads.load(Ordering::SeqCst) >= 2,
        "check --read-data never had two pack reads in flight"
    );
}

#[test]
fn a_local_store_keeps_one_upload_at_a_time() {
    let src = tempfile::tempdir().unwrap();
    write_source(src.path(), 3, 3 << 20);
    let observed = Observed::new(false, true);
    backed_up(&observed, src.path());
    assert_eq!(observed.max_writes.load(Ordering::SeqCst), 1);
}

#[test]
fn copy_reads_the_source_a_pack_range_at_a_time() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HAVEN_CACHE_DIR", cache.path());
    let src_dir = tempfile::tempdir().unwrap();
    write_source(src_dir.path(), 20, 3 << 20);
    let source = Observed::new(true, false);
    let (src_backend, _) = backed_up(&source, src_dir.path());
    let src = open(&src_backend);
    let blobs = src.index.len();

    let dst_backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(dst_backend.clone(), &pass(), &fast_opts()).unwrap();
    let dst = open(&dst_backend);
    let (snapshots, _) = src.repo.snapshots().unwrap();
    source.reset_counts();
    let copied =
        haven_repo::copy::copy_snapshots(&src, &dst, &snapshots, Arc::new(Progress::default()))
            .unwrap();
    assert_eq!(copied.copied.len(), 1);
    let reads = source.pack_reads.load(Ordering::SeqCst);
    assert!(
        reads * 10 < blobs,
        "{reads} pack reads to copy {blobs} blobs: blobs were read one request each"
    );

    let dst = open(&dst_backend);
    let copy = dst.repo.find_snapshot(&snapshots[0].id.to_hex()).unwrap();
    let (_out, restored) = restore_all(&dst, &copy.snapshot, src_dir.path());
    assert_eq!(
        std::fs::read(restored.join("noise.bin")).unwrap(),
        std::fs::read(src_dir.path().join("noise.bin")).unwrap()
    );
    assert_eq!(count_files(&dst, &copy.snapshot), 21);
}
