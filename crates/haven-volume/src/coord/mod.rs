//! Coordination on etcd: volume specs, the replica registry, the controller lease and its
//! epoch, the in-sync record, placement. `docs/VOLUMES.md` ("etcd keys") lists every key,
//! who writes it and which transaction guards it.
//!
//! ```text
//! Coord ── etcd::Cluster (the members in turn; the last good one first; short timeouts)
//!   volumes.rs   create (txn: spec absent) / read / list / delete; the in-sync record
//!   leader.rs    campaign (txn: controller key absent) -> Leadership {epoch, lease},
//!                keep_alive, resign, leader(); update_sync_state (txn: epoch and lease)
//!   replicas.rs  register_replica -> Registration (record + lease-bound liveness key)
//!   placement.rs place(): distinct nodes, distinct sites, most free space first
//! ```
//! The epoch of a controller is the create revision of its controller key: etcd's revision
//! only grows, and the key must be absent (the previous holder's lease gone) to be created
//! again, so every new controller has a higher epoch than all before it.
use std::time::Duration;

mod etcd;
mod leader;
mod placement;
mod replicas;
mod volumes;

pub use etcd::CALL_TIMEOUT;
pub use placement::{format_bytes, place};
pub use replicas::Registration;
pub use volumes::{ProgressRecord, ResyncProgress};

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
    /// A volume name that cannot be a path segment of an etcd key.
    #[error(
        "invalid volume name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)"
    )]
    BadName(String),
    /// A stored value that is not what this version writes.
    #[error("etcd key {key}: {detail}; was it written by another program?")]
    Corrupt { key: String, detail: String },
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

/// A connection to the etcd cluster (cheap to clone; clones share the member that answered
/// last).
#[derive(Debug, Clone)]
pub struct Coord {
    cluster: etcd::Cluster,
}

impl Coord {
    /// Fails with a clear error when no endpoint answers. Each entry of `endpoints` may
    /// hold several URLs separated by commas.
    pub fn connect(endpoints: &[String]) -> Result<Coord> {
        Coord::connect_with_timeout(endpoints, CALL_TIMEOUT)
    }

    /// [`Coord::connect`] with another bound on each call to one member.
    pub fn connect_with_timeout(endpoints: &[String], timeout: Duration) -> Result<Coord> {
        let cluster = etcd::Cluster::new(endpoints, timeout)?;
        cluster.run(|c| c.revision())?;
        Ok(Coord { cluster })
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> String {
        self.cluster.endpoints()
    }
}

/// The etcd keys (see docs/VOLUMES.md, "etcd keys").
pub(crate) mod keys {
    pub const VOLUMES: &str = "/haven/volumes/";
    pub const REPLICAS: &str = "/haven/replicas/";
    pub const ALIVE: &str = "/haven/replicas-alive/";

    pub fn volume(name: &str) -> String {
        format!("{VOLUMES}{name}/")
    }
    pub fn spec(name: &str) -> String {
        format!("{VOLUMES}{name}/spec")
    }
    pub fn sync(name: &str) -> String {
        format!("{VOLUMES}{name}/sync")
    }
    pub fn controller(name: &str) -> String {
        format!("{VOLUMES}{name}/controller")
    }
    pub fn progress(name: &str) -> String {
        format!("{VOLUMES}{name}/progress")
    }
    pub fn replica(id: &str) -> String {
        format!("{REPLICAS}{id}")
    }
    pub fn alive(id: &str) -> String {
        format!("{ALIVE}{id}")
    }
}

/// Decode a JSON value stored at `key`.
fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| CoordError::Corrupt {
        key: key.to_string(),
        detail: format!("not the expected JSON: {e}"),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("coord records serialize")
}

/// Whole seconds for an etcd lease: at least 1, rounded up.
fn lease_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}
