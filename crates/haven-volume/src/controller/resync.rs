//! The resync worker: brings the replicas of the record's `out` list back (invariant 5).
//!
//! One unit of work = one replica: HELLO it (creating its copy when its disk lost it);
//! same instance and a source whose dirty maps reach back to its `left_gen` -> copy the
//! regions written since (`dirty`); otherwise every region (`full`, copying only those
//! whose checksums differ). It becomes a resync target first (every new write reaches it
//! too), then each batch is copied under the batch's region locks and verified by
//! checksums; then it rejoins the in-sync set (guarded transaction, new gen). A failure
//! drops it as a target; it is tried again after a pause.
//!
//! It also watches in-sync replicas kept in the set while unreachable (min-in-sync): when
//! one answers again the volume stops, so that a new takeover reconciles it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::copy::{self, CopyError, CopyStamp};
use super::member::{next_session, Member};
use super::takeover::{addresses, resolve, seal};
use super::volume::{RejoinError, ResyncProgress, Volume};
use crate::coord::{OutOfSync, ReplicaId};
use crate::region::region_count;
use crate::replica::{ReplicaClient, ReplicaError};

/// How long a replica whose resync failed waits before the next try.
const RETRY: Duration = Duration::from_secs(2);

/// What one step of the worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A replica rejoined the in-sync set.
    Rejoined(ReplicaId),
    /// A replica's resync failed (it is tried again later).
    Failed(ReplicaId, String),
    /// Nothing to do now.
    Idle,
}

/// The background job of one serving volume (name, status, unit of work).
#[derive(Debug)]
pub struct ResyncWorker {
    volume: Arc<Volume>,
    not_before: BTreeMap<ReplicaId, Instant>,
}

impl ResyncWorker {
    pub fn new(volume: Arc<Volume>) -> ResyncWorker {
        ResyncWorker {
            volume,
            not_before: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> String {
        format!("resync {}", self.volume.name)
    }

    /// Replicas being copied now, with their progress.
    pub fn status(&self) -> Vec<ResyncProgress> {
        self.volume.status().resyncing
    }

    /// One unit of work: the next replica that is out and due.
    pub fn step(&mut self) -> Step {
        let volume = Arc::clone(&self.volume);
        if volume.is_stopped() {
            return Step::Idle;
        }
        let (out, dead): (Vec<OutOfSync>, Vec<ReplicaId>) = {
            let view = volume.view();
            let dead = view
                .in_sync
                .iter()
                .filter(|m| m.is_dead())
                .map(|m| m.id.clone())
                .collect();
            (view.state.out.clone(), dead)
        };
        let now = Instant::now();
        let not_before = self.not_before.clone();
        let due = |id: &ReplicaId| not_before.get(id).map_or(true, |t| *t <= now);
        if !dead.iter().any(due) && !out.iter().any(|o| due(&o.replica)) {
            return Step::Idle;
        }
        let Ok(addrs) = addresses(&volume.coord) else {
            return Step::Idle; // etcd briefly away: the keep-alive decides about serving
        };
        for id in dead.iter().filter(|id| due(id)) {
            self.not_before.insert(id.clone(), now + RETRY);
            if let Ok((_, state)) = seal(
                &addrs,
                id,
                &volume.name,
                (volume.epoch(), next_session()),
                volume.links.timeout,
            ) {
                let view = volume.view();
                if view.state.instances.get(id) == Some(&format!("{:032x}", state.instance)) {
                    drop(view);
                    volume.stop(format!(
                        "in-sync replica {id} answers again; taking over anew to reconcile it"
                    ));
                    return Step::Idle;
                }
            }
        }
        for o in out {
            if !due(&o.replica) || !addrs.get(&o.replica).is_some_and(|(_, alive)| *alive) {
                continue;
            }
            let id = o.replica.clone();
            return match self.resync(&o, &addrs.get(&id).expect("checked").0) {
                Ok(()) => {
                    self.not_before.remove(&id);
                    eprintln!("haven: volume {}: {id} is in sync again", volume.name);
                    Step::Rejoined(id)
                }
                Err(why) => {
                    volume.drop_target(&id);
                    self.not_before.insert(id.clone(), Instant::now() + RETRY);
                    eprintln!("haven: volume {}: resync of {id}: {why}", volume.name);
                    Step::Failed(id, why)
                }
            };
        }
        Step::Idle
    }

    /// Resyncs one replica; Err says why it did not rejoin.
    fn resync(&mut self, out: &OutOfSync, addr: &str) -> Result<(), String> {
        let v = Arc::clone(&self.volume);
        let (epoch, timeout) = (v.epoch(), v.links.timeout);
        let id = out.replica.as_str();
        let addr = resolve(addr).map_err(|e| e.to_string())?;
        let fenced = |e: &ReplicaError| {
            if matches!(e, ReplicaError::Fenced { .. }) {
                v.stop(e.to_string());
            }
            e.to_string()
        };
        // A new session for the target's links: whatever a link to it given up earlier
        // still has in flight (a write TCP delivers once a partition heals) is refused from
        // this HELLO on, so it cannot land over the regions copied below.
        let session = next_session();
        let mut target = ReplicaClient::connect(addr, timeout).map_err(|e| e.to_string())?;
        let state = match target.hello(&v.name, epoch, session) {
            Ok(state) => state,
            Err(ReplicaError::NoVolume { .. }) => {
                // Its disk lost the copy: a new one, rebuilt in full.
                target
                    .create_volume(&v.name, v.size)
                    .map_err(|e| e.to_string())?;
                target
                    .hello(&v.name, epoch, session)
                    .map_err(|e| fenced(&e))?
            }
            Err(e) => return Err(fenced(&e)),
        };
        if state.size != v.size {
            return Err(format!(
                "its copy has {} bytes, the volume {}; delete the copy on that replica",
                state.size, v.size
            ));
        }
        let same_instance =
            v.view().state.instances.get(id) == Some(&format!("{:032x}", state.instance));
        let (source_id, source_session) = v
            .view()
            .in_sync
            .iter()
            .find(|m| !m.is_dead())
            .map(|m| (m.id.clone(), m.session))
            .ok_or("no in-sync replica to copy from")?;
        let addrs = addresses(&v.coord).map_err(|e| e.to_string())?;
        // The source's serving links keep their session: this one joins it.
        let (mut source, _) = seal(
            &addrs,
            &source_id,
            &v.name,
            (epoch, source_session),
            timeout,
        )
        .map_err(|e| fenced(&e))?;

        // From here every new write reaches the target too; writes already in flight
        // are done when add_target returns, so the source's maps hold them.
        let (member, _) =
            Member::connect(id, addr, &v.name, (epoch, session), timeout, v.links.conns)
                .map_err(|e| fenced(&e))?;
        let failed = v.add_target(Arc::new(member));
        // The target's own maps too: it may hold writes the source never got (a
        // controller that died mid-write, a write refused while it was a target).
        let dirty = if same_instance {
            let theirs = source
                .dirty_since(epoch, out.left_gen)
                .map_err(|e| fenced(&e))?;
            let ours = target
                .dirty_since(epoch, out.left_gen)
                .map_err(|e| fenced(&e))?;
            theirs.zip(ours).map(|(mut map, ours)| {
                map.union_with(&ours);
                map
            })
        } else {
            None
        };
        let (mode, map) = match dirty {
            Some(map) => ("dirty", map),
            None => ("full", copy::all_regions(v.size)),
        };
        let total = map.len();
        let record = |done: u64| {
            let mut progress = v.progress.lock().unwrap_or_else(|e| e.into_inner());
            progress.insert(
                id.to_string(),
                ResyncProgress {
                    replica: id.to_string(),
                    mode: mode.into(),
                    regions_done: done,
                    regions_total: total,
                },
            );
        };
        record(0);
        eprintln!(
            "haven: volume {}: resyncing {id} from {source_id}: {total} of {} regions ({mode})",
            v.name,
            region_count(v.size)
        );
        let mut done = 0;
        for run in copy::runs(&map, copy::BATCH) {
            if failed.load(Ordering::SeqCst) {
                return Err("a write to it failed during the resync".into());
            }
            if v.is_stopped() {
                return Err("the volume stopped serving".into());
            }
            let held = v.regions.lock(run.clone());
            let stamp = CopyStamp {
                epoch,
                gen: v.view().state.gen,
                settled: v.settled(),
            };
            let copied = if mode == "full" {
                copy::differing(&mut source, &mut target, epoch, &run).and_then(|differ| {
                    copy::runs(&differ, copy::BATCH).iter().try_for_each(|sub| {
                        copy::copy_run(&mut source, &mut target, stamp, v.size, sub)
                    })
                })
            } else {
                copy::copy_run(&mut source, &mut target, stamp, v.size, &run)
            };
            drop(held);
            copied.map_err(|e| match &e {
                CopyError::Source(r) | CopyError::Target(r) => fenced(r),
                CopyError::Mismatch { .. } => e.to_string(),
            })?;
            done += run.end - run.start;
            record(done);
        }
        target.flush(epoch).map_err(|e| fenced(&e))?;
        match v.rejoin(id, state.instance) {
            Ok(()) => Ok(()),
            Err(RejoinError::Failed(why)) | Err(RejoinError::Superseded(why)) => Err(why),
        }
    }
}
