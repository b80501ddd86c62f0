//! Storage backends for Haven repositories.
//!
//! A repository is a set of named, immutable files grouped by [`FileKind`]. The
//! repository engine (`haven-repo`) talks to storage only through two small traits:
//!
//! * [`ReadBackend`]: list, read whole files, read byte ranges.
//! * [`WriteBackend`]: create the layout, write a file atomically and durably (from a
//!   borrowed slice, or from a [`SharedBytes`] buffer handed over so that S3 needs no
//!   copy), remove.
//!
//! Implementations: [`LocalBackend`] (a folder) and [`MemoryBackend`] (tests).
//! Every error is a [`StoreError`] that says which location and file it concerns and
//! whether retrying can help ([`ErrorClass`]).
//!
//! Contract, binding for every implementation:
//! * `write` is atomic (a reader sees the whole file or no file) and durable when it
//!   returns (the local backend fsyncs the file and its folder).
//! * `write` of a name that exists with the same content is a no-op success: names are
//!   content-derived ids, so a repeated write after a crash or retry is harmless.
//! * `remove` of a missing file succeeds (idempotent).
//! * `list` never returns partially written files.

mod compose;
mod error;
mod flaky;
mod limit;
mod local;
mod memory;
mod mirror;
mod retry;
pub mod suite;
pub mod throttle;

pub use compose::{mirror_stack, wrap, StackOptions};
pub use error::{ErrorClass, StoreError};
pub use flaky::FlakyBackend;
pub use limit::LimitBackend;
pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use mirror::{
    parse_mirror_sites, CompareReport, Copied, Disagreement, DisagreementKind, MinSites,
    MirrorBackend, MirrorEvent, RepairReport, MIRRORED_KINDS,
};
pub use retry::{RetryBackend, RetryPolicy};
pub use throttle::ThrottleBackend;

/// The kinds of files in a repository. Each kind lives in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The plaintext format marker (`haven-repository`): magic and format version only.
    Marker,
    /// The encrypted repository configuration (`config`).
    Config,
    /// Key slots (`keys/<id>`).
    Key,
    /// Pack files holding encrypted blobs (`data/<xx>/<id>`).
    Pack,
    /// Index files mapping blobs to packs (`index/<id>`).
    Index,
    /// Snapshots (`snapshots/<id>`).
    Snapshot,
    /// Locks (`locks/<id>`).
    Lock,
}

impl FileKind {
    /// All kinds that live in folders (everything except the two single files).
    pub const FOLDERS: [FileKind; 5] = [
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
    ];

    /// The folder of this kind, relative to the repository root.
    pub fn folder(self) -> &'static str {
        match self {
            FileKind::Marker | FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
        }
    }

    /// The path of a file of this kind relative to the repository root.
    /// Packs are spread over 256 sub-folders by the first two hex digits of their name.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Marker => "haven-repository".to_string(),
            FileKind::Config => "config".to_string(),
            FileKind::Pack => {
                let prefix = name.get(..2).unwrap_or("00");
                format!("data/{prefix}/{name}")
            }
            other => format!("{}/{name}", other.folder()),
        }
    }
}

/// A file as returned by [`ReadBackend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
}

/// Reading side of a backend. Implementations must be cheap to share across threads.
pub trait ReadBackend: Send + Sync {
    /// Where this backend stores data, for messages (a path or URL; never credentials).
    fn location(&self) -> String;
    /// True when every request crosses a network (S3, a mirror with such a site): the
    /// engine then overlaps requests (several uploaders and readers) and keeps tree packs
    /// in a local cache, since a round trip costs far more than reading a local file.
    fn remote(&self) -> bool {
        false
    }
    /// All complete files of one kind. Kinds that are single files (`Marker`, `Config`)
    /// list as one entry named after the kind, or nothing when absent.
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError>;
    /// The whole file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError>;
    /// `length` bytes at `offset`. Reading past the end is an error of class `Permanent`
    /// (a truncated file), never a short read.
    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError>;
}

/// Writing side of a backend.
pub trait WriteBackend: ReadBackend {
    /// Create the empty layout. Fails when something already lives there.
    fn create(&self) -> Result<(), StoreError>;
    /// Write a whole file atomically and durably (see the crate doc for the contract).
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError>;
    /// [`write`](Self::write) of a buffer the caller hands over: a backend that needs
    /// owned bytes (S3) sends them without a copy. Same contract as `write`.
    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        self.write(kind, name, data.as_ref())
    }
    /// Remove a file; removing a missing file succeeds. Durable when it returns.
    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError>;
    /// Remove what crashed writers left behind (temporary files, unfinished uploads)
    /// older than `min_age`; returns how many. Backends without such leftovers do nothing.
    fn remove_stale_temporaries(&self, _min_age: std::time::Duration) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// A file's bytes handed to [`WriteBackend::write_shared`]: `buf[start..]`, shared so
/// that a retry can send them again and the writer can take the buffer back for reuse
/// ([`SharedBytes::into_vec`]) once the backend has let go of it.
#[derive(Debug, Clone)]
pub struct SharedBytes {
    buf: std::sync::Arc<Vec<u8>>,
    start: usize,
}

impl SharedBytes {
    /// The bytes `buf[start..]`.
    pub fn new(buf: Vec<u8>, start: usize) -> SharedBytes {
        assert!(start <= buf.len(), "start beyond the buffer");
        SharedBytes {
            buf: std::sync::Arc::new(buf),
            start,
        }
    }

    /// The whole buffer back, when no other holder is left.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        std::sync::Arc::try_unwrap(self.buf).ok()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Either side of a backend behind one pointer, as the repository engine holds it.
pub type DynBackend = std::sync::Arc<dyn WriteBackend>;

/// Open a backend from a repository location given by the user.
/// Today: a local path (optionally written `local:PATH`).
pub fn open_location(location: &str) -> Result<DynBackend, StoreError> {
    let path = location.strip_prefix("local:").unwrap_or(location);
    if path.contains("://") {
        return Err(StoreError::new(
            ErrorClass::Permanent,
            location,
            "",
            "this kind of repository URL is not supported yet; use a local folder path",
        ));
    }
    Ok(std::sync::Arc::new(LocalBackend::new(path)))
}
