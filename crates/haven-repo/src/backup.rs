//! Backup of file trees and of standard input.
//!
//! Data flow:
//! ```text
//! walker (this thread) ──FileJob──> readers (N threads: read, chunk, hash) ──> BlobSaver
//!    │  unchanged files (same size, mtime, ctime, inode as in the parent snapshot;
//!    │  with a racy margin, also modified that long before the parent backup began)
//!    │  take their content list from the parent without being read
//!    │  excluded entries (BackupOptions::exclude) are neither read nor descended into
//!    └─ directories: a DirState counts entries still pending; whichever thread
//!       completes the last one encodes the tree, saves it, and completes the parent.
//! ```
//! Order of durability: packs, then index (`BlobSaver::finish`), then the snapshot.
//! A file that cannot be read is skipped with a warning (and not counted in the
//! summary); a repository error aborts the backup and writes no snapshot.
//! The paths given are resolved first (`backup/paths.rs`: absolute, `..` resolved as
//! the kernel does); the snapshot records the resolved paths.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::chunker::ChunkStream;
use crate::error::{RepoError, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::IndexedRepository;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::saver::BlobSaver;
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};

mod dry_run;
mod exclude;
mod paths;
pub use dry_run::{dry_run, DryRun};
pub use exclude::ExcludeRules;
pub use paths::resolve as resolve_path;

/// Which snapshot to compare against to skip unchanged files.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Auto,
    None,
    Id(SnapshotId),
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub parent: ParentChoice,
    /// Entries to leave out: neither stored nor, for folders, read.
    pub exclude: Option<Exclude>,
    /// Read again every file the parent snapshot saw modified within this margin of
    /// the parent backup's start (or later), instead of trusting its unchanged
    /// metadata: a file written again within the same timestamp tick after the parent
    /// read it looks unchanged (file systems keep coarse timestamps; git's index calls
    /// such entries "racily clean"). For files whose silent staleness corrupts a
    /// restore (a database's data directory); `None` trusts the metadata as restic does.
    pub racy_margin: Option<std::time::Duration>,
}

/// A rule saying which entries a backup leaves out, asked with each entry's path (as
/// found below the backed-up paths) and metadata before it is read.
#[derive(Clone)]
pub struct Exclude(pub Arc<ExcludeFn>);

/// The predicate of an [`Exclude`]: `true` leaves the entry out.
pub type ExcludeFn = dyn Fn(&Path, &std::fs::Metadata) -> bool + Send + Sync;

impl std::fmt::Debug for Exclude {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exclude(..)")
    }
}

/// The result of a backup.
#[derive(Debug, Clone)]
pub struct BackupResult {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Files and folders skipped (unreadable, vanished).
    pub warnings: Vec<String>,
    /// Warnings about the backup as a whole that skipped nothing, such as a parent
    /// snapshot that could not be used (every file was then read in full).
    pub notices: Vec<String>,
}

struct DirState {
    slots: Mutex<Vec<Option<Node>>>,
    pending: AtomicUsize,
    own: Mutex<Option<Node>>,
    parent: Option<(Arc<DirState>, usize)>,
}

struct Ctx {
    saver: BlobSaver,
    root_tree: Mutex<Option<BlobId>>,
    error: Mutex<Option<RepoError>>,
    warnings: Mutex<Vec<String>>,
    progress: Arc<Progress>,
    files: AtomicU64,
    dirs: AtomicU64,
    unchanged: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
}

impl Ctx {
    fn fail(&self, e: RepoError) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn warn(&self, w: String) {
        self.warnings.lock().expect("warnings lock").push(w);
    }

    fn failed(&self) -> bool {
        self.error.lock().expect("error lock").is_some()
    }
}

impl DirState {
    fn new(own: Option<Node>, parent: Option<(Arc<DirState>, usize)>) -> Arc<Self> {
        Arc::new(DirState {
            slots: Mutex::new(vec![]),
            pending: AtomicUsize::new(1),
            own: Mutex::new(own),
            parent,
        })
    }

    /// Open `n` slots; the extra count held since creation is released by `listed`.
    fn reserve(&self, n: usize) {
        self.slots.lock().expect("slots").resize(n, None);
        self.pending.fetch_add(n, Ordering::SeqCst);
    }

    fn listed(self: &Arc<Self>, ctx: &Ctx) {
        self.release(ctx);
    }

    fn complete(self: &Arc<Self>, slot: usize, node: Option<Node>, ctx: &Ctx) {
        self.slots.lock().expect("slots")[slot] = node;
        self.release(ctx);
    }

    fn release(self: &Arc<Self>, ctx: &Ctx) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let nodes: Vec<Node> = std::mem::take(&mut *self.slots.lock().expect("slots"))
            .into_iter()
            .flatten()
            .collect();
        let tree = Tree { nodes };
        let id = match ctx.saver.save(BlobKind::Tree, tree.encode()) {
            Ok(id) => id,
            Err(e) => return ctx.fail(e),
        };
        match &self.parent {
            None => *ctx.root_tree.lock().expect("root") = Some(id),
            Some((parent, slot)) => {
                let mut own = self
                    .own
                    .lock()
                    .expect("own")
                    .take()
                    .expect("a directory's own node is set once");
                own.subtree = Some(id);
                parent.complete(*slot, Some(own), ctx);
            }
        }
    }
}

struct FileJob {
    path: PathBuf,
    node: Node,
    dir: Arc<DirState>,
    slot: usize,
}

/// What to back up below one directory level: real paths, or synthetic ancestors.
enum Entry {
    Real(PathBuf),
    Virtual(PathBuf, BTreeMap<OsString, Entry>),
}

/// `paths` are resolved ([`paths::resolve`]) and exist.
fn build_layout(paths: &[PathBuf]) -> Result<BTreeMap<OsString, Entry>> {
    let mut root: BTreeMap<OsString, Entry> = BTreeMap::new();
    for abs in paths {
        let comps: Vec<OsString> = abs
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_os_string()),
                _ => None,
            })
            .collect();
        if comps.is_empty() {
            return Err(RepoError::InvalidInput(
                "backing up / as a whole is not supported; name the folders to back up".into(),
            ));
        }
        let mut level = &mut root;
        let mut prefix = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            prefix.push(c);
            if i + 1 == comps.len() {
                level.insert(c.clone(), Entry::Real(prefix.clone()));
                break;
            }
            let e = level
                .entry(c.clone())
                .or_insert_with(|| Entry::Virtual(prefix.clone(), BTreeMap::new()));
            match e {
                Entry::Virtual(_, children) => level = children,
                Entry::Real(_) => break, // an ancestor is backed up whole already
            }
        }
    }
    Ok(root)
}

struct Walker<'a> {
    ctx: &'a Arc<Ctx>,
    repo: IndexedRepository,
    jobs: crossbeam_channel::Sender<FileJob>,
    exclude: Option<&'a Exclude>,
    /// Parent entries modified at or after this moment (ns since the epoch) are not
    /// trusted to be unchanged.
    racy_from_ns: i64,
}

impl Walker<'_> {
    /// The node of `path` from its metadata, with its extended attributes.
    fn node_of(&self, path: &Path, name: &OsString, meta: &std::fs::Metadata) -> Node {
        let mut node = Node::from_metadata(name.as_bytes().to_vec(), meta);
        match crate::xattr::read(path) {
            Ok(xattrs) => node.xattrs = xattrs,
            Err(e) => self.ctx.warn(format!(
                "{}: reading extended attributes: {e}",
                path.display()
            )),
        }
        node
    }

    fn parent_subtree(&self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent?.subtree?;
        let data = self.repo.read_blob(&id).ok()?;
        Tree::decode(&data).ok()
    }

    fn walk_layout(
        &self,
        entries: &BTreeMap<OsString, Entry>,
        dir: &Arc<DirState>,
        parent_tree: Option<&Tree>,
    ) {
        dir.reserve(entries.len());
        for (slot, (name, entry)) in entries.iter().enumerate() {
            let pnode = parent_tree.and_then(|t| t.find(name.as_bytes()));
            match entry {
                Entry::Real(path) => self.walk_path(path, name, dir, slot, pnode),
                Entry::Virtual(path, children) => match std::fs::symlink_metadata(path) {
                    Ok(m) => {
                        let own = self.node_of(path, name, &m);
                        let child = DirState::new(Some(own), Some((dir.clone(), slot)));
                        let ptree = self.parent_subtree(pnode);
                        self.walk_layout(children, &child, ptree.as_ref());
                        child.listed(self.ctx);
                    }
                    Err(e) => {
                        self.ctx.warn(format!("{}: {e}", path.display()));
                        dir.complete(slot, None, self.ctx);
                    }
                },
            }
        }
    }

    fn walk_path(
        &self,
        path: &Path,
        name: &OsString,
        dir: &Arc<DirState>,
        slot: usize,
        pnode: Option<&Node>,
    ) {
        if self.ctx.failed() {
            return dir.complete(slot, None, self.ctx);
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.ctx.warn(format!("{}: {e}", path.display()));
                return dir.complete(slot, None, self.ctx);
            }
        };
        if self.exclude.is_some_and(|x| (x.0)(path, &meta)) {
            return dir.complete(slot, None, self.ctx);
        }
        let mut node = self.node_of(path, name, &meta);
        match node.kind {
            NodeKind::Dir => {
                self.ctx.dirs.fetch_add(1, Ordering::Relaxed);
                let child = DirState::new(Some(node), Some((dir.clone(), slot)));
                let ptree = self.parent_subtree(pnode);
                match read_dir_sorted(path) {
                    Ok(names) => {
                        child.reserve(names.len());
                        for (i, n) in names.iter().enumerate() {
                            let pn = ptree.as_ref().and_then(|t| t.find(n.as_bytes()));
                            self.walk_path(&path.join(n), n, &child, i, pn);
                        }
                    }
                    Err(e) => self.ctx.warn(format!("{}: {e}", path.display())),
                }
                child.listed(self.ctx);
            }
            NodeKind::File => {
                self.ctx.files.fetch_add(1, Ordering::Relaxed);
                self.ctx.bytes_total.fetch_add(node.size, Ordering::Relaxed);
                if let Some(p) = pnode.filter(|p| {
                    unchanged(p, &node)
                        && p.mtime_ns < self.racy_from_ns
                        && p.content.iter().all(|b| self.repo.index.contains(b))
                }) {
                    node.content = p.content.clone();
                    self.ctx.unchanged.fetch_add(1, Ordering::Relaxed);
                    self.ctx.progress.add_done(1, node.size);
                    return dir.complete(slot, Some(node), self.ctx);
                }
                let job = FileJob {
                    path: path.to_path_buf(),
                    node,
                    dir: dir.clone(),
                    slot,
                };
                if let Err(crossbeam_channel::SendError(job)) = self.jobs.send(job) {
                    job.dir.complete(job.slot, None, self.ctx);
                }
            }
            NodeKind::Symlink => {
                match std::fs::read_link(path) {
                    Ok(t) => node.link_target = t.into_os_string().into_vec(),
                    Err(e) => self.ctx.warn(format!("{}: {e}", path.display())),
                }
                dir.complete(slot, Some(node), self.ctx);
            }
            _ => dir.complete(slot, Some(node), self.ctx),
        }
    }
}

fn unchanged(parent: &Node, now: &Node) -> bool {
    parent.kind == NodeKind::File
        && parent.size == now.size
        && parent.mtime_ns == now.mtime_ns
        && parent.ctime_ns == now.ctime_ns
        && parent.inode == now.inode
}

/// When the parent backup began (ns since the epoch): its time is taken as it ends.
fn parent_started_ns(parent: &Snapshot) -> i64 {
    let ended = parent.time.timestamp_nanos_opt().unwrap_or(i64::MAX / 2);
    ended.saturating_sub((parent.summary.seconds.max(0.0) * 1e9) as i64)
}

fn read_dir_sorted(path: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

thread_local! {
    /// Each reader thread's chunking buffer, reused from file to file.
    static CHUNK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn read_file(ctx: &Ctx, job: FileJob) {
    let FileJob {
        path,
        mut node,
        dir,
        slot,
    } = job;
    if ctx.failed() {
        return dir.complete(slot, None, ctx);
    }
    let result = (|| -> Result<()> {
        let f = std::fs::File::open(&path).map_err(|e| RepoError::io(&path, "opening", e))?;
        let buf = CHUNK_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let mut stream = ChunkStream::with_buffer(ctx.saver.repo().repo.chunker(), f, buf);
        let mut size = 0u64;
        while let Some(chunk) = stream
            .next_chunk()
            .map_err(|e| RepoError::io(&path, "reading", e))?
        {
            let n = chunk.len() as u64;
            node.content.push(ctx.saver.save(BlobKind::Data, chunk)?);
            size += n;
            ctx.bytes_read.fetch_add(n, Ordering::Relaxed);
            ctx.progress.add_done(0, n);
        }
        node.size = size;
        CHUNK_BUFFER.with(|b| *b.borrow_mut() = stream.into_buffer());
        Ok(())
    })();
    ctx.progress.add_done(1, 0);
    match result {
        Ok(()) => dir.complete(slot, Some(node), ctx),
        Err(e @ RepoError::Io { .. }) => {
            // Skipped: the summary counts only the files the snapshot holds.
            ctx.files.fetch_sub(1, Ordering::Relaxed);
            ctx.bytes_total.fetch_sub(node.size, Ordering::Relaxed);
            ctx.warn(e.to_string());
            dir.complete(slot, None, ctx);
        }
        Err(e) => {
            ctx.fail(e);
            dir.complete(slot, None, ctx);
        }
    }
}

fn find_parent(
    repo: &IndexedRepository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(id) => Ok(Some((*id, repo.repo.load_snapshot(id)?))),
        ParentChoice::Auto => {
            // Listed after the index was loaded: a snapshot committed in between is not
            // a usable parent (its trees may not be in our index), so it is passed over.
            let (all, _) = repo.repo.snapshots()?;
            Ok(all
                .into_iter()
                .rev()
                .filter(|s| repo.index.contains(&s.snapshot.tree))
                .find(|s| s.snapshot.hostname == host && s.snapshot.paths == paths)
                .map(|s| (s.id, s.snapshot)))
        }
    }
}

/// Scan the paths for totals (progress and ETA), in a thread alongside the backup.
fn spawn_scanner(
    paths: Vec<PathBuf>,
    exclude: Option<Exclude>,
    progress: Arc<Progress>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stack = paths;
        while let Some(p) = stack.pop() {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if exclude.as_ref().is_some_and(|x| (x.0)(&p, &m)) {
                continue;
            }
            if m.is_dir() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            } else if m.is_file() {
                progress.add_total(1, m.len());
            }
        }
        progress.totals_final.store(true, Ordering::Relaxed);
    })
}

fn new_ctx(repo: IndexedRepository, progress: Arc<Progress>) -> Arc<Ctx> {
    Arc::new(Ctx {
        saver: BlobSaver::new(repo),
        root_tree: Mutex::new(None),
        error: Mutex::new(None),
        warnings: Mutex::new(vec![]),
        progress,
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        bytes_total: AtomicU64::new(0),
    })
}

/// Finish the pipeline and write the snapshot: packs, index, then snapshot.
fn commit(ctx: Arc<Ctx>, mut snapshot: Snapshot, started: Instant) -> Result<BackupResult> {
    let ctx =
        Arc::try_unwrap(ctx).map_err(|_| RepoError::InvalidInput("backup still running".into()))?;
    let error = ctx.error.into_inner().expect("error lock");
    let repo = ctx.saver.repo().clone();
    crate::debug::phase("backup: readers done, flushing packs and index");
    // The saver's own error comes first: what readers hold is a re-wrapped copy of it
    // (the original keeps its class, e.g. a full disk).
    let stats = ctx.saver.finish()?;
    if let Some(e) = error {
        return Err(e);
    }
    let tree = ctx
        .root_tree
        .into_inner()
        .expect("root")
        .ok_or_else(|| RepoError::InvalidInput("backup produced no tree".into()))?;
    let warnings = ctx.warnings.into_inner().expect("warnings");
    snapshot.tree = tree;
    snapshot.summary = Summary {
        files: ctx.files.load(Ordering::Relaxed),
        dirs: ctx.dirs.load(Ordering::Relaxed),
        files_unchanged: ctx.unchanged.load(Ordering::Relaxed),
        bytes_read: ctx.bytes_read.load(Ordering::Relaxed),
        bytes_total: ctx.bytes_total.load(Ordering::Relaxed),
        blobs_added: stats.blobs_added.load(Ordering::Relaxed),
        bytes_added_raw: stats.bytes_added_raw.load(Ordering::Relaxed),
        bytes_added_stored: stats.bytes_added_stored.load(Ordering::Relaxed),
        warnings: warnings.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::debug::phase("backup: writing snapshot");
    crate::lock::ensure_held(&repo.repo)?;
    let id = repo.repo.save_snapshot(&snapshot)?;
    crate::debug::phase("backup: done");
    Ok(BackupResult {
        id,
        snapshot,
        warnings,
        notices: vec![],
    })
}

fn base_snapshot(host: String, paths: Vec<String>, tags: Vec<String>) -> Snapshot {
    Snapshot {
        time: chrono::Utc::now(),
        hostname: host,
        username: crate::host::username(),
        paths,
        tags,
        tree: BlobId::default(),
        parent: None,
        stdin_name: None,
        summary: Summary::default(),
        program_version: format!("haven {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The paths to back up made absolute (`..` resolved as the kernel does), each checked
/// to exist.
fn resolve_existing(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    given
        .iter()
        .map(|p| {
            paths::resolve(p)
                .and_then(|abs| std::fs::symlink_metadata(&abs).map(|_| abs))
                .map_err(|e| {
                    RepoError::InvalidInput(format!("cannot back up {}: {e}", p.display()))
                })
        })
        .collect()
}

/// Back up file trees. The caller holds a shared lock.
pub fn backup_paths(
    repo: IndexedRepository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupResult> {
    let started = Instant::now();
    if opts.paths.is_empty() {
        return Err(RepoError::InvalidInput(
            "name at least one path to back up (or use --stdin)".into(),
        ));
    }
    let resolved = resolve_existing(&opts.paths)?;
    let layout = build_layout(&resolved)?;
    // The snapshot records the resolved paths: the ones its tree holds.
    let mut paths: Vec<String> = resolved.iter().map(|p| p.display().to_string()).collect();
    paths.sort();
    let host = opts.host.clone().unwrap_or_else(crate::host::hostname);
    crate::debug::phase("backup: finding parent");
    let mut notices = vec![];
    let mut repo = repo;
    let mut racy_from_ns = i64::MAX;
    let (parent, parent_root) = match find_parent(&repo, opts, &host, &paths)? {
        Some((id, s)) => match parent_root(&repo, &id, &s.tree)? {
            Ok(root) => {
                if let Some(margin) = opts.racy_margin {
                    racy_from_ns = parent_started_ns(&s) - margin.as_nanos() as i64;
                }
                (Some(id), Some(root))
            }
            Err(unusable) => {
                notices.push(unusable);
                repo = without_lost_packs(&repo, &s.tree)?;
                (None, None)
            }
        },
        None => (None, None),
    };
    let scanner = spawn_scanner(resolved, opts.exclude.clone(), progress.clone());
    let ctx = new_ctx(repo.clone(), progress);
    let readers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let (tx, rx) = bounded::<FileJob>(256);
    let mut threads = vec![];
    for _ in 0..readers {
        let (rx, ctx) = (rx.clone(), ctx.clone());
        threads.push(std::thread::spawn(move || {
            for job in rx {
                read_file(&ctx, job);
            }
        }));
    }
    crate::debug::phase("backup: walking");
    let root = DirState::new(None, None);
    {
        let walker = Walker {
            ctx: &ctx,
            repo: repo.clone(),
            jobs: tx,
            exclude: opts.exclude.as_ref(),
            racy_from_ns,
        };
        walker.walk_layout(&layout, &root, parent_root.as_ref());
        root.listed(&ctx);
    }
    crate::debug::phase("backup: walk done, waiting for readers");
    for t in threads {
        t.join()
            .map_err(|_| RepoError::InvalidInput("a backup reader thread panicked".into()))?;
    }
    let _ = scanner.join();
    drop(root);
    let mut snapshot = base_snapshot(host, paths, opts.tags.clone());
    snapshot.parent = parent;
    let mut result = commit(ctx, snapshot, started)?;
    result.notices = notices;
    Ok(result)
}

/// `repo` reading without the packs that are missing from storage and without the pack
/// of `damaged` (the parent's root tree): every blob they hold is stored again, so the
/// new snapshot never names a blob only a lost pack holds (trees of unchanged folders
/// have the same ids as before).
fn without_lost_packs(repo: &IndexedRepository, damaged: &BlobId) -> Result<IndexedRepository> {
    let stored = repo.repo.stored_packs()?;
    let mut gone: HashSet<PackId> = repo
        .index
        .pack_ids()
        .iter()
        .filter(|p| !stored.contains_key(p))
        .copied()
        .collect();
    gone.extend(repo.index.copies(damaged).map(|l| l.pack));
    Ok(repo.without_packs(&gone))
}

/// The parent snapshot's root tree, or why it cannot be used. When it is damaged or
/// lost (its tree pack gone), the backup goes on without a parent, reading every file
/// in full: refusing would leave the data unprotected because of an old snapshot, and
/// the new snapshot needs nothing of the lost trees. Other errors (a storage error a
/// retry may cure) still fail the backup.
fn parent_root(
    repo: &IndexedRepository,
    id: &SnapshotId,
    tree: &BlobId,
) -> Result<Result<Tree, String>> {
    let damage = match crate::walk::load_tree(repo, tree) {
        Ok(root) => return Ok(Ok(root)),
        Err(e @ RepoError::Corrupt { .. }) => e,
        Err(RepoError::Store(e)) if e.is_not_found() => RepoError::Store(e),
        Err(e) => return Err(e),
    };
    Ok(Err(format!(
        "the parent snapshot {} cannot be used: its root tree could not be read ({damage}); every file is read in full and this snapshot names no parent. Run `haven check` to see what else is damaged",
        id.short()
    )))
}

/// Back up one stream (standard input) as a single file named `name`.
pub fn backup_stream(
    repo: IndexedRepository,
    reader: impl Read,
    name: &str,
    tags: Vec<String>,
    host: Option<String>,
    progress: Arc<Progress>,
) -> Result<BackupResult> {
    let started = Instant::now();
    // The name becomes a file below the restore target: `.` and `..` would name the
    // target or its parent, and could never be restored into a folder.
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(RepoError::InvalidInput(format!(
            "--stdin-name {name:?} cannot be restored as a file: give a plain file name (no `/`, not `.` or `..`), e.g. --stdin-name dump.sql"
        )));
    }
    progress.totals_final.store(false, Ordering::Relaxed);
    let ctx = new_ctx(repo, progress.clone());
    let mut node = Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File,
        mode: 0o600,
        uid: crate::host::current_uid(),
        gid: 0,
        mtime_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        ctime_ns: 0,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        size: 0,
        content: vec![],
        subtree: None,
        link_target: vec![],
        xattrs: vec![],
    };
    let mut stream = ChunkStream::new(ctx.saver.repo().repo.chunker(), reader);
    while let Some(chunk) = stream
        .next_chunk()
        .map_err(|e| RepoError::io(name, "reading", e))?
    {
        node.size += chunk.len() as u64;
        progress.add_done(0, chunk.len() as u64);
        node.content.push(ctx.saver.save(BlobKind::Data, chunk)?);
    }
    ctx.files.store(1, Ordering::Relaxed);
    ctx.bytes_read.store(node.size, Ordering::Relaxed);
    ctx.bytes_total.store(node.size, Ordering::Relaxed);
    let root = DirState::new(None, None);
    root.reserve(1);
    root.complete(0, Some(node), &ctx);
    root.listed(&ctx);
    drop(root);
    let host = host.unwrap_or_else(crate::host::hostname);
    let mut snapshot = base_snapshot(host, vec![format!("/{name}")], tags);
    snapshot.stdin_name = Some(name.to_string());
    commit(ctx, snapshot, started)
}
