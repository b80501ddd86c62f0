//! Replicas: the server (`haven replica serve`), its store and the client the controller
//! uses. Spec: docs/VOLUMES.md, "Replica protocol, version 2".
//!
//! ```text
//! controller ── ReplicaClient (client.rs) ── wire frames over TCP ──▶ ReplicaServer (server.rs)
//!                                                                        │ one thread per connection
//!                                                                        ▼
//!                                          Store (store.rs): Volume = data file + meta (epoch)
//!                                          + dirty maps per generation + unsettled regions
//! ```
//! Main types: [`ReplicaClient`] (one connection; any transport or frame error is
//! [`ReplicaError::Unreachable`]), [`ReplicaServer`], [`store::Store`]/[`store::Volume`].

mod client;
mod server;
pub mod store;

pub use client::ReplicaClient;
pub use server::ReplicaServer;

use crate::region::RegionMap;

/// Errors of replica calls.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The replica has seen a higher epoch: this controller is superseded.
    #[error("fenced: replica {replica} has seen epoch {seen}, this request carries {sent}")]
    Fenced {
        replica: String,
        seen: u64,
        sent: u64,
    },
    #[error("replica {replica}: no space left: {detail}")]
    NoSpace { replica: String, detail: String },
    #[error("replica {replica}: no volume {volume:?}")]
    NoVolume { replica: String, volume: String },
    #[error("replica {replica}: volume {volume:?} already exists")]
    Exists { replica: String, volume: String },
    /// Connection refused, reset, timed out, a bad frame: the replica counts as failed.
    #[error("replica {replica} unreachable: {detail}")]
    Unreachable { replica: String, detail: String },
    #[error("replica {replica}: {detail}")]
    Failed { replica: String, detail: String },
}

pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;

/// What HELLO answers about the replica's copy of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeState {
    pub size: u64,
    /// Drawn when the copy was created; another value than the in-sync record's means a
    /// lost disk (full rebuild).
    pub instance: u128,
    /// Highest epoch seen (after this HELLO: the HELLO's epoch).
    pub epoch: u64,
    /// Regions written by writes not known settled (see docs/VOLUMES.md, "Unsettled
    /// regions"); after a restart a superset of them. None when the replica cannot tell
    /// (the dirty maps back to its last SETTLE_ALL were dropped): compare every region.
    pub unsettled: Option<RegionMap>,
}

/// What a replica says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub site: String,
    pub node: String,
    pub free_bytes: u64,
    pub volumes: Vec<String>,
}
