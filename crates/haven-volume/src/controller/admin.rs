//! The administrative verbs behind `haven volume create | delete | status | list`, as
//! library calls: placement, the copies on the replicas, the first in-sync record, and a
//! report read from etcd.

use std::collections::BTreeMap;
use std::time::Duration;

use super::takeover::{addresses, resolve};
use crate::coord::{Coord, CoordError, ReplicaId, SyncState, VolumeSpec};
use crate::replica::{ReplicaClient, ReplicaError};

/// Errors of the administrative verbs.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error("volume {volume:?}: creating its copy on replica {replica}: {source}")]
    Replica {
        volume: String,
        replica: ReplicaId,
        source: ReplicaError,
    },
    #[error("volume {volume:?}: {detail}")]
    Invalid { volume: String, detail: String },
}

/// What `haven volume create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    pub name: String,
    pub size: u64,
    pub replicas: u32,
    pub min_in_sync: u32,
    pub distinct_sites: bool,
}

/// Places the volume, creates its copies on the chosen replicas and writes its spec with
/// the first in-sync record (every copy in sync, their instances). A failure after some
/// copies were made deletes them again.
pub fn create_volume(
    coord: &Coord,
    new: &NewVolume,
    timeout: Duration,
) -> Result<VolumeSpec, AdminError> {
    let invalid = |detail: String| AdminError::Invalid {
        volume: new.name.clone(),
        detail,
    };
    if new.size == 0 || new.size % 512 != 0 {
        return Err(invalid(format!(
            "size {} is not a positive multiple of 512 bytes",
            new.size
        )));
    }
    if new.min_in_sync == 0 || new.min_in_sync > new.replicas {
        return Err(invalid(format!(
            "--min-in-sync {} must be between 1 and --replicas {}",
            new.min_in_sync, new.replicas
        )));
    }
    if coord.volume(&new.name)?.is_some() {
        return Err(CoordError::Exists(new.name.clone()).into());
    }
    let mut spec = VolumeSpec {
        name: new.name.clone(),
        size: new.size,
        replicas: new.replicas,
        min_in_sync: new.min_in_sync,
        distinct_sites: new.distinct_sites,
        placement: vec![],
    };
    spec.placement = coord.place(&spec)?;
    let addrs = addresses(coord)?;
    let mut instances = BTreeMap::new();
    for id in &spec.placement {
        let made = addrs
            .get(id)
            .ok_or_else(|| ReplicaError::Unreachable {
                replica: id.clone(),
                detail: "not in the replica registry".into(),
            })
            .and_then(|(addr, _)| resolve(addr))
            .and_then(|addr| ReplicaClient::connect(addr, timeout))
            .and_then(|mut c| c.create_volume(&new.name, new.size));
        match made {
            Ok(state) => {
                instances.insert(id.clone(), format!("{:032x}", state.instance));
            }
            Err(source) => {
                delete_copies(coord, &new.name, instances.keys(), timeout);
                return Err(AdminError::Replica {
                    volume: new.name.clone(),
                    replica: id.clone(),
                    source,
                });
            }
        }
    }
    let initial = SyncState {
        epoch: 0,
        gen: 1,
        in_sync: spec.placement.clone(),
        out: vec![],
        instances,
    };
    if let Err(e) = coord.create_volume(&spec, &initial) {
        delete_copies(coord, &new.name, spec.placement.iter(), timeout);
        return Err(e.into());
    }
    Ok(spec)
}

/// Deletes the copies on `replicas`, best effort; returns the failures.
fn delete_copies<'a>(
    coord: &Coord,
    volume: &str,
    replicas: impl Iterator<Item = &'a ReplicaId>,
    timeout: Duration,
) -> Vec<(ReplicaId, String)> {
    let addrs = match addresses(coord) {
        Ok(a) => a,
        Err(e) => return replicas.map(|id| (id.clone(), e.to_string())).collect(),
    };
    let mut failed = vec![];
    for id in replicas {
        let deleted = addrs
            .get(id)
            .ok_or_else(|| ReplicaError::Unreachable {
                replica: id.clone(),
                detail: "not in the replica registry".into(),
            })
            .and_then(|(addr, _)| resolve(addr))
            .and_then(|addr| ReplicaClient::connect(addr, timeout))
            .and_then(|mut c| c.delete_volume(volume));
        match deleted {
            Ok(()) | Err(ReplicaError::NoVolume { .. }) => {}
            Err(e) => failed.push((id.clone(), e.to_string())),
        }
    }
    failed
}

/// Deletes the volume's keys (a serving controller stops at its next guarded
/// transaction), then its copies on every replica that held one. Returns the copies that
/// could not be deleted (an unreachable replica), with why.
pub fn delete_volume(
    coord: &Coord,
    name: &str,
    timeout: Duration,
) -> Result<Vec<(ReplicaId, String)>, AdminError> {
    let spec = coord
        .volume(name)?
        .ok_or_else(|| CoordError::NoVolume(name.to_string()))?;
    let mut holders: Vec<ReplicaId> = spec.placement.clone();
    if let Ok(state) = coord.sync_state(name) {
        holders.extend(state.in_sync);
        holders.extend(state.out.into_iter().map(|o| o.replica));
    }
    holders.sort();
    holders.dedup();
    coord.delete_volume(name)?;
    Ok(delete_copies(coord, name, holders.iter(), timeout))
}

/// A replica outside the in-sync set, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutReport {
    pub replica: ReplicaId,
    pub left_gen: u64,
    /// Generations since it left.
    pub lag_gens: u64,
    /// Whether its server is alive (a serving controller resyncs it then).
    pub alive: bool,
}

/// A replica holding a copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HolderReport {
    pub replica: ReplicaId,
    pub addr: String,
    pub alive: bool,
    pub in_sync: bool,
}

/// What `haven volume status` shows, read from etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeReport {
    pub name: String,
    pub size: u64,
    pub replicas: u32,
    pub min_in_sync: u32,
    pub distinct_sites: bool,
    pub placement: Vec<ReplicaId>,
    /// The serving controller (candidate name) and its epoch.
    pub controller: Option<ControllerReport>,
    /// The epoch of the controller that last wrote the in-sync record (0: none yet).
    pub record_epoch: u64,
    pub gen: u64,
    pub in_sync: Vec<ReplicaId>,
    pub out: Vec<OutReport>,
    pub holders: Vec<HolderReport>,
    /// Resyncs in progress, as the serving controller last published them.
    pub resyncing: Vec<crate::coord::ResyncProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControllerReport {
    pub name: String,
    pub epoch: u64,
}

/// The report of one volume.
pub fn volume_report(coord: &Coord, name: &str) -> Result<VolumeReport, AdminError> {
    let spec = coord
        .volume(name)?
        .ok_or_else(|| CoordError::NoVolume(name.to_string()))?;
    let addrs = addresses(coord)?;
    report(coord, spec, &addrs)
}

/// The reports of every volume, by name.
pub fn volume_reports(coord: &Coord) -> Result<Vec<VolumeReport>, AdminError> {
    let addrs = addresses(coord)?;
    let mut specs = coord.volumes()?;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
        .into_iter()
        .map(|spec| report(coord, spec, &addrs))
        .collect()
}

fn report(
    coord: &Coord,
    spec: VolumeSpec,
    addrs: &BTreeMap<ReplicaId, (String, bool)>,
) -> Result<VolumeReport, AdminError> {
    let state = coord.sync_state(&spec.name)?;
    let controller = coord
        .leader(&spec.name)?
        .map(|(name, epoch)| ControllerReport { name, epoch });
    let resyncing = match (&controller, coord.progress(&spec.name)?) {
        (Some(c), Some(p)) if p.epoch == c.epoch => p.resyncing,
        _ => vec![],
    };
    let alive = |id: &str| addrs.get(id).is_some_and(|(_, alive)| *alive);
    let out = state
        .out
        .iter()
        .map(|o| OutReport {
            replica: o.replica.clone(),
            left_gen: o.left_gen,
            lag_gens: state.gen.saturating_sub(o.left_gen),
            alive: alive(&o.replica),
        })
        .collect();
    let mut ids: Vec<&ReplicaId> = state
        .in_sync
        .iter()
        .chain(state.out.iter().map(|o| &o.replica))
        .collect();
    ids.sort();
    ids.dedup();
    let holders = ids
        .into_iter()
        .map(|id| HolderReport {
            replica: id.clone(),
            addr: addrs.get(id).map(|(a, _)| a.clone()).unwrap_or_default(),
            alive: alive(id),
            in_sync: state.in_sync.contains(id),
        })
        .collect();
    Ok(VolumeReport {
        name: spec.name,
        size: spec.size,
        replicas: spec.replicas,
        min_in_sync: spec.min_in_sync,
        distinct_sites: spec.distinct_sites,
        placement: spec.placement,
        controller,
        record_epoch: state.epoch,
        gen: state.gen,
        in_sync: state.in_sync,
        out,
        holders,
        resyncing,
    })
}
