//! The revision of an etcd snapshot, read from the snapshot (a bbolt database) while it
//! streams into the repository, without a temporary file.
//!
//! Why: etcd 3.4's snapshot answer carries no revision, and the cluster keeps changing
//! while the snapshot streams, so the revision asked for before or after is not the
//! snapshot's. The fingerprint must describe exactly the snapshotted state, and a member
//! restored from the snapshot starts at exactly this revision: the main revision of the
//! last key of the `key` bucket, or the `finishedCompactRev` of the `meta` bucket when
//! that is higher (a compaction removed the newest tombstones), the same rule etcd applies
//! when it opens the database.
//!
//! How: the stream is the database file as of one read transaction (bbolt's `Tx.WriteTo`):
//! two meta pages, then every page by number. Pages reachable from the meta page are
//! consistent; free pages may hold anything. So every page that looks like a branch or
//! leaf page (its header names its own page number) is summarised in a few bytes as it
//! passes — a branch by its last child and the children it would search for the three
//! names Haven looks up, a leaf by its last key and any of those names it holds — and at
//! the end the summaries are walked from the meta page's root: root bucket -> `key`
//! bucket -> rightmost leaf, and root bucket -> `meta` bucket -> `finishedCompactRev`.
//! Stale free pages are summarised too but never reached. Memory: a few dozen bytes per
//! page (about 10 MB per GB of database).
//!
//! Limits: bbolt's file format version 2 on a little-endian host (etcd's own layout on
//! amd64 and arm64); pages spanning more than 256 MiB (one value that large) are not read.

use std::collections::HashMap;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Page header and element sizes.
const HEADER: usize = 16;
const ELEMENT: usize = 16;
/// The meta page's fields end here (magic at 16 ... checksum at 72).
const META_END: usize = 80;
const MAX_SPAN: usize = 256 << 20;

/// What is looked up by name: the two buckets, and the key in `meta`.
const KEY: usize = 0;
const META: usize = 1;
const COMPACTED: usize = 2;
const NAMES: [&[u8]; 3] = [b"key", b"meta", b"finishedCompactRev"];

enum Page {
    Branch { last: u64, lookup: [u64; 3] },
    Leaf(Leaf),
}

#[derive(Default)]
struct Leaf {
    /// The main revision of the last key, if the last key is a revision (`key` bucket).
    last: Last,
    /// Elements named like one of [`NAMES`] (index, value).
    named: Vec<(usize, Vec<u8>)>,
}

#[derive(Default, Clone, Copy)]
enum Last {
    #[default]
    Empty,
    Revision(u64),
    Other,
}

/// Fed the database bytes in order; [`RevisionFinder::finish`] names the revision.
pub struct RevisionFinder {
    page_size: usize,
    /// The block being filled (the first [`META_END`] bytes until the page size is known).
    block: Vec<u8>,
    /// Page number of `block`.
    pgid: u64,
    root: u64,
    /// Pages longer than one block, being collected: (page number, bytes, full length).
    spans: Vec<(u64, Vec<u8>, usize)>,
    pages: HashMap<u64, Page>,
    error: Option<String>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
/// `len` bytes at `at`, if they are inside `b`.
fn slice(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

/// The main part of an etcd revision key (8 bytes big-endian, `_`, 8 bytes, maybe `t`).
fn main_revision(key: &[u8]) -> Option<u64> {
    matches!(key.len(), 17 | 18)
        .then_some(())
        .filter(|()| key[8] == b'_')
        .map(|()| u64::from_be_bytes(key[..8].try_into().unwrap()))
}

impl RevisionFinder {
    pub fn new() -> Self {
        RevisionFinder {
            page_size: 0,
            block: Vec::new(),
            pgid: 0,
            root: 0,
            spans: Vec::new(),
            pages: HashMap::new(),
            error: None,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            let block = if self.page_size == 0 {
                META_END
            } else {
                self.page_size
            };
            let take = (block - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() < block {
                continue;
            }
            if self.page_size == 0 {
                self.read_meta();
                continue;
            }
            let full = std::mem::take(&mut self.block);
            self.block_done(&full);
            self.block = full;
            self.block.clear();
            self.pgid += 1;
        }
    }

    fn read_meta(&mut self) {
        let b = &self.block;
        let page_size = u32_at(b, 24) as usize;
        if u32_at(b, 16) != MAGIC || u32_at(b, 20) != VERSION {
            self.error = Some("it does not start with a bbolt meta page (version 2)".into());
        } else if !page_size.is_power_of_two() || !(1024..=1 << 20).contains(&page_size) {
            self.error = Some(format!("its page size {page_size} is implausible"));
        } else {
            self.page_size = page_size;
            self.root = u64_at(b, 32);
        }
    }

    fn block_done(&mut self, block: &[u8]) {
        let mut done = vec![];
        for (i, (_, bytes, len)) in self.spans.iter_mut().enumerate() {
            let take = (*len - bytes.len()).min(block.len());
            bytes.extend_from_slice(&block[..take]);
            if bytes.len() == *len {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let (pgid, bytes, _) = self.spans.swap_remove(i);
            self.summarise(pgid, &bytes);
        }
        let flags = u16_at(block, 8);
        if self.pgid < 2 || u64_at(block, 0) != self.pgid || !matches!(flags, BRANCH | LEAF) {
            return;
        }
        let len = (u32_at(block, 12) as usize + 1).saturating_mul(self.page_size);
        if len == self.page_size {
            self.summarise(self.pgid, block);
        } else if len <= MAX_SPAN {
            self.spans.push((self.pgid, block.to_vec(), len));
        }
    }

    /// Summarise a branch or leaf page; a page whose elements point outside it is garbage
    /// (a stale free page) and skipped.
    fn summarise(&mut self, pgid: u64, page: &[u8]) {
        let summary = if u16_at(page, 8) == BRANCH {
            branch(page)
        } else {
            leaf(page).map(Page::Leaf)
        };
        if let Some(summary) = summary {
            self.pages.insert(pgid, summary);
        }
    }

    /// The revision a member restored from the database starts at.
    pub fn finish(self) -> Result<u64, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.page_size == 0 || !self.block.is_empty() {
            return Err("the database does not end at a page boundary".into());
        }
        let key = self
            .find(self.root, KEY)?
            .ok_or("the database has no `key` bucket")?;
        let last = match self.last_key(&key)? {
            Last::Empty => 0,
            Last::Revision(rev) => rev,
            Last::Other => return Err("the last key of the `key` bucket is not a revision".into()),
        };
        let compacted = match self.find(self.root, META)? {
            Some(meta) => match self.in_bucket(&meta, COMPACTED)? {
                Some(rev) if rev.len() >= 8 => u64::from_be_bytes(rev[..8].try_into().unwrap()),
                Some(_) => return Err("`finishedCompactRev` is not a revision".into()),
                None => 0,
            },
            None => 0,
        };
        Ok(last.max(compacted).max(1))
    }

    fn page(&self, pgid: u64) -> Result<&Page, String> {
        self.pages
            .get(&pgid)
            .ok_or_else(|| format!("page {pgid} of the database is missing or unreadable"))
    }

    /// The value named `NAMES[name]` in the tree rooted at `pgid`.
    fn find(&self, mut pgid: u64, name: usize) -> Result<Option<Vec<u8>>, String> {
        for _ in 0..64 {
            match self.page(pgid)? {
                Page::Branch { lookup, .. } => pgid = lookup[name],
                Page::Leaf(leaf) => return Ok(named(leaf, name)),
            }
        }
        Err("the database's tree is deeper than 64 levels".into())
    }

    /// The value named `NAMES[name]` in a bucket (`bucket` is its value in the root).
    fn in_bucket(&self, bucket: &[u8], name: usize) -> Result<Option<Vec<u8>>, String> {
        match bucket_root(bucket)? {
            0 => Ok(named(&inline(bucket)?, name)),
            root => self.find(root, name),
        }
    }

    /// The last key of a bucket.
    fn last_key(&self, bucket: &[u8]) -> Result<Last, String> {
        let mut pgid = match bucket_root(bucket)? {
            0 => return Ok(inline(bucket)?.last),
            root => root,
        };
        for _ in 0..64 {
            match self.page(pgid)? {
                Page::Branch { last, .. } => pgid = *last,
                Page::Leaf(leaf) => return Ok(leaf.last),
            }
        }
        Err("the database's tree is deeper than 64 levels".into())
    }
}

fn named(leaf: &Leaf, name: usize) -> Option<Vec<u8>> {
    leaf.named
        .iter()
        .find(|(i, _)| *i == name)
        .map(|(_, v)| v.clone())
}

/// A bucket value starts with its root page number; 0 means the bucket is stored inline,
/// as a leaf page following the 16-byte bucket header.
fn bucket_root(bucket: &[u8]) -> Result<u64, String> {
    if bucket.len() < 16 {
        return Err("a bucket header is truncated".into());
    }
    Ok(u64_at(bucket, 0))
}

fn inline(bucket: &[u8]) -> Result<Leaf, String> {
    leaf(&bucket[16..]).ok_or_else(|| "an inline bucket is unreadable".to_string())
}

fn branch(page: &[u8]) -> Option<Page> {
    let count = usize::from(u16_at(page, 10));
    let mut lookup = [0u64; 3];
    let mut last = None;
    for i in 0..count {
        let at = HEADER + i * ELEMENT;
        let element = slice(page, at, ELEMENT)?;
        let pos = u32_at(element, 0) as usize;
        let key = slice(page, at + pos, u32_at(element, 4) as usize)?;
        let child = u64_at(element, 8);
        // bbolt descends into the last child whose first key is <= the key sought (the
        // first child when the key sorts before all).
        for (name, found) in NAMES.iter().zip(lookup.iter_mut()) {
            if i == 0 || key <= *name {
                *found = child;
            }
        }
        last = Some(child);
    }
    last.map(|last| Page::Branch { last, lookup })
}

fn leaf(page: &[u8]) -> Option<Leaf> {
    if page.len() < HEADER {
        return None;
    }
    let count = usize::from(u16_at(page, 10));
    let mut out = Leaf::default();
    for i in 0..count {
        let at = HEADER + i * ELEMENT;
        let element = slice(page, at, ELEMENT)?;
        let is_bucket = u32_at(element, 0) & BUCKET_LEAF != 0;
        let (pos, ksize) = (u32_at(element, 4) as usize, u32_at(element, 8) as usize);
        let key = slice(page, at + pos, ksize)?;
        let value = slice(page, at + pos + ksize, u32_at(element, 12) as usize)?;
        for (index, name) in NAMES.iter().enumerate() {
            if key == *name && is_bucket == (index != COMPACTED) {
                out.named.push((index, value.to_vec()));
            }
        }
        if i + 1 == count {
            out.last = main_revision(key).map_or(Last::Other, Last::Revision);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf page with the given (flags, key, value) elements.
    fn leaf_page(pgid: u64, size: usize, elements: &[(u32, &[u8], &[u8])]) -> Vec<u8> {
        let mut page = vec![0u8; HEADER + elements.len() * ELEMENT];
        page[..8].copy_from_slice(&pgid.to_le_bytes());
        page[8..10].copy_from_slice(&LEAF.to_le_bytes());
        page[10..12].copy_from_slice(&(elements.len() as u16).to_le_bytes());
        for (i, (flags, key, value)) in elements.iter().enumerate() {
            let at = HEADER + i * ELEMENT;
            let pos = (page.len() - at) as u32;
            page[at..at + 4].copy_from_slice(&flags.to_le_bytes());
            page[at + 4..at + 8].copy_from_slice(&pos.to_le_bytes());
            page[at + 8..at + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
            page[at + 12..at + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
            page.extend_from_slice(key);
            page.extend_from_slice(value);
        }
        if size > 0 {
            page.resize(size, 0);
        }
        page
    }

    fn rev(main: u64) -> Vec<u8> {
        let mut key = main.to_be_bytes().to_vec();
        key.push(b'_');
        key.extend_from_slice(&0u64.to_be_bytes());
        key
    }

    fn bucket(root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
        let mut value = root.to_le_bytes().to_vec();
        value.extend_from_slice(&[0; 8]);
        value.extend(inline.unwrap_or_default());
        value
    }

    /// A database of 4 KiB pages: meta pages, a root leaf (page 2) holding the `key`
    /// bucket (page 3, or inline) and an inline `meta` bucket.
    fn database(keys: &[u64], compacted: Option<u64>, key_inline: bool) -> Vec<u8> {
        const PS: usize = 4096;
        let mut meta = vec![0u8; PS];
        meta[8..10].copy_from_slice(&4u16.to_le_bytes());
        meta[16..20].copy_from_slice(&MAGIC.to_le_bytes());
        meta[20..24].copy_from_slice(&VERSION.to_le_bytes());
        meta[24..28].copy_from_slice(&(PS as u32).to_le_bytes());
        meta[32..40].copy_from_slice(&2u64.to_le_bytes());
        let revs: Vec<Vec<u8>> = keys.iter().map(|&k| rev(k)).collect();
        let elements: Vec<(u32, &[u8], &[u8])> =
            revs.iter().map(|k| (0, k.as_slice(), &b"kv"[..])).collect();
        let key_bucket = if key_inline {
            bucket(0, Some(leaf_page(0, 0, &elements)))
        } else {
            bucket(3, None)
        };
        let compact = compacted.map(rev);
        let meta_elements: Vec<(u32, &[u8], &[u8])> = compact
            .iter()
            .map(|c| (0, NAMES[COMPACTED], c.as_slice()))
            .collect();
        let meta_bucket = bucket(0, Some(leaf_page(0, 0, &meta_elements)));
        let root = leaf_page(
            2,
            PS,
            &[
                (BUCKET_LEAF, b"key", &key_bucket),
                (BUCKET_LEAF, b"meta", &meta_bucket),
            ],
        );
        let mut db = [meta.clone(), meta, root].concat();
        if !key_inline {
            db.extend(leaf_page(3, PS, &elements));
        }
        db
    }

    fn revision(db: &[u8], piece: usize) -> Result<u64, String> {
        let mut finder = RevisionFinder::new();
        for chunk in db.chunks(piece) {
            finder.feed(chunk);
        }
        finder.finish()
    }

    #[test]
    fn the_revision_is_the_last_key_or_the_compaction_whichever_is_higher() {
        for piece in [7, 4096, 100_000] {
            assert_eq!(revision(&database(&[2, 5, 9], None, false), piece), Ok(9));
            assert_eq!(
                revision(&database(&[2, 5, 9], Some(12), false), piece),
                Ok(12)
            );
            assert_eq!(revision(&database(&[2, 5, 9], Some(4), true), piece), Ok(9));
            assert_eq!(revision(&database(&[], None, true), piece), Ok(1));
        }
    }

    #[test]
    fn damaged_databases_are_reported() {
        let db = database(&[3], None, false);
        assert!(revision(&db[..db.len() - 1], 4096).is_err());
        assert!(revision(&db[8192..], 4096)
            .unwrap_err()
            .contains("meta page"));
        let mut missing = db.clone();
        missing[3 * 4096] = 9; // page 3 no longer names itself
        assert!(revision(&missing, 4096).unwrap_err().contains("page 3"));
    }
}
