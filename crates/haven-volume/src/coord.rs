//! Coordination on etcd: volume specs, the replica registry, the controller lease and its
//! epoch, the in-sync record, placement. Owned by the coord work; the signatures below are
//! the interface the controller and the CLI code against.

use std::time::Duration;

/// Errors of coordination calls.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("etcd unreachable at {endpoints}: {detail}; start etcd or pass --etcd")]
    Unreachable { endpoints: String, detail: String },
    #[error("volume {0:?} already exists; pick another name or `haven volume delete` it")]
    Exists(String),
    #[error("no volume {0:?}; `haven volume list` shows the volumes")]
    NoVolume(String),
    /// The guarded transaction failed: the lease is gone or a newer controller holds the
    /// volume. The caller must stop serving.
    #[error("volume {volume:?}: epoch {epoch} is no longer the serving controller's")]
    Superseded { volume: String, epoch: u64 },
    #[error("cannot place volume {volume:?}: {reason}")]
    Placement { volume: String, reason: String },
    #[error("etcd: {0}")]
    Etcd(String),
}

pub type Result<T, E = CoordError> = std::result::Result<T, E>;

/// `site/node`: one replica server.
pub type ReplicaId = String;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    pub size: u64,
    pub replicas: u32,
    pub min_in_sync: u32,
    pub distinct_sites: bool,
    /// The replicas chosen at create time.
    pub placement: Vec<ReplicaId>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaRecord {
    pub id: ReplicaId,
    pub site: String,
    pub node: String,
    pub addr: String,
    pub free_bytes: u64,
    /// Whether its liveness key (bound to its lease) exists now.
    #[serde(default)]
    pub alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutOfSync {
    pub replica: ReplicaId,
    pub left_gen: u64,
}

/// The in-sync record (see docs/VOLUMES.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncState {
    pub epoch: u64,
    pub gen: u64,
    pub in_sync: Vec<ReplicaId>,
    pub out: Vec<OutOfSync>,
    /// replica id -> instance (hex of the u128) of its copy.
    pub instances: std::collections::BTreeMap<ReplicaId, String>,
}

/// A won campaign: the controller key exists under `lease` with create_revision `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub volume: String,
    pub epoch: u64,
    pub lease: i64,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Coord {
    _private: (),
}

impl Coord {
    /// Fails with a clear error when no endpoint answers.
    pub fn connect(_endpoints: &[String]) -> Result<Coord> {
        unimplemented!("coord work")
    }
    pub fn create_volume(&self, _spec: &VolumeSpec, _initial: &SyncState) -> Result<()> {
        unimplemented!()
    }
    pub fn volume(&self, _name: &str) -> Result<Option<VolumeSpec>> {
        unimplemented!()
    }
    pub fn volumes(&self) -> Result<Vec<VolumeSpec>> {
        unimplemented!()
    }
    pub fn delete_volume(&self, _name: &str) -> Result<()> {
        unimplemented!()
    }
    pub fn replicas(&self) -> Result<Vec<ReplicaRecord>> {
        unimplemented!()
    }
    /// Tries once to become the serving controller: Some when won.
    pub fn campaign(
        &self,
        _volume: &str,
        _candidate: &str,
        _ttl: Duration,
    ) -> Result<Option<Leadership>> {
        unimplemented!()
    }
    /// Refreshes the lease; Err(Superseded) when it is gone.
    pub fn keep_alive(&self, _leadership: &Leadership) -> Result<()> {
        unimplemented!()
    }
    pub fn resign(&self, _leadership: &Leadership) -> Result<()> {
        unimplemented!()
    }
    /// The serving controller's candidate name and epoch, if any.
    pub fn leader(&self, _volume: &str) -> Result<Option<(String, u64)>> {
        unimplemented!()
    }
    pub fn sync_state(&self, _volume: &str) -> Result<SyncState> {
        unimplemented!()
    }
    /// Replaces the in-sync record, guarded on `leadership` (Err(Superseded) otherwise).
    pub fn update_sync_state(&self, _leadership: &Leadership, _new: &SyncState) -> Result<()> {
        unimplemented!()
    }
}
