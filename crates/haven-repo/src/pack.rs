//! Pack files: many encrypted blobs followed by their encrypted header.
//!
//! Layout: `blob_0 || blob_1 || ... || sealed header || header length (u32 LE)`.
//! Each blob is sealed on its own with its kind and id as associated data, so a blob
//! can be read with one ranged read and can be copied between packs (prune) without
//! re-encryption. The header lists every blob (kind, id, offset, lengths), which makes
//! each pack self-describing: an index can always be rebuilt from the packs.
//! A pack's name is the keyed hash of all its bytes; `check --read-data` re-hashes it.

use serde::{Deserialize, Serialize};

use crate::codec::{self, ObjectKind};
use crate::compress;
use crate::crypto::MasterKey;
use crate::id::{BlobId, PackId};

/// Data blobs hold file content; tree blobs hold encoded directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// One blob's place in a pack, as listed in pack headers and index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackBlob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Length of the plaintext after decompression.
    pub raw_length: u32,
    pub compressed: bool,
}

/// A blob compressed and sealed, ready to be appended to a pack.
#[derive(Debug)]
pub struct SealedBlob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub raw_length: u32,
    pub compressed: bool,
    pub bytes: Vec<u8>,
}

fn blob_aad(kind: BlobKind, id: &BlobId) -> Vec<u8> {
    let mut aad = b"haven/v1/blob/".to_vec();
    aad.push(kind.byte());
    aad.extend_from_slice(&id.0);
    aad
}

const HEADER_AAD: &[u8] = b"haven/v1/packheader";

/// Compress (when it pays) and seal one blob.
pub fn seal_blob(
    key: &MasterKey,
    kind: BlobKind,
    id: BlobId,
    plain: &[u8],
    level: i32,
) -> SealedBlob {
    let compressed = compress::compress_chunk(plain, level);
    let bytes = key.seal(&blob_aad(kind, &id), compressed.as_deref().unwrap_or(plain));
    SealedBlob {
        kind,
        id,
        raw_length: plain.len() as u32,
        compressed: compressed.is_some(),
        bytes,
    }
}

/// Open a blob read from a pack and verify its id: any changed byte is an error.
pub fn open_blob(key: &MasterKey, blob: &PackBlob, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let inner = key
        .open(&blob_aad(blob.kind, &blob.id), sealed)
        .map_err(|_| "does not decrypt (changed bytes)".to_string())?;
    let plain = if blob.compressed {
        compress::decompress_chunk(&inner, blob.raw_length as usize)?
    } else {
        inner
    };
    if plain.len() != blob.raw_length as usize || key.id_of(&plain) != blob.id.0 {
        return Err("content does not match its id".into());
    }
    Ok(plain)
}

/// [`open_blob`] without copies: decrypts in place inside `sealed` and decompresses
/// into `scratch`; returns the verified plaintext.
pub fn open_blob_in_place<'a>(
    key: &MasterKey,
    blob: &PackBlob,
    sealed: &'a mut [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    let inner = key
        .open_in_place(&blob_aad(blob.kind, &blob.id), sealed)
        .map_err(|_| "does not decrypt (changed bytes)".to_string())?;
    let plain: &[u8] = if blob.compressed {
        compress::decompress_into(inner, blob.raw_length as usize, scratch)?;
        scratch
    } else {
        inner
    };
    if plain.len() != blob.raw_length as usize || key.id_of(plain) != blob.id.0 {
        return Err("content does not match its id".into());
    }
    Ok(plain)
}

/// Accumulates sealed blobs into one pack.
#[derive(Debug)]
pub struct PackBuilder {
    /// `data[start..]` is the pack; `start` puts its first byte on a page boundary so
    /// the local backend can write it with O_DIRECT (no page-cache copy).
    data: Vec<u8>,
    start: usize,
    blobs: Vec<PackBlob>,
}

/// Alignment of pack buffers: a page, which O_DIRECT accepts on every Linux file system.
pub const PACK_ALIGN: usize = 4096;

/// A finished pack: the bytes to store, inside a buffer that can be reused.
#[derive(Debug)]
pub struct PackBytes {
    buf: Vec<u8>,
    start: usize,
}

impl std::ops::Deref for PackBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl PackBytes {
    /// The underlying buffer, for [`PackBuilder::with_buffer`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The pack's bytes handed over whole: `buffer[start..]` is the pack.
    pub fn into_shared(self) -> haven_store::SharedBytes {
        haven_store::SharedBytes::new(self.buf, self.start)
    }
}

impl PackBuilder {
    pub fn new(capacity: usize) -> Self {
        Self::with_buffer(Vec::with_capacity(capacity + PACK_ALIGN))
    }

    /// Build into a recycled buffer (its contents are discarded, its capacity kept).
    pub fn with_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        let start = (PACK_ALIGN - buffer.as_ptr() as usize % PACK_ALIGN) % PACK_ALIGN;
        buffer.resize(start, 0);
        PackBuilder {
            data: buffer,
            start,
            blobs: vec![],
        }
    }

    pub fn add(&mut self, blob: SealedBlob) {
        self.add_sealed(
            blob.kind,
            blob.id,
            blob.raw_length,
            blob.compressed,
            &blob.bytes,
        );
    }

    /// Append an already sealed blob (prune copies blobs between packs this way).
    pub fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        raw_length: u32,
        compressed: bool,
        bytes: &[u8],
    ) {
        self.blobs.push(PackBlob {
            kind,
            id,
            offset: (self.data.len() - self.start) as u32,
            length: bytes.len() as u32,
            raw_length,
            compressed,
        });
        self.data.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Seal the header and name the pack.
    pub fn finish(mut self, key: &MasterKey) -> (PackId, PackBytes, Vec<PackBlob>) {
        let header = key.seal(
            HEADER_AAD,
            &codec::encode(ObjectKind::PackHeader, &self.blobs),
        );
        self.data.extend_from_slice(&header);
        self.data
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        let id = PackId(key.id_of(&self.data[self.start..]));
        let bytes = PackBytes {
            buf: self.data,
            start: self.start,
        };
        (id, bytes, self.blobs)
    }
}

/// Length of the sealed header, from a pack's last 4 bytes.
pub fn header_length(trailer: &[u8]) -> Option<u32> {
    trailer.try_into().ok().map(u32::from_le_bytes)
}

/// Decode the header of a pack given the sealed header bytes and the pack's size,
/// checking that every blob lies inside the data area.
pub fn decode_header(
    key: &MasterKey,
    sealed_header: &[u8],
    pack_size: u64,
) -> Result<Vec<PackBlob>, String> {
    let plain = key
        .open(HEADER_AAD, sealed_header)
        .map_err(|_| "pack header does not decrypt".to_string())?;
    let blobs: Vec<PackBlob> = codec::decode(ObjectKind::PackHeader, &plain)?;
    let data_end = pack_size.saturating_sub(sealed_header.len() as u64 + 4);
    for b in &blobs {
        if b.offset as u64 + b.length as u64 > data_end {
            return Err(format!(
                "pack header lists blob {} beyond the end of the data",
                b.id.short()
            ));
        }
    }
    Ok(blobs)
}

/// Split a whole pack into its header's blob list (used by check and by recovery).
pub fn parse_pack(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackBlob>, String> {
    if pack.len() < 4 {
        return Err("pack is too short to hold a header".into());
    }
    let hlen = header_length(&pack[pack.len() - 4..]).unwrap_or(0) as usize;
    if hlen + 4 > pack.len() {
        return Err("pack header length points outside the pack (truncated?)".into());
    }
    let start = pack.len() - 4 - hlen;
    decode_header(key, &pack[start..pack.len() - 4], pack.len() as u64)
}

/// Ranges of one pack that are read together: blobs closer than `MAX_GAP` share a read
/// of at most `MAX_RANGE` bytes.
const MAX_GAP: u64 = 1 << 20;
const MAX_RANGE: u64 = 8 << 20;

/// Split items that each name a blob of one pack (sorted by offset) into read ranges:
/// (start, end, items), so a restore or copy reads each pack once, front to back, in a
/// few requests.
pub fn read_ranges<T>(items: &[T], blob: impl Fn(&T) -> &PackBlob) -> Vec<(u64, u64, &[T])> {
    let mut out = vec![];
    let mut i = 0;
    while i < items.len() {
        let first = blob(&items[i]);
        let start = first.offset as u64;
        let mut end = start + first.length as u64;
        let mut j = i + 1;
        while j < items.len() {
            let b = blob(&items[j]);
            let b_end = b.offset as u64 + b.length as u64;
            if b.offset as u64 > end + MAX_GAP || b_end - start > MAX_RANGE {
                break;
            }
            end = end.max(b_end);
            j += 1;
        }
        out.push((start, end, &items[i..j]));
        i = j;
    }
    out
}
