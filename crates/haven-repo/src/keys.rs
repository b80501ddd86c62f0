//! Key slots: each wraps the repository's master key under one secret.
//!
//! A slot file (`keys/<random id>`) is the only plaintext a repository holds besides the
//! format marker: the KDF parameters and salt, the wrapped master key, and metadata
//! (creation time, host, user) sealed with the master key itself. Secrets are either a
//! passphrase (Argon2id) or a key file of high-entropy bytes (a keyed hash suffices).
//!
//! A slot that cannot be read or decoded is *damaged* ([`DamagedSlot`]); opening says
//! so, naming the slot, instead of blaming the passphrase. Damage inside the wrapped key
//! or the salt cannot be told from a wrong secret (the slot is not authenticated apart
//! from the secret it wraps under).

use serde::{Deserialize, Serialize};

use crate::codec::{self, ObjectKind};
use crate::crypto::{self, MasterKey};
use crate::error::{RepoError, Result};
use crate::id::FileId;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB and 3 passes: about 0.2 s on this project's 2-core machines.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 << 10,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Bounds checked on every slot read, so a hostile slot cannot exhaust memory.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(8 << 10..=4 << 20).contains(&self.memory_kib)
            || !(1..=64).contains(&self.iterations)
            || !(1..=16).contains(&self.parallelism)
        {
            return Err(format!(
                "KDF parameters out of range (memory {} KiB: 8 MiB..4 GiB, iterations {}: 1..64, parallelism {}: 1..16)",
                self.memory_kib, self.iterations, self.parallelism
            ));
        }
        Ok(())
    }
}

/// How a slot turns a secret into the key that wraps the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kdf {
    Argon2id { params: KdfParams, salt: [u8; 16] },
    KeyFile { salt: [u8; 16] },
}

/// The stored form of a key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlotFile {
    pub kdf: Kdf,
    /// The 64-byte master key sealed under the slot's key.
    pub wrapped: Vec<u8>,
    /// [`KeyMeta`] sealed under the master key.
    pub meta: Vec<u8>,
}

/// What a slot says about itself, readable only with the master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyMeta {
    pub created_unix: i64,
    pub host: String,
    pub user: String,
}

/// A secret that opens a slot.
#[derive(Clone)]
pub enum Secret {
    Passphrase(String),
    KeyFile(Vec<u8>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Passphrase(_) => f.write_str("Passphrase(..)"),
            Secret::KeyFile(_) => f.write_str("KeyFile(..)"),
        }
    }
}

impl Secret {
    /// A passphrase kept in a file (one line; a trailing newline is ignored).
    pub fn from_password_file(path: &std::path::Path) -> Result<Secret> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RepoError::io(path, "reading the password file", e))?;
        let pw = text.strip_suffix('\n').unwrap_or(&text);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        if pw.is_empty() {
            return Err(RepoError::InvalidInput(format!(
                "the password file {} is empty; put the passphrase in it",
                path.display()
            )));
        }
        Ok(Secret::Passphrase(pw.to_string()))
    }

    /// A key file made by `haven key add --new-key-file` (at least 32 bytes).
    pub fn from_key_file(path: &std::path::Path) -> Result<Secret> {
        let bytes =
            std::fs::read(path).map_err(|e| RepoError::io(path, "reading the key file", e))?;
        if bytes.len() < 32 {
            return Err(RepoError::InvalidInput(format!(
                "the key file {} holds fewer than 32 bytes; create one with `haven key add --new-key-file`",
                path.display()
            )));
        }
        Ok(Secret::KeyFile(bytes))
    }
}

fn slot_aad(id: &FileId) -> Vec<u8> {
    format!("haven/v1/keyslot/{id}").into_bytes()
}

fn meta_aad(id: &FileId) -> Vec<u8> {
    format!("haven/v1/keymeta/{id}").into_bytes()
}

fn derive_kek(kdf: &Kdf, secret: &Secret) -> Option<[u8; 32]> {
    match (kdf, secret) {
        (Kdf::Argon2id { params, salt }, Secret::Passphrase(p)) => {
            let p2 = argon2::Params::new(
                params.memory_kib,
                params.iterations,
                params.parallelism,
                Some(32),
            )
            .ok()?;
            let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p2);
            let mut out = [0u8; 32];
            a.hash_password_into(p.as_bytes(), salt, &mut out).ok()?;
            Some(out)
        }
        (Kdf::KeyFile { salt }, Secret::KeyFile(bytes)) => {
            let k = blake3::derive_key("haven key file v1", bytes);
            Some(*blake3::keyed_hash(&k, salt).as_bytes())
        }
        _ => None,
    }
}

/// Build a new slot for `master` under `secret`.
pub fn new_slot(master: &MasterKey, secret: &Secret, params: KdfParams) -> (FileId, Vec<u8>) {
    let id = FileId::random();
    let kdf = match secret {
        Secret::Passphrase(_) => Kdf::Argon2id {
            params,
            salt: crypto::random_bytes(),
        },
        Secret::KeyFile(_) => Kdf::KeyFile {
            salt: crypto::random_bytes(),
        },
    };
    let kek = derive_kek(&kdf, secret).expect("KDF parameters were validated");
    let meta = KeyMeta {
        created_unix: chrono::Utc::now().timestamp(),
        host: crate::host::hostname(),
        user: crate::host::username(),
    };
    let slot = KeySlotFile {
        wrapped: crypto::seal_with_key(&kek, &slot_aad(&id), &master.to_bytes()),
        meta: master.seal(&meta_aad(&id), &codec::encode(ObjectKind::KeyMeta, &meta)),
        kdf,
    };
    (id, codec::encode(ObjectKind::KeySlot, &slot))
}

/// The length of a slot's `wrapped` field: nonce, 64-byte master secret, tag.
const WRAPPED_LEN: usize = 12 + 64 + 16;

/// Decode a slot file (plaintext) without opening it. An error says why the slot is
/// damaged (empty, truncated, not a slot, out-of-bounds parameters, wrong length).
pub fn decode_slot(data: &[u8]) -> std::result::Result<KeySlotFile, String> {
    if data.is_empty() {
        return Err("the file is empty".into());
    }
    let slot: KeySlotFile = codec::decode(ObjectKind::KeySlot, data)?;
    if let Kdf::Argon2id { params, .. } = &slot.kdf {
        params.validate()?;
    }
    if slot.wrapped.len() != WRAPPED_LEN {
        return Err(format!(
            "its wrapped key is {} bytes instead of {WRAPPED_LEN}",
            slot.wrapped.len()
        ));
    }
    Ok(slot)
}

/// A key slot that could not be tried, and why (for [`RepoError::KeySlotsDamaged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSlot {
    pub id: FileId,
    pub reason: String,
}

impl std::fmt::Display for DamagedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key slot {} ({})", self.id.short(), self.reason)
    }
}

/// Try to open one slot; `None` when the secret does not fit.
pub fn try_open(id: &FileId, slot: &KeySlotFile, secret: &Secret) -> Option<MasterKey> {
    let kek = derive_kek(&slot.kdf, secret)?;
    let raw = crypto::open_with_key(&kek, &slot_aad(id), &slot.wrapped).ok()?;
    let raw: [u8; 64] = raw.try_into().ok()?;
    Some(MasterKey::from_bytes(&raw))
}

/// Read a slot's metadata with the master key.
pub fn read_meta(master: &MasterKey, id: &FileId, slot: &KeySlotFile) -> Result<KeyMeta> {
    let plain = master.open(&meta_aad(id), &slot.meta).map_err(|_| {
        RepoError::corrupt(
            format!("key slot {}", id.short()),
            "its metadata does not decrypt",
        )
    })?;
    codec::decode(ObjectKind::KeyMeta, &plain)
        .map_err(|e| RepoError::corrupt(format!("key slot {}", id.short()), e))
}

/// Whether a slot is opened by a passphrase or a key file.
pub fn slot_kind(slot: &KeySlotFile) -> &'static str {
    match slot.kdf {
        Kdf::Argon2id { .. } => "passphrase",
        Kdf::KeyFile { .. } => "key-file",
    }
}
