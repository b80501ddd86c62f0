//! The write pipeline: blobs in, packs and index files out.
//!
//! ```text
//! save() ─(id, dedup)─> [seal workers: compress + encrypt] ─> [packer] ─> [uploaders] ─> index files
//! ```
//! `save` hashes in the caller's thread and returns the blob id at once; a blob that
//! is already indexed or already queued is not stored again. Channels are bounded, so
//! memory stays bounded: a few chunks per worker, the data pack being filled and the ones
//! being written (pack buffers circulate between packer and uploaders: one uploader for
//! a local folder, [`REMOTE_UPLOADERS`] for a remote store), and a small tree pack. Tree
//! packs of a remote repository are also kept in the local tree cache
//! ([`crate::trees`]). The uploaders write a partial index file at least every two
//! seconds, so a killed backup leaves almost everything it uploaded indexed (and
//! `adopt_unindexed_packs` catches the rest). `finish` writes the index for all packs of
//! this run and removes the partial ones.
//!
//! Shutdown: every thread is joined on every exit path. `finish` drains the pipeline;
//! dropping a saver without `finish` (the caller failed) raises the abort flag, so
//! queued blobs and packs are discarded, and joins the threads before the drop returns:
//! nothing reaches the store after a failed call returned. The first error keeps its
//! class; `save` hands callers a copy of it ([`RepoError::duplicate`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use haven_store::FileKind;

use crate::error::{RepoError, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{IndexPack, IndexedRepository};
use crate::pack::{self, BlobKind, PackBlob, PackBuilder, PackBytes, SealedBlob};

/// What a save run added to the repository.
#[derive(Debug, Default)]
pub struct SaverStats {
    pub blobs_added: AtomicU64,
    pub bytes_added_raw: AtomicU64,
    pub bytes_added_stored: AtomicU64,
    pub packs_written: AtomicU64,
}

struct Shared {
    repo: IndexedRepository,
    error: Mutex<Option<RepoError>>,
    /// Raised when the saver is dropped without `finish`: discard, do not write.
    abort: AtomicBool,
    stats: SaverStats,
    written: Mutex<IndexLog>,
}

#[derive(Default)]
struct IndexLog {
    all: Vec<IndexPack>,
    unflushed: Vec<IndexPack>,
    partial_files: Vec<IndexId>,
    last_flush: Option<Instant>,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        let mut slot = self.error.lock().expect("saver error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || self.error.lock().expect("saver error lock").is_some()
    }
}

/// See the module doc.
pub struct BlobSaver {
    shared: Arc<Shared>,
    pending: Mutex<HashSet<BlobId>>,
    workers: Workers,
}

/// The pipeline's threads and its entry. Dropped without [`Workers::join`], it aborts
/// the pipeline and joins every thread.
struct Workers {
    seal_tx: Option<Sender<(BlobKind, BlobId, Vec<u8>)>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Workers {
    /// Close the entry and join every thread; false when one of them panicked.
    fn join(&mut self) -> bool {
        self.seal_tx.take();
        let mut all_ok = true;
        for t in self.threads.drain(..) {
            all_ok &= t.join().is_ok();
        }
        all_ok
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.abort.store(true, Ordering::SeqCst);
            self.join();
        }
    }
}

impl std::fmt::Debug for BlobSaver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSaver")
    }
}

const PARTIAL_INDEX_INTERVAL: Duration = Duration::from_secs(2);

impl BlobSaver {
    pub fn new(repo: IndexedRepository) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        let shared = Arc::new(Shared {
            repo,
            error: Mutex::new(None),
            abort: AtomicBool::new(false),
            stats: SaverStats::default(),
            written: Mutex::new(IndexLog::default()),
        });
        let (seal_tx, seal_rx) = bounded::<(BlobKind, BlobId, Vec<u8>)>(workers * 2);
        let (pack_tx, pack_rx) = bounded::<SealedBlob>(workers * 2);
        let (upload_tx, upload_rx) = bounded::<(PackId, PackBytes, Vec<PackBlob>)>(0);
        let mut threads = vec![];
        for _ in 0..workers {
            let (rx, tx, sh) = (seal_rx.clone(), pack_tx.clone(), shared.clone());
            threads.push(std::thread::spawn(move || seal_worker(rx, tx, sh)));
        }
        drop(pack_tx);
        // One uploader for a local disk, whose flush rate is the limit (a second one
        // would only hold one more 16 MiB pack in memory); several for a remote store,
        // where each PUT waits on a round trip and they overlap.
        let uploaders = if shared.repo.repo.backend.remote() {
            REMOTE_UPLOADERS
        } else {
            1
        };
        let (free_tx, free_rx) = bounded::<Vec<u8>>(uploaders + 1);
        let sh = shared.clone();
        threads.push(std::thread::spawn(move || {
            packer(pack_rx, upload_tx, free_rx, sh)
        }));
        for _ in 0..uploaders {
            let (rx, free, sh) = (upload_rx.clone(), free_tx.clone(), shared.clone());
            threads.push(std::thread::spawn(move || uploader(rx, free, sh)));
        }
        BlobSaver {
            workers: Workers {
                seal_tx: Some(seal_tx),
                threads,
                shared: shared.clone(),
            },
            shared,
            pending: Mutex::new(HashSet::new()),
        }
    }

    pub fn repo(&self) -> &IndexedRepository {
        &self.shared.repo
    }

    pub fn stats(&self) -> &SaverStats {
        &self.shared.stats
    }

    /// Store a blob unless it is stored already; returns its id.
    pub fn save(&self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = BlobId(self.shared.repo.repo.key.id_of(&data));
        self.save_with_id(kind, id, data)?;
        Ok(id)
    }

    /// Whether a blob is indexed or queued (so a caller can skip reading it).
    pub fn is_known(&self, id: &BlobId) -> bool {
        self.shared.repo.index.contains(id)
            || self.pending.lock().expect("pending lock").contains(id)
    }

    fn save_with_id(&self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        if let Some(e) = self.first_error() {
            return Err(e);
        }
        if self.shared.repo.index.contains(&id)
            || !self.pending.lock().expect("pending lock").insert(id)
        {
            return Ok(());
        }
        let tx = self.workers.seal_tx.as_ref().expect("save after finish");
        tx.send((kind, id, data))
            .map_err(|_| self.first_error().unwrap_or(RepoError::Interrupted))
    }

    /// A copy of the pipeline's first error, same class (the original is returned by
    /// `finish`).
    fn first_error(&self) -> Option<RepoError> {
        let guard = self.shared.error.lock().expect("saver error lock");
        guard.as_ref().map(RepoError::duplicate)
    }

    /// Flush everything, write the final index file; returns what this run added.
    pub fn finish(mut self) -> Result<SaverStats> {
        if !self.workers.join() {
            self.shared
                .fail(RepoError::InvalidInput("a pipeline thread panicked".into()));
        }
        drop(self.workers);
        let shared = Arc::try_unwrap(self.shared)
            .map_err(|_| RepoError::InvalidInput("saver still shared".into()))?;
        if let Some(e) = shared.error.into_inner().expect("saver error lock") {
            return Err(e);
        }
        let log = shared.written.into_inner().expect("index log lock");
        if !log.all.is_empty() {
            let merged = shared.repo.repo.write_index(log.all)?;
            for partial in log.partial_files {
                if !merged.contains(&partial) {
                    shared
                        .repo
                        .repo
                        .backend
                        .remove(FileKind::Index, &partial.to_hex())?;
                }
            }
        }
        Ok(shared.stats)
    }
}

fn seal_worker(rx: Receiver<(BlobKind, BlobId, Vec<u8>)>, tx: Sender<SealedBlob>, sh: Arc<Shared>) {
    let level = sh.repo.repo.config.compression_level;
    for (kind, id, data) in rx {
        if sh.failed() {
            continue;
        }
        let sealed = pack::seal_blob(&sh.repo.repo.key, kind, id, &data, level);
        sh.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        sh.stats
            .bytes_added_raw
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        sh.stats
            .bytes_added_stored
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
        if tx.send(sealed).is_err() {
            return;
        }
    }
}

/// Uploaders for a remote store. Pack buffers (one more than uploaders) circulate between
/// packer and uploaders instead of being allocated per pack: no page faults for fresh
/// 16 MiB buffers and no heap fragmentation (peak memory of a backup is a benchmarked
/// target).
const REMOTE_UPLOADERS: usize = 3;

fn packer(
    rx: Receiver<SealedBlob>,
    tx: Sender<(PackId, PackBytes, Vec<PackBlob>)>,
    free: Receiver<Vec<u8>>,
    sh: Arc<Shared>,
) {
    let target = sh.repo.repo.config.pack_size as usize;
    let key = sh.repo.repo.key.clone();
    let mut data_pack: Option<PackBuilder> = None;
    let mut tree_pack: Option<PackBuilder> = None;
    for blob in rx {
        if sh.failed() {
            continue;
        }
        let slot = if blob.kind == BlobKind::Tree {
            &mut tree_pack
        } else {
            &mut data_pack
        };
        let is_tree = blob.kind == BlobKind::Tree;
        let builder = slot.get_or_insert_with(|| match free.try_recv() {
            // Tree packs fill slowly and stay small: they grow as needed.
            _ if is_tree => PackBuilder::new(1 << 20),
            Ok(buffer) => PackBuilder::with_buffer(buffer),
            Err(_) => PackBuilder::new(target + (2 << 20)),
        });
        builder.add(blob);
        if builder.len() >= target {
            let full = slot.take().expect("just filled");
            if tx.send(full.finish(&key)).is_err() {
                return;
            }
        }
    }
    for b in [data_pack, tree_pack].into_iter().flatten() {
        if !b.is_empty() && !sh.failed() && tx.send(b.finish(&key)).is_err() {
            return;
        }
    }
}

/// Store one pack, and keep a tree pack in the local tree cache (remote repositories).
/// The buffer is handed to the backend (S3 sends it without a copy, a local folder
/// writes from it in place) and goes back to the packer for reuse once released.
fn store_pack(
    sh: &Shared,
    id: &PackId,
    bytes: PackBytes,
    blobs: &[PackBlob],
    free: &Sender<Vec<u8>>,
) -> std::result::Result<(), haven_store::StoreError> {
    let name = id.to_hex();
    let shared = bytes.into_shared();
    let written = sh
        .repo
        .repo
        .backend
        .write_shared(FileKind::Pack, &name, shared.clone());
    if let (Ok(()), Some(disk), Some((start, end))) = (
        &written,
        sh.repo.trees.disk(),
        crate::trees::tree_pack_span(blobs),
    ) {
        disk.store(&name, start, &shared.as_ref()[start as usize..end as usize]);
    }
    if let Some(buffer) = shared.into_vec() {
        let _ = free.try_send(buffer);
    }
    written
}

fn uploader(
    rx: Receiver<(PackId, PackBytes, Vec<PackBlob>)>,
    free: Sender<Vec<u8>>,
    sh: Arc<Shared>,
) {
    for (id, bytes, blobs) in rx {
        if sh.failed() {
            let _ = free.try_send(bytes.into_buffer());
            continue;
        }
        if let Err(e) = store_pack(&sh, &id, bytes, &blobs, &free) {
            sh.fail(e.into());
            continue;
        }
        sh.stats.packs_written.fetch_add(1, Ordering::Relaxed);
        let to_flush = {
            let mut log = sh.written.lock().expect("index log lock");
            let entry = IndexPack { id, blobs };
            log.all.push(entry.clone());
            log.unflushed.push(entry);
            let due = log
                .last_flush
                .is_none_or(|t| t.elapsed() >= PARTIAL_INDEX_INTERVAL);
            if due {
                log.last_flush = Some(Instant::now());
                std::mem::take(&mut log.unflushed)
            } else {
                vec![]
            }
        };
        if !to_flush.is_empty() {
            match sh.repo.repo.write_index(to_flush) {
                Ok(ids) => sh
                    .written
                    .lock()
                    .expect("index log lock")
                    .partial_files
                    .extend(ids),
                Err(e) => sh.fail(e),
            }
        }
    }
}
