//! The envelope of every structured object (config, key metadata, index, snapshot,
//! tree, lock): a 4-byte magic naming the kind, a format version byte, a compression
//! byte, then the postcard-encoded body (zstd-compressed when the byte says so).
//!
//! Decoding checks magic, version and compression before touching the body and never
//! panics on hostile input: decoders are fuzzed (`fuzz/`).

use serde::{de::DeserializeOwned, Serialize};

/// Upper bound for a decompressed object body, so hostile input cannot exhaust memory.
pub const MAX_OBJECT_BODY: usize = 512 << 20;

/// The kinds of structured objects, each with its magic and current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Config,
    KeyMeta,
    Index,
    Snapshot,
    Tree,
    Lock,
    PackHeader,
    KeySlot,
}

impl ObjectKind {
    pub fn magic(self) -> &'static [u8; 4] {
        match self {
            ObjectKind::Config => b"HCFG",
            ObjectKind::KeyMeta => b"HKMD",
            ObjectKind::Index => b"HIDX",
            ObjectKind::Snapshot => b"HSNP",
            ObjectKind::Tree => b"HTRE",
            ObjectKind::Lock => b"HLCK",
            ObjectKind::PackHeader => b"HPHD",
            ObjectKind::KeySlot => b"HKEY",
        }
    }

    /// The version this build writes and the newest it reads. Trees are written as
    /// version 1 when they hold nothing version 2 added (see `tree`).
    pub fn version(self) -> u8 {
        match self {
            ObjectKind::Tree => 2,
            _ => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::KeyMeta => "key metadata",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Tree => "tree",
            ObjectKind::Lock => "lock",
            ObjectKind::PackHeader => "pack header",
            ObjectKind::KeySlot => "key slot",
        }
    }
}

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;

/// Encode `value` as an object of `kind`, compressing bodies larger than 256 bytes.
pub fn encode<T: Serialize>(kind: ObjectKind, value: &T) -> Vec<u8> {
    encode_with(kind, value, true)
}

/// Encode without compression: for objects stored as blobs (trees), which the blob
/// layer compresses, so their ids depend only on their content, never on zstd's output.
pub fn encode_uncompressed<T: Serialize>(kind: ObjectKind, value: &T) -> Vec<u8> {
    encode_with(kind, value, false)
}

/// Encode without compression under an older `version` of `kind`, for a value of that
/// version's shape.
pub fn encode_uncompressed_version<T: Serialize>(
    kind: ObjectKind,
    version: u8,
    value: &T,
) -> Vec<u8> {
    debug_assert!(version >= 1 && version <= kind.version());
    let mut out = encode_with(kind, value, false);
    out[4] = version;
    out
}

/// The format version byte of an encoded object, if it is long enough to have one.
pub fn version_of(data: &[u8]) -> Option<u8> {
    data.get(4).copied()
}

fn encode_with<T: Serialize>(kind: ObjectKind, value: &T, compress: bool) -> Vec<u8> {
    let body = postcard::to_stdvec(value).expect("serializing to memory cannot fail");
    let mut out = Vec::with_capacity(body.len() / 2 + 6);
    out.extend_from_slice(kind.magic());
    out.push(kind.version());
    if compress && body.len() > 256 {
        if let Some(compressed) =
            crate::compress::compress_with(&body, 3).filter(|c| c.len() < body.len())
        {
            out.push(COMPRESSION_ZSTD);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&compressed);
            return out;
        }
    }
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(&body);
    out
}

/// Decode an object of `kind`; the error says what is wrong, for `RepoError::Corrupt`.
pub fn decode<T: DeserializeOwned>(kind: ObjectKind, data: &[u8]) -> Result<T, String> {
    if data.len() < 6 {
        return Err(format!(
            "{} object too short ({} bytes)",
            kind.name(),
            data.len()
        ));
    }
    if &data[..4] != kind.magic() {
        return Err(format!("not a {} object (wrong magic)", kind.name()));
    }
    let version = data[4];
    if version == 0 || version > kind.version() {
        return Err(format!(
            "{} object has format version {version}; this haven reads up to {}: upgrade haven",
            kind.name(),
            kind.version()
        ));
    }
    let body_owned;
    let body = match data[5] {
        COMPRESSION_NONE => &data[6..],
        COMPRESSION_ZSTD => {
            if data.len() < 10 {
                return Err(format!("{} object too short", kind.name()));
            }
            let len = u32::from_le_bytes(data[6..10].try_into().expect("4 bytes")) as usize;
            if len > MAX_OBJECT_BODY {
                return Err(format!(
                    "{} object claims an implausible size of {len} bytes",
                    kind.name()
                ));
            }
            body_owned = crate::compress::decompress_chunk(&data[10..], len)
                .map_err(|e| format!("{} body {e}", kind.name()))?;
            &body_owned[..]
        }
        other => {
            return Err(format!(
                "{} object uses unknown compression {other}",
                kind.name()
            ))
        }
    };
    let (value, rest) = postcard::take_from_bytes(body)
        .map_err(|e| format!("{} body does not decode: {e}", kind.name()))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} body has {} trailing bytes",
            kind.name(),
            rest.len()
        ));
    }
    Ok(value)
}
