//! Fuzz harnesses for every decoder of data Haven reads back from storage.
//!
//! Each harness takes raw fuzz input, runs one decoder and what its callers do next with
//! the result, and panics only when an invariant is broken. It returns `true` when the
//! input was fully valid (decoded, and for packs and blobs also opened), so the checked-in
//! corpus can assert that its `valid-*` seeds still decode.
//!
//! Used in two places, so it depends on nothing but `haven_repo` and `std`:
//! * the cargo-fuzz targets in `fuzz_targets/` (one line each: `harness(data)`);
//! * `crates/haven-repo/tests/fuzz_corpus.rs`, which includes this file with `#[path]`
//!   and runs every harness over every file of `fuzz/corpus/` on stable Rust.
//!
//! Inputs that sit behind the cipher (pack headers, blobs) are sealed here with a fixed
//! key ([`FUZZ_KEY`]) and the right associated data, so the fuzzer reaches the decoder
//! behind AES-GCM; a mode bit feeds the bytes unsealed instead, for the failure paths.

use std::io::Read;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use haven_repo::chunker::{ChunkStream, Chunker, ChunkerParams};
use haven_repo::codec::{self, ObjectKind};
use haven_repo::compress;
use haven_repo::crypto::MasterKey;
use haven_repo::id::{BlobId, FileId};
use haven_repo::index::IndexFile;
use haven_repo::keys::{self, Kdf, KeyMeta, Secret};
use haven_repo::lock::LockInfo;
use haven_repo::pack::{self, BlobKind, PackBlob};
use haven_repo::repository::{self, RepoConfig};
use haven_repo::snapshot::Snapshot;
use haven_repo::tree::Tree;

/// The master key every sealed fuzz input is sealed with.
pub const FUZZ_KEY: [u8; 64] = [7; 64];
/// The id the `key_slot` harness gives every slot file (slot AADs name the slot id).
pub const SLOT_ID: FileId = FileId([0x5a; 32]);
/// The key-file secret the `key_slot` harness tries on every key-file slot.
pub const KEY_FILE_SECRET: &[u8] = b"haven fuzz key file";
/// Associated data of pack headers (`pack.rs`, `HEADER_AAD`).
pub const HEADER_AAD: &[u8] = b"haven/v1/packheader";

/// Chunker sizes the `chunker` harness picks from (first input byte): small, so that a
/// few KiB of input spans several chunks.
pub const CHUNKER_PARAMS: [ChunkerParams; 4] = [
    ChunkerParams {
        min_size: 1024,
        avg_size: 2048,
        max_size: 4096,
    },
    ChunkerParams {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
    },
    ChunkerParams {
        min_size: 2048,
        avg_size: 8192,
        max_size: 32768,
    },
    ChunkerParams {
        min_size: 1024,
        avg_size: 2048,
        max_size: 2049,
    },
];

pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_bytes(&FUZZ_KEY))
}

fn chunkers() -> &'static [Chunker] {
    static CHUNKERS: OnceLock<Vec<Chunker>> = OnceLock::new();
    CHUNKERS.get_or_init(|| {
        let seed = key().derive("haven chunker gear v1");
        CHUNKER_PARAMS
            .iter()
            .map(|p| Chunker::new(*p, &seed))
            .collect()
    })
}

/// Associated data of one blob (`pack.rs`, `blob_aad`).
pub fn blob_aad(kind: BlobKind, id: &BlobId) -> Vec<u8> {
    let mut aad = b"haven/v1/blob/".to_vec();
    aad.push(kind.byte());
    aad.extend_from_slice(&id.0);
    aad
}

/// A harness: runs one decoder on fuzz input; true when the input was fully valid.
pub type Harness = fn(&[u8]) -> bool;

/// Every harness by name; the name is also the fuzz target and the corpus folder.
pub const HARNESSES: &[(&str, Harness)] = &[
    ("codec_tree", codec_tree),
    ("codec_snapshot", codec_snapshot),
    ("codec_index", codec_index),
    ("codec_config", codec_config),
    ("codec_lock", codec_lock),
    ("codec_key_meta", codec_key_meta),
    ("codec_pack_header", codec_pack_header),
    ("key_slot", key_slot),
    ("pack_decode_header", pack_decode_header),
    ("pack_parse", pack_parse),
    ("pack_open_blob", pack_open_blob),
    ("marker", marker),
    ("decompress_chunk", decompress_chunk),
    ("chunker", chunker),
];

// ----- helpers -----

fn u32_le(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decode; on success, check that what was decoded encodes to an object that decodes
/// again and encodes to the same bytes (what haven writes, haven must read).
fn decode_roundtrip<T: Serialize + DeserializeOwned>(kind: ObjectKind, data: &[u8]) -> Option<T> {
    let value: T = codec::decode(kind, data).ok()?;
    let once = codec::encode(kind, &value);
    let again: T = codec::decode(kind, &once).unwrap_or_else(|e| {
        panic!(
            "a decoded {} does not decode after re-encoding: {e}",
            kind.name()
        )
    });
    assert!(
        codec::encode(kind, &again) == once,
        "a decoded {} re-encodes differently",
        kind.name()
    );
    Some(value)
}

// ----- codec objects (plaintext, as found behind the cipher) -----

/// `Tree::decode` of a tree blob (version 1 or 2), re-encoding stable, then lookups by
/// name as restore does.
pub fn codec_tree(data: &[u8]) -> bool {
    let Ok(tree) = Tree::decode(data) else {
        return false;
    };
    let once = tree.encode();
    let again = Tree::decode(&once)
        .unwrap_or_else(|e| panic!("a decoded tree does not decode after re-encoding: {e}"));
    assert!(again == tree, "a decoded tree changes when re-encoded");
    assert!(
        again.encode() == once,
        "a decoded tree re-encodes differently"
    );
    for n in &tree.nodes {
        let _ = tree.find(&n.name);
        let _ = n.name_lossy();
    }
    true
}

/// `codec::decode` of a snapshot file.
pub fn codec_snapshot(data: &[u8]) -> bool {
    decode_roundtrip::<Snapshot>(ObjectKind::Snapshot, data).is_some()
}

/// `codec::decode` of an index file.
pub fn codec_index(data: &[u8]) -> bool {
    decode_roundtrip::<IndexFile>(ObjectKind::Index, data).is_some()
}

/// `codec::decode` of the repository config, then what `Repository::open` does with it:
/// validate the chunker sizes and, when valid, build the chunker and cut some data.
pub fn codec_config(data: &[u8]) -> bool {
    let Some(config) = decode_roundtrip::<RepoConfig>(ObjectKind::Config, data) else {
        return false;
    };
    if config.chunker.validate().is_ok() {
        let c = Chunker::new(config.chunker, &key().derive("haven chunker gear v1"));
        static DATA: OnceLock<Vec<u8>> = OnceLock::new();
        let buf = DATA.get_or_init(|| {
            (0..96u32 << 10)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect()
        });
        let n = c.cut(buf);
        assert!(n >= 1 && n <= buf.len().min(config.chunker.max_size as usize));
    }
    true
}

/// `codec::decode` of a lock file, then the staleness test every lock listing runs.
pub fn codec_lock(data: &[u8]) -> bool {
    let Some(lock) = decode_roundtrip::<LockInfo>(ObjectKind::Lock, data) else {
        return false;
    };
    let _ = lock.is_stale();
    true
}

/// `codec::decode` of key-slot metadata (sealed inside a slot).
pub fn codec_key_meta(data: &[u8]) -> bool {
    decode_roundtrip::<KeyMeta>(ObjectKind::KeyMeta, data).is_some()
}

/// `codec::decode` of a pack header's plaintext.
pub fn codec_pack_header(data: &[u8]) -> bool {
    decode_roundtrip::<Vec<PackBlob>>(ObjectKind::PackHeader, data).is_some()
}

// ----- plaintext files an attacker can write -----

/// `keys::decode_slot` of a key-slot file (plaintext, attacker-controlled), then what
/// opening does: try a key-file secret (never Argon2: too slow to fuzz) and read the
/// slot's sealed metadata.
pub fn key_slot(data: &[u8]) -> bool {
    let Ok(slot) = keys::decode_slot(data) else {
        return false;
    };
    if let Kdf::Argon2id { params, .. } = &slot.kdf {
        assert!(
            params.validate().is_ok(),
            "decode_slot let bad KDF params through"
        );
    }
    let _ = keys::slot_kind(&slot);
    let secret = Secret::KeyFile(KEY_FILE_SECRET.to_vec());
    let opened = keys::try_open(&SLOT_ID, &slot, &secret);
    if opened.is_some() {
        assert!(matches!(slot.kdf, Kdf::KeyFile { .. }));
    }
    let master = opened.unwrap_or_else(|| key().clone());
    let _ = keys::read_meta(&master, &SLOT_ID, &slot);
    true
}

/// `repository::parse_marker` of the format marker (plaintext).
pub fn marker(data: &[u8]) -> bool {
    match repository::parse_marker(data) {
        Some(_) => {
            assert!(data.starts_with(b"haven repository"));
            true
        }
        None => false,
    }
}

// ----- packs and blobs -----

/// `pack::decode_header`. Input: mode (1 byte), pack size (u64 LE), header. Mode bit 0
/// clear: the header bytes are plaintext, sealed here; set: they are fed as sealed bytes.
pub fn pack_decode_header(data: &[u8]) -> bool {
    if data.len() < 9 {
        return false;
    }
    let (mode, size, rest) = (data[0], u64_le(&data[1..9]), &data[9..]);
    let sealed = if mode & 1 == 0 {
        key().seal(HEADER_AAD, rest)
    } else {
        rest.to_vec()
    };
    let Ok(blobs) = pack::decode_header(key(), &sealed, size) else {
        return false;
    };
    let data_end = size.saturating_sub(sealed.len() as u64 + 4);
    for b in &blobs {
        assert!(
            b.offset as u64 + b.length as u64 <= data_end,
            "decode_header accepted a blob beyond the data area"
        );
    }
    true
}

/// `pack::parse_pack` of a whole pack, then `pack::open_blob` of every blob it lists.
/// Input: mode (1 byte), then with mode bit 0 set the pack as stored; clear: data-area
/// length (u16 LE), data area, header plaintext, from which a pack is assembled with the
/// header sealed. Returns true when the pack parses and every blob opens.
pub fn pack_parse(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let pack = if mode & 1 == 0 {
        if rest.len() < 2 {
            return false;
        }
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (area, header) = rest[2..].split_at(n);
        let sealed = key().seal(HEADER_AAD, header);
        let mut pack = area.to_vec();
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        pack
    } else {
        rest.to_vec()
    };
    let Ok(blobs) = pack::parse_pack(key(), &pack) else {
        return false;
    };
    let hlen = u32_le(&pack[pack.len() - 4..]) as usize;
    let data_end = pack.len() - 4 - hlen;
    let mut all_open = true;
    for b in &blobs {
        let (start, end) = (b.offset as usize, b.offset as usize + b.length as usize);
        assert!(
            end <= data_end,
            "parse_pack accepted a blob beyond the data area"
        );
        match pack::open_blob(key(), b, &pack[start..end]) {
            Ok(plain) => assert_eq!(plain.len(), b.raw_length as usize),
            Err(_) => all_open = false,
        }
    }
    all_open
}

/// `pack::open_blob`. Input: flags (1 byte), raw length (u32 LE), payload.
/// Flags: bit 0 tree blob (else data); bit 1 compressed (the payload is zstd data);
/// bit 2 feed the payload as sealed bytes (else it is sealed here with the blob's
/// associated data); bit 3 give the blob a wrong id (else the id of its content).
pub fn pack_open_blob(data: &[u8]) -> bool {
    if data.len() < 5 {
        return false;
    }
    let (flags, raw_length, payload) = (data[0], u32_le(&data[1..5]), &data[5..]);
    let kind = if flags & 1 != 0 {
        BlobKind::Tree
    } else {
        BlobKind::Data
    };
    let compressed = flags & 2 != 0;
    let id = if flags & 8 != 0 {
        BlobId([0xee; 32])
    } else if compressed {
        match compress::decompress_chunk(payload, raw_length as usize) {
            Ok(plain) => BlobId(key().id_of(&plain)),
            Err(_) => BlobId(key().id_of(payload)),
        }
    } else {
        BlobId(key().id_of(payload))
    };
    let sealed = if flags & 4 != 0 {
        payload.to_vec()
    } else {
        key().seal(&blob_aad(kind, &id), payload)
    };
    let blob = PackBlob {
        kind,
        id,
        offset: 0,
        length: sealed.len() as u32,
        raw_length,
        compressed,
    };
    match pack::open_blob(key(), &blob, &sealed) {
        Ok(plain) => {
            assert_eq!(plain.len(), raw_length as usize);
            assert_eq!(
                key().id_of(&plain),
                id.0,
                "open_blob returned content not matching its id"
            );
            true
        }
        Err(_) => false,
    }
}

/// `compress::decompress_chunk`. Input: raw length (u32 LE), zstd data.
pub fn decompress_chunk(data: &[u8]) -> bool {
    if data.len() < 4 {
        return false;
    }
    let raw_len = u32_le(data) as usize;
    match compress::decompress_chunk(&data[4..], raw_len) {
        Ok(out) => {
            assert_eq!(out.len(), raw_len);
            true
        }
        Err(_) => false,
    }
}

// ----- chunker -----

/// A reader returning the data in uneven pieces, with `Interrupted` errors in between and
/// optionally one real error half way.
struct Choppy<'a> {
    data: &'a [u8],
    pos: usize,
    pattern: u8,
    calls: usize,
    fail_at: Option<usize>,
}

impl Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.pattern & 0x80 != 0 && self.calls % 3 == 2 {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        if let Some(at) = self.fail_at {
            if self.pos >= at {
                self.fail_at = None;
                return Err(std::io::Error::other("injected read error"));
            }
        }
        let step = 1 + (self.calls * (self.pattern as usize & 0x3f) * 37) % 1500;
        let n = step.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// All chunks of a reader (and whether it ended without error), streamed through `buf`,
/// which is given back for reuse.
fn all_chunks<R: Read>(c: &Chunker, r: R, buf: Vec<u8>) -> (Vec<Vec<u8>>, bool, Vec<u8>) {
    let mut s = ChunkStream::with_buffer(c, r, buf);
    let mut out = vec![];
    loop {
        match s.next_chunk() {
            Ok(Some(ch)) => out.push(ch),
            Ok(None) => return (out, true, s.into_buffer()),
            Err(_) => return (out, false, s.into_buffer()),
        }
    }
}

/// `ChunkStream` over the input. Input: chunker choice (1 byte, see
/// [`CHUNKER_PARAMS`]), read pattern (1 byte), data. Checks the chunks cover the input
/// exactly, respect the size limits, and do not depend on how the reader splits reads
/// nor on a reused buffer (`ChunkStream::with_buffer`).
pub fn chunker(data: &[u8]) -> bool {
    if data.len() < 2 {
        return false;
    }
    let c = &chunkers()[data[0] as usize % CHUNKER_PARAMS.len()];
    let p = c.params();
    let (pattern, input) = (data[1], &data[2..]);

    // A fresh stream, then one reusing its (dirty) buffer: stale bytes must not leak.
    let (chunks, complete, buf) = all_chunks(c, input, Vec::new());
    assert!(complete, "a slice reader cannot fail");
    assert!(
        chunks.concat() == input,
        "chunks do not cover the input exactly"
    );
    for (i, ch) in chunks.iter().enumerate() {
        assert!(!ch.is_empty(), "empty chunk");
        assert!(ch.len() <= p.max_size as usize, "chunk over max_size");
        if i + 1 < chunks.len() {
            assert!(
                ch.len() > p.min_size as usize,
                "chunk under min_size before the end"
            );
        }
    }

    let fail_at = (pattern & 0x40 != 0).then_some(input.len() / 2);
    let choppy = Choppy {
        data: input,
        pos: 0,
        pattern,
        calls: 0,
        fail_at,
    };
    let (chopped, complete, _) = all_chunks(c, choppy, buf);
    if complete {
        assert!(chopped == chunks, "chunk boundaries depend on read sizes");
    } else {
        assert!(fail_at.is_some(), "stream failed without a read error");
        assert!(chopped.len() <= chunks.len() && chopped[..] == chunks[..chopped.len()]);
    }
    true
}
