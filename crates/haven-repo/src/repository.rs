//! Opening and creating repositories.
//!
//! Lifecycle in types: [`Repository`] is an opened repository (backend, master key,
//! config); [`crate::index::IndexedRepository`] adds the loaded index and is what
//! backup, restore, check and prune work on.
//!
//! Opening: read the plaintext marker (format version) -> list key slots -> try the
//! secret on each -> decrypt the config with the master key.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use haven_store::{DynBackend, FileKind};

use crate::chunker::{Chunker, ChunkerParams};
use crate::codec::{self, ObjectKind};
use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};
use crate::id::FileId;
use crate::keys::{self, KdfParams, Secret};

/// The repository format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const MARKER_HEAD: &str = "haven repository";

/// Requests in flight at once against a remote store ([`Repository::parallel_requests`]).
pub const REMOTE_PARALLEL_REQUESTS: usize = 4;

/// The encrypted repository configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub repo_id: [u8; 32],
    pub chunker: ChunkerParams,
    /// zstd level for chunk data.
    pub compression_level: i32,
    /// Target size of pack files in bytes.
    pub pack_size: u32,
}

/// Choices made at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: crate::compress::AUTO,
            pack_size: 16 << 20,
            kdf: KdfParams::default(),
        }
    }
}

/// An opened repository: the key is known and the config read.
#[derive(Clone)]
pub struct Repository {
    pub(crate) backend: DynBackend,
    pub(crate) key: Arc<MasterKey>,
    pub(crate) config: RepoConfig,
    pub(crate) chunker: Arc<Chunker>,
    key_id: FileId,
    /// The locks taken through this value and its clones ([`crate::lock::ensure_held`]).
    pub(crate) held_locks: Arc<crate::lock::HeldLocks>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

fn file_aad(kind: FileKind, name: &str) -> Vec<u8> {
    format!("haven/v1/{}", kind.path(name)).into_bytes()
}

fn marker_text() -> String {
    format!("{MARKER_HEAD}\nformat-version {FORMAT_VERSION}\n")
}

/// Parse the plaintext format marker: its format version, `None` when unreadable.
/// The marker is not authenticated; this is fuzzed (`fuzz/`).
pub fn parse_marker(data: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    (lines.next() == Some(MARKER_HEAD))
        .then(|| lines.next())
        .flatten()
        .and_then(|l| l.strip_prefix("format-version "))
        .and_then(|v| v.trim().parse::<u32>().ok())
}

/// The settings a config may hold; checked at `init` and every time a config is read.
fn validate_settings(
    chunker: &ChunkerParams,
    compression_level: i32,
    pack_size: u32,
) -> std::result::Result<(), String> {
    chunker.validate()?;
    if !(crate::compress::AUTO..=22).contains(&compression_level) {
        return Err(format!(
            "compression level {compression_level} out of range 0 (auto) ..= 22"
        ));
    }
    if !(1 << 20..=1 << 30).contains(&pack_size) {
        return Err("pack size must be between 1 MiB and 1 GiB".into());
    }
    Ok(())
}

/// `Ok` when `backend` holds a format marker. Otherwise why not: nothing there
/// ([`RepoError::NotARepository`]), or a repository whose marker is missing
/// ([`RepoError::MarkerMissing`]: its config or a key slot is there).
pub fn require_marker(backend: &DynBackend) -> Result<()> {
    if !backend.list(FileKind::Marker)?.is_empty() {
        return Ok(());
    }
    Err(missing_marker(backend)?)
}

fn missing_marker(backend: &DynBackend) -> Result<RepoError> {
    let location = backend.location();
    let not_found_empty = |kind| match backend.list(kind) {
        Ok(l) => Ok(l.is_empty()),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e),
    };
    Ok(
        if not_found_empty(FileKind::Config)? && not_found_empty(FileKind::Key)? {
            RepoError::NotARepository(location)
        } else {
            RepoError::MarkerMissing {
                location,
                version: FORMAT_VERSION,
            }
        },
    )
}

/// Read the format marker: `Ok(())` when this build can read the repository.
fn check_marker(backend: &DynBackend) -> Result<()> {
    let location = backend.location();
    let data = match backend.read(FileKind::Marker, "") {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Err(missing_marker(backend)?),
        Err(e) => return Err(e.into()),
    };
    let version = parse_marker(&data).ok_or_else(|| {
        RepoError::corrupt(
            format!("the format marker of {location}"),
            "unreadable; is this a Haven repository?",
        )
    })?;
    if version == 0 {
        return Err(RepoError::corrupt(
            format!("the format marker of {location}"),
            "it names format version 0, which never existed",
        ));
    }
    if version > FORMAT_VERSION {
        return Err(RepoError::NewerFormat {
            location,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

impl Repository {
    /// Create a repository at an empty location; the secret becomes its first key slot.
    pub fn init(backend: DynBackend, secret: &Secret, opts: &InitOptions) -> Result<Repository> {
        opts.kdf.validate().map_err(RepoError::InvalidInput)?;
        validate_settings(&opts.chunker, opts.compression_level, opts.pack_size)
            .map_err(RepoError::InvalidInput)?;
        if !backend.list(FileKind::Marker)?.is_empty() {
            return Err(RepoError::InvalidInput(format!(
                "a repository exists at {} already",
                backend.location()
            )));
        }
        if let e @ RepoError::MarkerMissing { .. } = missing_marker(&backend)? {
            return Err(e);
        }
        backend.create()?;
        let key = MasterKey::generate();
        let config = RepoConfig {
            repo_id: crate::crypto::random_bytes(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
        };
        // Order: key slot and config first, the marker last: a crash leaves a folder
        // without a marker, which `init` refuses to reuse only if it is non-empty.
        let (slot_id, slot) = keys::new_slot(&key, secret, opts.kdf);
        backend.write(FileKind::Key, &slot_id.to_hex(), &slot)?;
        let sealed = key.seal(
            &file_aad(FileKind::Config, ""),
            &codec::encode(ObjectKind::Config, &config),
        );
        backend.write(FileKind::Config, "", &sealed)?;
        backend.write(FileKind::Marker, "", marker_text().as_bytes())?;
        Ok(Self::assemble(backend, key, config, slot_id))
    }

    /// Open an existing repository with a passphrase or key file.
    pub fn open(backend: DynBackend, secret: &Secret) -> Result<Repository> {
        check_marker(&backend)?;
        let location = backend.location();
        let mut found = None;
        let (mut damaged, mut intact) = (vec![], 0usize);
        for info in backend.list(FileKind::Key)? {
            let Some(id) = FileId::from_hex(&info.name) else {
                continue;
            };
            let data = match backend.read(FileKind::Key, &info.name) {
                Ok(data) => data,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    damaged.push(keys::DamagedSlot {
                        id,
                        reason: format!("unreadable: {e}"),
                    });
                    continue;
                }
            };
            let slot = match keys::decode_slot(&data) {
                Ok(slot) => slot,
                Err(reason) => {
                    damaged.push(keys::DamagedSlot { id, reason });
                    continue;
                }
            };
            intact += 1;
            if let Some(key) = keys::try_open(&id, &slot, secret) {
                found = Some((id, key));
                break;
            }
        }
        crate::debug::phase("open: key slots tried");
        let Some((key_id, key)) = found else {
            return Err(if damaged.is_empty() {
                RepoError::WrongPassword(location)
            } else {
                RepoError::KeySlotsDamaged {
                    location,
                    damaged,
                    intact,
                }
            });
        };
        let sealed = backend.read(FileKind::Config, "")?;
        let plain = key
            .open(&file_aad(FileKind::Config, ""), &sealed)
            .map_err(|_| {
                RepoError::corrupt(
                    format!("the config of {location}"),
                    "it does not decrypt with the repository key",
                )
            })?;
        let config: RepoConfig = codec::decode(ObjectKind::Config, &plain)
            .map_err(|e| RepoError::corrupt("the config", e))?;
        validate_settings(&config.chunker, config.compression_level, config.pack_size)
            .map_err(|e| RepoError::corrupt("the config", e))?;
        Ok(Self::assemble(backend, key, config, key_id))
    }

    fn assemble(
        backend: DynBackend,
        key: MasterKey,
        config: RepoConfig,
        key_id: FileId,
    ) -> Repository {
        let chunker = Chunker::new(config.chunker, &key.derive("haven chunker gear v1"));
        Repository {
            backend,
            key: Arc::new(key),
            config,
            chunker: Arc::new(chunker),
            key_id,
            held_locks: Arc::default(),
        }
    }

    /// Requests to send at once where work allows: one for a local folder, several for
    /// a remote store, where each request waits on a round trip (ADR 0012).
    pub fn parallel_requests(&self) -> usize {
        if self.backend.remote() {
            REMOTE_PARALLEL_REQUESTS
        } else {
            1
        }
    }

    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The key slot this repository was opened with.
    pub fn key_id(&self) -> FileId {
        self.key_id
    }

    /// Seal and store a structured object; its name is the keyed hash of its plaintext,
    /// so storing the same object twice writes the same file.
    pub fn save_object<T: Serialize>(
        &self,
        kind: FileKind,
        object: ObjectKind,
        value: &T,
    ) -> Result<[u8; 32]> {
        let plain = codec::encode(object, value);
        let id = self.key.id_of(&plain);
        self.save_object_named(kind, &hex::encode(id), &plain)?;
        Ok(id)
    }

    /// Seal and store already-encoded plaintext under a given name.
    pub(crate) fn save_object_named(&self, kind: FileKind, name: &str, plain: &[u8]) -> Result<()> {
        let sealed = self.key.seal(&file_aad(kind, name), plain);
        self.backend.write(kind, name, &sealed)?;
        Ok(())
    }

    /// Load and open a structured object; damage is reported as `Corrupt` naming it.
    pub fn load_object<T: DeserializeOwned>(
        &self,
        kind: FileKind,
        object: ObjectKind,
        name: &str,
    ) -> Result<T> {
        let sealed = self.backend.read(kind, name)?;
        let what = || format!("{} {}", object.name(), &name[..name.len().min(8)]);
        let plain = self.key.open(&file_aad(kind, name), &sealed).map_err(|_| {
            RepoError::corrupt(
                what(),
                "it does not decrypt (changed bytes or a foreign file)",
            )
        })?;
        // Locks and snapshots have random names, bound to the content by the
        // associated data of the seal (`file_aad`); every other object is named after
        // the keyed hash of its plaintext. Snapshots of old repositories are still
        // named by hash, which is a valid name too.
        if kind != FileKind::Lock
            && kind != FileKind::Snapshot
            && hex::encode(self.key.id_of(&plain)) != name
        {
            return Err(RepoError::corrupt(
                what(),
                "its content does not match its name",
            ));
        }
        codec::decode(object, &plain).map_err(|e| RepoError::corrupt(what(), e))
    }

    // ----- key slots -----

    /// Add a key slot for `secret`; returns its id.
    pub fn add_key(&self, secret: &Secret, kdf: KdfParams) -> Result<FileId> {
        kdf.validate().map_err(RepoError::InvalidInput)?;
        let (id, slot) = keys::new_slot(&self.key, secret, kdf);
        self.backend.write(FileKind::Key, &id.to_hex(), &slot)?;
        Ok(id)
    }

    /// All key slots with their metadata.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = vec![];
        for info in self.backend.list(FileKind::Key)? {
            let Some(id) = FileId::from_hex(&info.name) else {
                continue;
            };
            let data = self.backend.read(FileKind::Key, &info.name)?;
            let slot = keys::decode_slot(&data)
                .map_err(|e| RepoError::corrupt(format!("key slot {}", id.short()), e))?;
            let meta = keys::read_meta(&self.key, &id, &slot)?;
            out.push(KeyInfo {
                id,
                kind: keys::slot_kind(&slot),
                meta,
                current: id == self.key_id,
            });
        }
        Ok(out)
    }

    /// Remove a key slot by id or unique id prefix. Refuses the slot in use and the last one.
    pub fn remove_key(&self, prefix: &str) -> Result<FileId> {
        let keys = self.list_keys()?;
        let matches: Vec<_> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(prefix))
            .collect();
        let key = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(RepoError::InvalidInput(format!(
                    "no key slot matches {prefix:?}; see `haven key list`"
                )))
            }
            _ => {
                return Err(RepoError::InvalidInput(format!(
                    "{prefix:?} matches several key slots; give more digits"
                )))
            }
        };
        if key.current {
            return Err(RepoError::InvalidInput(
                "refusing to remove the key slot this command was opened with; open the repository with another key first".into(),
            ));
        }
        if keys.len() < 2 {
            return Err(RepoError::InvalidInput(
                "refusing to remove the last key slot: the repository would be unreadable".into(),
            ));
        }
        self.backend.remove(FileKind::Key, &key.id.to_hex())?;
        Ok(key.id)
    }

    /// Replace the current slot's secret: a new slot is written before the old one goes.
    pub fn change_password(&mut self, secret: &Secret, kdf: KdfParams) -> Result<FileId> {
        let new_id = self.add_key(secret, kdf)?;
        let old = self.key_id;
        self.key_id = new_id;
        self.backend.remove(FileKind::Key, &old.to_hex())?;
        Ok(new_id)
    }
}

/// A key slot as shown by `haven key list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: FileId,
    pub kind: &'static str,
    pub meta: keys::KeyMeta,
    pub current: bool,
}
