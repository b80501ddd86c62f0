//! The Haven repository engine.
//!
//! Layers inside this crate, bottom up:
//! * [`crypto`], [`codec`], [`chunker`], [`compress`]: keys and sealing, the object
//!   envelope, content-defined chunking, zstd.
//! * [`pack`], [`index`], [`tree`], [`snapshot`], [`keys`]: the stored objects
//!   (`docs/FORMAT.md` is their binding spec).
//! * [`repository::Repository`] (opened) -> [`index::IndexedRepository`] (index loaded);
//!   readers get [`read::ReadView`] (snapshots listed, then the index loaded).
//! * Verbs: [`backup`], [`restore`], [`check`], [`retention`], [`prune`], [`repair`], [`stats`],
//!   writing through [`saver::BlobSaver`] and guarded by [`lock`].
//!
//! Errors: [`error::RepoError`]. Nothing here prints; progress goes through
//! [`progress::Progress`] counters.

pub mod backup;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod debug;
pub mod diff;
pub mod error;
pub mod host;
pub mod id;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod parallel;
pub mod progress;
pub mod prune;
pub mod read;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod saver;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod trees;
pub mod walk;
pub mod xattr;

pub use error::{RepoError, Result};
pub use index::IndexedRepository;
pub use repository::{InitOptions, Repository};
