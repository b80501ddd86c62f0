//! The index: which pack holds each blob.
//!
//! Stored as index files (`index/<id>`), each listing some packs and their blobs.
//! In memory, [`MasterIndex`] keeps one sorted vector of 48-byte entries (32-byte id,
//! pack number, offset, stored length, raw length with two flag bits) and one table of
//! pack ids: 48 bytes per stored blob, no per-entry allocation, lookups by binary search.
//!
//! A blob listed in several packs (duplicates) has one *primary* entry, the copy in the
//! pack with the smallest id, so every load of the same files reads the same way; the
//! other copies are kept aside ([`MasterIndex::copies`]) for reads that fall back, for
//! `check`, and for prune, which keeps only a copy it has verified.
//!
//! [`IndexedRepository`] = opened [`Repository`] + loaded [`MasterIndex`]: the type the
//! verbs work on. Loading skips index files that fail to decrypt (reporting them), so a
//! damaged index costs only the blobs it alone lists; `check` reports it.
//!
//! Packs enter an index only from their writer or after [`Repository::read_pack_verified`]
//! re-hashed them against their name (adoption here, `repair index` in [`crate::repair`]):
//! a pack header's seal does not name its pack, so a header alone proves nothing.

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
    /// One entry per blob id: the primary copy.
    entries: Vec<Entry>,
    /// Further copies of blobs in other packs, sorted by blob id then pack id (rare:
    /// concurrent backups, interrupted prunes).
    duplicates: Vec<Entry>,
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
        Self::arranged(packs, entries, ids, damaged)
    }

    /// Sort `entries` into one primary entry per blob id and the duplicates.
    fn arranged(
        packs: Vec<PackId>,
        mut entries: Vec<Entry>,
        files: Vec<IndexId>,
        damaged: Vec<(String, String)>,
    ) -> Self {
        // Deterministic order: by blob id, then by pack id; a pack listed twice (partial
        // and final index of one backup) is one copy.
        entries.sort_unstable_by(|a, b| {
            a.id.cmp(&b.id)
                .then_with(|| packs[a.pack as usize].cmp(&packs[b.pack as usize]))
        });
        entries.dedup_by(|a, b| a.id == b.id && a.pack == b.pack);
        let duplicates: Vec<Entry> = entries
            .windows(2)
            .filter(|w| w[0].id == w[1].id)
            .map(|w| w[1])
            .collect();
        entries.dedup_by(|a, b| a.id == b.id);
        entries.shrink_to_fit();
        MasterIndex {
            packs,
            entries,
            duplicates,
            files,
            damaged,
        }
    }

    /// This index without the entries of `gone` (packs lost or damaged), so that a
    /// backup stores their blobs again instead of deduplicating against them
    /// ([`pack_ids`](Self::pack_ids) still names them).
    pub fn without_packs(&self, gone: &HashSet<PackId>) -> MasterIndex {
        let entries = self
            .entries
            .iter()
            .chain(&self.duplicates)
            .filter(|e| !gone.contains(&self.packs[e.pack as usize]))
            .copied()
            .collect();
        Self::arranged(
            self.packs.clone(),
            entries,
            self.files.clone(),
            self.damaged.clone(),
        )
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

    /// The primary copy of a blob (see the module doc).
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.entry(id).map(|e| self.location(e))
    }

    /// Every indexed copy of a blob: the primary first, then the others by pack id.
    pub fn copies(&self, id: &BlobId) -> impl Iterator<Item = BlobLocation> + '_ {
        let id = id.0;
        let start = self.duplicates.partition_point(|e| e.id < id);
        let others = self.duplicates[start..]
            .iter()
            .take_while(move |e| e.id == id);
        self.entry(&BlobId(id))
            .into_iter()
            .chain(others)
            .map(|e| self.location(e))
    }

    /// Blobs indexed in more than one pack, each once.
    pub fn duplicated(&self) -> Vec<BlobId> {
        let mut ids: Vec<BlobId> = self.duplicates.iter().map(|e| BlobId(e.id)).collect();
        ids.dedup();
        ids
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

    /// The blobs each pack holds by the index, every copy included: a pack whose
    /// blobs all have their primary copy elsewhere is still listed.
    pub fn by_pack(&self) -> HashMap<PackId, Vec<PackBlob>> {
        let mut m: HashMap<PackId, Vec<PackBlob>> = HashMap::new();
        for e in self.entries.iter().chain(&self.duplicates) {
            let loc = self.location(e);
            m.entry(loc.pack).or_default().push(loc.blob);
        }
        m
    }

    /// Every pack some loaded index file names.
    pub fn pack_ids(&self) -> &[PackId] {
        &self.packs
    }

    /// Every blob's primary location (one per blob id).
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

/// A whole pack read by [`Repository::read_pack_verified`].
#[derive(Debug)]
pub enum PackContent {
    /// The pack matches its name and its header decodes: these are its blobs.
    Verified(Vec<PackBlob>),
    /// The pack does not match its name, or its header does not open.
    Damaged { data: Vec<u8>, why: String },
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

    /// Read a whole pack and verify it against its name (the keyed hash of its bytes)
    /// before trusting its header: a header's seal does not name its pack, so a copied
    /// header in front of other bytes opens as well. Storage errors are errors; damage
    /// is [`PackContent::Damaged`], with the bytes for salvaging blobs one by one.
    pub fn read_pack_verified(&self, id: &PackId) -> Result<PackContent> {
        let data = self.backend.read(FileKind::Pack, &id.to_hex())?;
        let header = pack::parse_pack(&self.key, &data);
        if self.key.id_of(&data) != id.0 {
            let why = match header {
                Ok(_) => "its content does not match its name".to_string(),
                Err(e) => format!("its content does not match its name, and {e}"),
            };
            return Ok(PackContent::Damaged { data, why });
        }
        Ok(match header {
            Ok(blobs) => PackContent::Verified(blobs),
            Err(why) => PackContent::Damaged { data, why },
        })
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

    /// The same repository reading through an index without the packs in `gone`
    /// ([`MasterIndex::without_packs`]).
    pub fn without_packs(&self, gone: &HashSet<PackId>) -> IndexedRepository {
        IndexedRepository {
            repo: self.repo.clone(),
            index: Arc::new(self.index.without_packs(gone)),
            trees: Arc::new(self.trees.renewed()),
        }
    }

    /// Read, decrypt and verify one blob; when its primary copy is damaged or missing,
    /// the other indexed copies are tried (the first error is returned if none opens).
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let mut first_error = None;
        for loc in self.index.copies(id) {
            match self.read_blob_at(&loc) {
                Ok(plain) => return Ok(plain),
                Err(e @ RepoError::Corrupt { .. }) => _ = first_error.get_or_insert(e),
                Err(RepoError::Store(e)) if e.is_not_found() => {
                    _ = first_error.get_or_insert(RepoError::Store(e))
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.unwrap_or_else(|| {
            RepoError::corrupt(
                format!("blob {}", id.short()),
                "it is not in the index (missing pack or index file)",
            )
        }))
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
    /// wrote its index), read each whole and verify it against its name, and write an
    /// index for those that match so the next backup reuses what was uploaded. Packs
    /// that do not match (damaged, or planted with a copied header) or cannot be read
    /// are left for `check` to note and `prune` to delete.
    pub fn adopt_unindexed_packs(&mut self) -> Result<usize> {
        let known: HashSet<PackId> = self.index.pack_ids().iter().copied().collect();
        let mut unknown: Vec<PackId> = self
            .repo
            .stored_packs()?
            .into_keys()
            .filter(|id| !known.contains(id))
            .collect();
        unknown.sort();
        let read = crate::parallel::map(self.repo.parallel_requests(), &unknown, |id| {
            self.repo.read_pack_verified(id)
        });
        let adopted: Vec<IndexPack> = unknown
            .into_iter()
            .zip(read)
            .filter_map(|(id, content)| match content {
                Ok(PackContent::Verified(blobs)) => Some(IndexPack { id, blobs }),
                _ => None,
            })
            .collect();
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
