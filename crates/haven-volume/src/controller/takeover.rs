//! Takeover (invariant 4): what a controller does between winning the lease and serving.
//!
//! ```text
//! read spec + in-sync record ─▶ HELLO(epoch) every in-sync replica, in parallel
//!   (Fenced: a newer controller exists ─▶ give up; unreachable or another instance ─▶ out,
//!    unless that leaves fewer than min_in_sync: then they stay in and writes fail)
//! ─▶ guarded txn: new in-sync set, gen + 1
//! ─▶ reconcile: union of the sealed replicas' unsettled regions (unknown: every region),
//!    checksums compared, differing regions copied from the first sealed replica
//! ─▶ SETTLE_ALL + FLUSH on each ─▶ worker connections ─▶ Volume
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::copy::{self, CopyError, CopyStamp};
use super::member::{next_session, Member};
use super::volume::{Links, Volume};
use crate::coord::{Coord, CoordError, Leadership, OutOfSync, ReplicaId, SyncState};
use crate::region::{region_count, RegionMap};
use crate::replica::{ReplicaClient, ReplicaError, VolumeState};

/// Regions whose checksums are compared per request during a reconcile.
const COMPARE_BATCH: u64 = 4096;

/// How a controller reaches its replicas.
#[derive(Debug, Clone, Copy)]
pub struct TakeoverOptions {
    /// Connect and per-request timeout of replica connections.
    pub replica_timeout: Duration,
    /// Connections (and worker threads) per replica while serving.
    pub conns_per_replica: usize,
}

impl Default for TakeoverOptions {
    fn default() -> TakeoverOptions {
        TakeoverOptions {
            replica_timeout: Duration::from_secs(3),
            conns_per_replica: 4,
        }
    }
}

/// Why a takeover did not end in serving.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// A replica has seen a higher epoch: another controller is newer. Back off.
    #[error("volume {volume:?}: a newer controller exists ({detail})")]
    Fenced { volume: String, detail: String },
    #[error("volume {volume:?}: no in-sync replica answered ({detail}); start the replicas (`haven replica serve`)")]
    NoReplica { volume: String, detail: String },
    #[error("volume {volume:?}: reconciling the in-sync replicas failed: {detail}")]
    Reconcile { volume: String, detail: String },
    #[error(transparent)]
    Coord(#[from] CoordError),
}

/// Replica id -> its address, from the registry.
pub(super) fn addresses(coord: &Coord) -> Result<BTreeMap<ReplicaId, (String, bool)>, CoordError> {
    Ok(coord
        .replicas()?
        .into_iter()
        .map(|r| (r.id, (r.addr, r.alive)))
        .collect())
}

pub(super) fn resolve(addr: &str) -> Result<SocketAddr, ReplicaError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ReplicaError::Unreachable {
            replica: addr.to_string(),
            detail: "the address does not resolve".into(),
        })
}

/// Connects to replica `id` and seals its copy of `volume` with `epoch` and `session`.
pub(super) fn seal(
    addrs: &BTreeMap<ReplicaId, (String, bool)>,
    id: &str,
    volume: &str,
    (epoch, session): (u64, u64),
    timeout: Duration,
) -> Result<(ReplicaClient, VolumeState), ReplicaError> {
    let (addr, _) = addrs.get(id).ok_or_else(|| ReplicaError::Unreachable {
        replica: id.to_string(),
        detail: "not in the replica registry".into(),
    })?;
    let mut client = ReplicaClient::connect(resolve(addr)?, timeout)?;
    let state = client.hello(volume, epoch, session)?;
    Ok((client, state))
}

/// A replica's answer to the takeover's HELLO.
type Sealing = Result<(ReplicaClient, VolumeState), ReplicaError>;

struct Sealed {
    id: ReplicaId,
    client: ReplicaClient,
    state: VolumeState,
}

/// Takes over `leadership.volume` (invariant 4) and returns the volume ready to serve.
/// `lease_until`: until when the lease is certain (the campaign's start + its TTL).
pub fn take_over(
    coord: &Coord,
    leadership: Leadership,
    options: &TakeoverOptions,
    lease_until: Instant,
) -> Result<Volume, TakeoverError> {
    let name = leadership.volume.clone();
    let epoch = leadership.epoch;
    let spec = coord
        .volume(&name)?
        .ok_or_else(|| CoordError::NoVolume(name.clone()))?;
    let state = coord.sync_state(&name)?;
    let addrs = addresses(coord)?;
    let timeout = options.replica_timeout;
    // One session for every link this takeover opens: the members below reuse the seals'.
    let session = next_session();
    let answers: Vec<(ReplicaId, Sealing)> = thread::scope(|s| {
        let handles: Vec<_> = state
            .in_sync
            .iter()
            .map(|id| {
                let (addrs, name) = (&addrs, &name);
                (
                    id,
                    s.spawn(move || seal(addrs, id, name, (epoch, session), timeout)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(id, h)| {
                let answer = h.join().unwrap_or_else(|_| {
                    Err(ReplicaError::Failed {
                        replica: id.clone(),
                        detail: "sealing it panicked".into(),
                    })
                });
                (id.clone(), answer)
            })
            .collect()
    });
    let mut sealed: Vec<Sealed> = vec![];
    let mut failed: Vec<(ReplicaId, String)> = vec![];
    for (id, answer) in answers {
        match answer {
            Err(e @ ReplicaError::Fenced { .. }) => {
                return Err(TakeoverError::Fenced {
                    volume: name,
                    detail: e.to_string(),
                })
            }
            Err(e) => failed.push((id, e.to_string())),
            Ok((client, vs)) => {
                let expected = state.instances.get(&id);
                if expected != Some(&format!("{:032x}", vs.instance)) {
                    failed.push((
                        id,
                        "its copy is another instance (a lost disk): full rebuild".into(),
                    ));
                } else if vs.size != spec.size {
                    failed.push((
                        id,
                        format!("its copy has {} bytes, the volume {}", vs.size, spec.size),
                    ));
                } else {
                    sealed.push(Sealed {
                        id,
                        client,
                        state: vs,
                    });
                }
            }
        }
    }
    for (id, why) in &failed {
        eprintln!("haven: volume {name}: in-sync replica {id} not sealed: {why}");
    }
    if sealed.is_empty() {
        let detail = failed
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TakeoverError::NoReplica {
            volume: name,
            detail: if detail.is_empty() {
                "the in-sync set is empty".into()
            } else {
                detail
            },
        });
    }
    let min = spec.min_in_sync.max(1) as usize;
    let mut next = state.clone();
    if sealed.len() >= min {
        out_of_sync(&mut next, failed.iter().map(|(id, _)| id), state.gen);
    }
    next.gen += 1;
    coord.update_sync_state(&leadership, &next)?;
    next.epoch = epoch;

    // Reconcile what may have been in flight when the last controller stopped.
    let stamp = CopyStamp {
        epoch,
        gen: next.gen,
        settled: 0,
    };
    let broken = reconcile(&name, spec.size, &mut sealed, stamp)?;
    if !broken.is_empty() {
        sealed.retain(|s| !broken.iter().any(|(id, _)| *id == s.id));
        if sealed.len() < min {
            return Err(TakeoverError::Reconcile {
                volume: name,
                detail: format!("{broken:?}"),
            });
        }
        let left_gen = next.gen;
        out_of_sync(&mut next, broken.iter().map(|(id, _)| id), left_gen);
        next.gen += 1;
        coord.update_sync_state(&leadership, &next)?;
        next.epoch = epoch;
    }
    for s in &mut sealed {
        let done = s
            .client
            .settle_all(epoch)
            .and_then(|()| s.client.flush(epoch));
        match done {
            Ok(()) => {}
            Err(e @ ReplicaError::Fenced { .. }) => {
                return Err(TakeoverError::Fenced {
                    volume: name,
                    detail: e.to_string(),
                })
            }
            // It fails the first write and leaves then.
            Err(e) => eprintln!("haven: volume {name}: settling {}: {e}", s.id),
        }
    }
    let members = next
        .in_sync
        .iter()
        .map(|id| {
            let member = match sealed.iter().find(|s| s.id == *id) {
                None => Member::dead(id, "unreachable at takeover".into()),
                Some(_) => {
                    let addr = addrs.get(id).map(|(a, _)| a.as_str()).unwrap_or("");
                    resolve(addr)
                        .and_then(|addr| {
                            Member::connect(
                                id,
                                addr,
                                &name,
                                (epoch, session),
                                timeout,
                                options.conns_per_replica,
                            )
                        })
                        .map(|(m, _)| m)
                        .unwrap_or_else(|e| Member::dead(id, e.to_string()))
                }
            };
            Arc::new(member)
        })
        .collect();
    let links = Links {
        timeout,
        conns: options.conns_per_replica,
    };
    Ok(Volume::new(
        coord.clone(),
        leadership,
        spec.size,
        spec.min_in_sync,
        next,
        members,
        links,
        lease_until,
    ))
}

/// Moves `ids` from the in-sync set to `out`, left at `left_gen`.
fn out_of_sync<'a>(state: &mut SyncState, ids: impl Iterator<Item = &'a ReplicaId>, left_gen: u64) {
    for id in ids {
        state.in_sync.retain(|r| r != id);
        state.out.retain(|o| o.replica != *id);
        state.out.push(OutOfSync {
            replica: id.clone(),
            left_gen,
        });
    }
}

/// Copies the regions that may differ from the first sealed replica to the others;
/// returns the targets that failed (with why).
fn reconcile(
    name: &str,
    size: u64,
    sealed: &mut [Sealed],
    stamp: CopyStamp,
) -> Result<Vec<(ReplicaId, String)>, TakeoverError> {
    let mut broken: Vec<(ReplicaId, String)> = vec![];
    let Some((source, targets)) = sealed.split_first_mut() else {
        return Ok(broken);
    };
    if targets.is_empty() {
        return Ok(broken);
    }
    let mut map = RegionMap::new(region_count(size));
    let mut unknown = false;
    for s in std::iter::once(&*source).chain(targets.iter()) {
        match &s.state.unsettled {
            Some(m) => map.union_with(m),
            None => unknown = true,
        }
    }
    if unknown {
        map = copy::all_regions(size);
    }
    let mut copied = 0u64;
    for target in targets.iter_mut() {
        let result = (|| -> Result<(), CopyError> {
            for run in copy::runs(&map, COMPARE_BATCH) {
                let differ =
                    copy::differing(&mut source.client, &mut target.client, stamp.epoch, &run)?;
                for sub in copy::runs(&differ, copy::BATCH) {
                    copy::copy_run(&mut source.client, &mut target.client, stamp, size, &sub)?;
                    copied += sub.end - sub.start;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if e.is_fenced() => {
                return Err(TakeoverError::Fenced {
                    volume: name.to_string(),
                    detail: e.to_string(),
                })
            }
            Err(e @ CopyError::Source(_)) => {
                return Err(TakeoverError::Reconcile {
                    volume: name.to_string(),
                    detail: format!("source {}: {e}", source.id),
                })
            }
            Err(e) => broken.push((target.id.clone(), e.to_string())),
        }
    }
    if !map.is_empty() {
        eprintln!(
            "haven: volume {name}: reconciled {} unsettled region(s){} from {}: {copied} copied",
            map.len(),
            if unknown {
                " (every region: a replica restarted)"
            } else {
                ""
            },
            source.id
        );
    }
    Ok(broken)
}
