//! Replicas: the server (`haven replica serve`), its store and the client the controller
//! uses. Owned by the replica work; the signatures below are the interface the controller
//! codes against.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// None when the replica restarted without a clean shutdown while writes were
    /// unsettled and cannot tell which regions: compare every region.
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

/// One connection to one replica. Not shared between threads.
#[derive(Debug)]
pub struct ReplicaClient {
    _private: (),
}

impl ReplicaClient {
    pub fn connect(_addr: SocketAddr, _timeout: Duration) -> Result<ReplicaClient> {
        unimplemented!("replica work")
    }
    pub fn info(&mut self) -> Result<ReplicaInfo> {
        unimplemented!()
    }
    /// Allocates the volume's data file (refused when larger than the free space).
    pub fn create_volume(&mut self, _volume: &str, _size: u64) -> Result<VolumeState> {
        unimplemented!()
    }
    pub fn delete_volume(&mut self, _volume: &str) -> Result<()> {
        unimplemented!()
    }
    /// Seals the replica's copy with `epoch` (persisted before answering).
    pub fn hello(&mut self, _volume: &str, _epoch: u64) -> Result<VolumeState> {
        unimplemented!()
    }
    pub fn read(&mut self, _epoch: u64, _offset: u64, _len: u32) -> Result<Vec<u8>> {
        unimplemented!()
    }
    /// `gen` marks the dirty map; `seq`/`settled` track unsettled regions.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        _epoch: u64,
        _gen: u64,
        _seq: u64,
        _settled: u64,
        _offset: u64,
        _data: &[u8],
        _fua: bool,
    ) -> Result<()> {
        unimplemented!()
    }
    #[allow(clippy::too_many_arguments)]
    pub fn write_zeroes(
        &mut self,
        _epoch: u64,
        _gen: u64,
        _seq: u64,
        _settled: u64,
        _offset: u64,
        _len: u64,
        _fua: bool,
    ) -> Result<()> {
        unimplemented!()
    }
    pub fn flush(&mut self, _epoch: u64) -> Result<()> {
        unimplemented!()
    }
    /// Regions written in generations `>= gen`; None when this replica no longer holds the
    /// maps back to `gen` (full rebuild).
    pub fn dirty_since(&mut self, _epoch: u64, _gen: u64) -> Result<Option<RegionMap>> {
        unimplemented!()
    }
    /// BLAKE3 of each region in `first .. first + count`.
    pub fn region_checksums(
        &mut self,
        _epoch: u64,
        _first: u64,
        _count: u32,
    ) -> Result<Vec<[u8; 32]>> {
        unimplemented!()
    }
    /// Marks every unsettled region settled (after a reconcile).
    pub fn settle_all(&mut self, _epoch: u64) -> Result<()> {
        unimplemented!()
    }
}
