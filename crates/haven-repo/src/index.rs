//! The index: which pack holds each blob.
//!
//! Stored as index files (`index/<id>`), each listing some packs and their blobs.
//! In memory, [`MasterIndex`] keeps one sorted vector of 48-byte entries (32-byte id,
//! pack number, offset, stored length, raw length with two flag bits) and one table of
//! pack ids: 48 bytes per stored blob, no per-entry allocation, lookups by binary search.
//!
//! [`IndexedRepository`] = opened [`Repository`] + loaded [`MasterIndex`]: the type the
//! verbs work on. Loading skips index files that fail to decrypt (reporting them), so a
//! damaged index costs only the blobs it alone lists; `check` reports it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use haven_store::FileKind;

use crate::codec::ObjectKind;
use crate::error::{RepoError, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::pack::{self, BlobKind, PackBlob};
use crate::repository::Repository;
use crate::trees::TreeCache;

/// One pack's entry in an index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    pub blobs: Vec<PackBlob>,
}

/// The stored form of an index file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

/// Index files are split so that none lists more blobs than this (about 3 MiB encoded).
pub const MAX_BLOBS_PER_INDEX_FILE: usize = 65_536;

const FLAG_TREE: u32 = 1 << 31;
const FLAG_COMPRESSED: u32 = 1 << 30;
const RAW_MASK: u32 = FLAG_COMPRESSED - 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    length: u32,
    raw_and_flags: u32,
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub blob: PackBlob,
}

/// All index files merged; see the module doc.
#[derive(Debug, Default)]
pub struct MasterIndex {
    packs: Vec<PackId>,
    entries: Vec<Entry>,
    /// Index files that were loaded.
    pub files: Vec<IndexId>,
    /// Index files that could not be read, with the reason.
    pub damaged: Vec<(String, String)>,
}

impl MasterIndex {
    /// Bytes of memory per indexed blob.
    pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Entry>();

    fn from_files(files: Vec<(IndexId, IndexFile)>, damaged: Vec<(String, String)>) -> Self {
        let mut pack_numbers: HashMap<PackId, u32> = HashMap::new();
        let mut packs = vec![];
        let mut entries = vec![];
        let mut ids = vec![];
        for (fid, file) in files {
            ids.push(fid);
            for p in file.packs {
                let n = *pack_numbers.entry(p.id).or_insert_with(|| {
                    packs.push(p.id);
                    (packs.len() - 1) as u32
                });
                for b in p.blobs {
                    let mut flags = b.raw_length & RAW_MASK;
                    if b.kind == BlobKind::Tree {
                        flags |= FLAG_TREE;
                    }
                    if b.compressed {
                        flags |= FLAG_COMPRESSED;
                    }
                    entries.push(Entry {
                        id: b.id.0,
                        pack: n,
                        offset: b.offset,
                        length: b.length,
                        raw_and_flags: flags,
                    });
                }
            }
        }
        entries.sort_unstable_by_key(|e| e.id);
        entries.dedup_by(|a, b| a.id == b.id);
        entries.shrink_to_fit();
        MasterIndex {
            packs,
            entries,
            files: ids,
            damaged,
        }
    }

    fn entry(&self, id: &BlobId) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.id.cmp(&id.0))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.entry(id).is_some()
    }

    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.entry(id).map(|e| self.location(e))
    }

    fn location(&self, e: &Entry) -> BlobLocation {
        BlobLocation {
            pack: self.packs[e.pack as usize],
            blob: PackBlob {
                kind: if e.raw_and_flags & FLAG_TREE != 0 {
                    BlobKind::Tree
                } else {
                    BlobKind::Data
                },
                id: BlobId(e.id),
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_and_flags & RAW_MASK,
                compressed: e.raw_and_flags & FLAG_COMPRESSED != 0,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The blobs of each indexed pack (one entry per blob id, as loaded).
    pub fn by_pack(&self) -> HashMap<PackId, Vec<PackBlob>> {
        let mut m: HashMap<PackId, Vec<PackBlob>> = HashMap::new();
        for loc in self.iter() {
            m.entry(loc.pack).or_default().push(loc.blob);
        }
        m
    }

    /// Every indexed pack id.
    pub fn pack_ids(&self) -> &[PackId] {
        &self.packs
    }

    /// Every blob location (one per blob id).
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.entries.iter().map(|e| self.location(e))
    }
}

/// Read every index file of a repository.
fn load_index_files(repo: &Repository) -> Result<MasterIndex> {
    let mut files = vec![];
    let mut damaged = vec![];
    let listed: Vec<(IndexId, String)> = repo
        .backend
        .list(FileKind::Index)?
        .into_iter()
        .filter_map(|info| Some((IndexId::from_hex(&info.name)?, info.name)))
        .collect();
    let loaded = crate::parallel::map(repo.parallel_requests(), &listed, |(_, name)| {
        repo.load_object::<IndexFile>(FileKind::Index, ObjectKind::Index, name)
    });
    for ((id, name), result) in listed.into_iter().zip(loaded) {
        match result {
            Ok(f) => files.push((id, f)),
            // Removed by a concurrent backup after it wrote a merged index: skip it.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(RepoError::Corrupt { detail, .. }) => damaged.push((name, detail)),
            Err(e) => return Err(e),
        }
    }
    Ok(MasterIndex::from_files(files, damaged))
}

/// A repository with its index loaded: what backup, restore, check and prune use.
#[derive(Debug, Clone)]
pub struct IndexedRepository {
    pub repo: Repository,
    pub index: Arc<MasterIndex>,
    /// Tree blobs, read a pack at a time (see [`crate::trees`]).
    pub trees: Arc<TreeCache>,
}

impl Repository {
    /// Load the index.
    pub fn indexed(self) -> Result<IndexedRepository> {
        let index = load_index_files(&self)?;
        crate::debug::phase("open: index loaded");
        let trees = Arc::new(TreeCache::new(&self));
        Ok(IndexedRepository {
            repo: self,
            index: Arc::new(index),
            trees,
        })
    }

    /// Every pack file in storage, by id, with its size (files not named by an id are
    /// not packs and are left out).
    pub fn stored_packs(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|f| Some((PackId::from_hex(&f.name)?, f.size)))
            .collect())
    }

    /// Read and decode the header of a stored pack (two ranged reads).
    pub fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackBlob>> {
        let name = id.to_hex();
        let what = || format!("pack {}", id.short());
        if size < 4 {
            return Err(RepoError::corrupt(
                what(),
                "too short to hold a header (truncated)",
            ));
        }
        let trailer = self
            .backend
            .read_range(FileKind::Pack, &name, size - 4, 4)?;
        let hlen = pack::header_length(&trailer).unwrap_or(0) as u64;
        if hlen + 4 > size {
            return Err(RepoError::corrupt(
                what(),
                "its header length points outside the pack (truncated?)",
            ));
        }
        let sealed = self
            .backend
            .read_range(FileKind::Pack, &name, size - 4 - hlen, hlen)?;
        pack::decode_header(&self.key, &sealed, size).map_err(|e| RepoError::corrupt(what(), e))
    }

    /// Write index files for `packs`, at most [`MAX_BLOBS_PER_INDEX_FILE`] blobs each
    /// (so every file stays far below the decoder's size limit); returns their ids.
    pub fn write_index(&self, packs: Vec<IndexPack>) -> Result<Vec<IndexId>> {
        let mut ids = vec![];
        let mut batch = vec![];
        let mut blobs = 0;
        for p in packs {
            if blobs + p.blobs.len() > MAX_BLOBS_PER_INDEX_FILE && !batch.is_empty() {
                ids.push(self.write_index_file(std::mem::take(&mut batch))?);
                blobs = 0;
            }
            blobs += p.blobs.len();
            batch.push(p);
        }
        if !batch.is_empty() {
            ids.push(self.write_index_file(batch)?);
        }
        Ok(ids)
    }

    fn write_index_file(&self, packs: Vec<IndexPack>) -> Result<IndexId> {
        let file = IndexFile { packs };
        Ok(IndexId(self.save_object(
            FileKind::Index,
            ObjectKind::Index,
            &file,
        )?))
    }
}

impl IndexedRepository {
    /// The same repository reading trees only from storage (never from the local disk
    /// cache): what `check` judges must be what is stored.
    pub fn without_disk_cache(&self) -> IndexedRepository {
        IndexedRepository {
            trees: Arc::new(TreeCache::memory_only()),
            ..self.clone()
        }
    }

    /// Threads that read packs at once: one for a local folder (cold parallel reads of
    /// several packs are slower there than one sequential stream, ADR 0008), several
    /// for a remote store, where each request waits on a round trip and requests overlap.
    pub fn pack_readers(&self) -> usize {
        self.repo.parallel_requests()
    }

    /// Read, decrypt and verify one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| {
            RepoError::corrupt(
                format!("blob {}", id.short()),
                "it is not in the index (missing pack or index file)",
            )
        })?;
        self.read_blob_at(&loc)
    }

    pub fn read_blob_at(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        if loc.blob.kind == BlobKind::Tree {
            let open = |sealed: &[u8]| pack::open_blob(&self.repo.key, &loc.blob, sealed).ok();
            if let Some(plain) = self.trees.sealed(&self.repo, &self.index, loc, open) {
                return Ok(plain);
            }
        }
        let sealed = self.repo.backend.read_range(
            FileKind::Pack,
            &loc.pack.to_hex(),
            loc.blob.offset as u64,
            loc.blob.length as u64,
        )?;
        self.open_blob_at(loc, &sealed)
    }

    /// Decrypt and verify the sealed bytes of the blob at `loc`; damage is reported as
    /// `Corrupt` naming the blob and its pack.
    pub fn open_blob_at(&self, loc: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        pack::open_blob(&self.repo.key, &loc.blob, sealed).map_err(|e| {
            RepoError::corrupt(
                format!("blob {} in pack {}", loc.blob.id.short(), loc.pack.short()),
                e,
            )
        })
    }

    /// Find packs that no index lists (left by a backup that was killed before it
    /// wrote its index), read their headers, and write an index for them so the next
    /// backup reuses what was uploaded. Unreadable packs are left for `check`/`prune`.
    pub fn adopt_unindexed_packs(&mut self) -> Result<usize> {
        let known: HashSet<PackId> = self.index.pack_ids().iter().copied().collect();
        let mut adopted = vec![];
        for (id, size) in self.repo.stored_packs()? {
            if known.contains(&id) {
                continue;
            }
            if let Ok(blobs) = self.repo.read_pack_header(&id, size) {
                adopted.push(IndexPack { id, blobs });
            }
        }
        crate::debug::phase("backup: unindexed packs looked for");
        let n = adopted.len();
        if n > 0 {
            self.repo.write_index(adopted)?;
            self.index = Arc::new(load_index_files(&self.repo)?);
            self.trees = Arc::new(self.trees.renewed());
        }
        Ok(n)
    }
}
