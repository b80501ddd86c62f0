//! The served volume: [`BlockDevice`] over the in-sync replicas of one epoch.
//!
//! ```text
//! write ─▶ region locks ─▶ view (read) ─▶ seq/settled ─▶ fan_out to in-sync + resyncing
//!       ◀─ decide(answers): Ack | RemoveThenAck (guarded txn first) | Refuse | Fenced
//! read  ─▶ one in-sync replica (round robin); on failure: remove it, try the next
//! flush ─▶ every in-sync replica (and the resyncing ones, best effort)
//! ```
//! Locks, in this order: region locks, then `view` (writes hold it shared for their
//! fan-out; changes of the in-sync set hold it exclusive, so none straddles a write),
//! then the small mutexes (`seqs`, `stopped`, `lease_until`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::fanout::{decide, Answer, Decision, SettledTracker};
use super::locks::RegionLocks;
use super::member::{fan_out, Member, Op, Stamp};
use crate::coord::{Coord, CoordError, Leadership, OutOfSync, ReplicaId, SyncState};

/// A FLUSH starts a new generation when the current one is at least this old: a replica
/// that fails later is then resynced from the regions written since the last complete
/// flush, not since the last change of the in-sync set (which may be days ago). With the
/// replicas' 64 kept generations this keeps at least ~10 minutes of history.
const GEN_PERIOD: Duration = Duration::from_secs(10);

/// ... or sooner, once the writes of the current generation touched this fraction of the
/// volume's regions (1 / GEN_SHARE): a replica that leaves then resyncs at most about that
/// much beyond what was written since it left (a bulk load followed by a FLUSH is not
/// copied again), and 64 kept generations still cover a whole volume's worth of writes.
/// At most one guarded etcd update per that many region writes.
const GEN_SHARE: u64 = 64;
use crate::nbd::{BlockDevice, IoFailure};
use crate::region::regions_of;
use crate::replica::ReplicaError;

/// Who the volume writes to, and the in-sync record as last written.
#[derive(Debug)]
pub(super) struct View {
    pub state: SyncState,
    pub in_sync: Vec<Arc<Member>>,
    pub resyncing: Vec<Target>,
}

/// A replica being resynced: it gets every write, and a failure there only marks it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub member: Arc<Member>,
    pub failed: Arc<AtomicBool>,
}

pub use crate::coord::ResyncProgress;

/// What a serving volume reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStatus {
    pub volume: String,
    pub epoch: u64,
    pub gen: u64,
    pub settled: u64,
    pub in_sync: Vec<ReplicaId>,
    pub resyncing: Vec<ResyncProgress>,
    /// Resyncs finished in this epoch (the replica rejoined), oldest first.
    pub resynced: Vec<ResyncProgress>,
    pub out: Vec<OutOfSync>,
    /// Why it stopped serving, once it did.
    pub stopped: Option<String>,
}

/// Timeouts and sizes of the replica connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Links {
    pub timeout: Duration,
    pub conns: usize,
}

/// One epoch's service of a volume. Made by [`super::take_over`]; stops for good once
/// fenced, superseded, or told to.
pub struct Volume {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) min_in_sync: u32,
    pub(super) coord: Coord,
    pub(super) leadership: Leadership,
    pub(super) links: Links,
    view: RwLock<View>,
    seqs: Mutex<SettledTracker>,
    pub(super) regions: RegionLocks,
    stopping: AtomicBool,
    stopped: Mutex<Option<String>>,
    /// Writes are acknowledged only before this instant (the lease is certain until then).
    lease_until: Mutex<Instant>,
    /// The gen when the last flush that reached every in-sync replica began: writes
    /// acknowledged before it are durable, later ones may not be.
    flushed_gen: AtomicU64,
    /// When the current generation began (see [`GEN_PERIOD`]).
    gen_started: Mutex<Instant>,
    /// Regions the writes of the current generation touched (with repeats; see
    /// [`GEN_SHARE`]).
    gen_touched: AtomicU64,
    next_read: AtomicUsize,
    pub(super) progress: Mutex<BTreeMap<ReplicaId, ResyncProgress>>,
    resynced: Mutex<Vec<ResyncProgress>>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.name)
            .field("epoch", &self.leadership.epoch)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Volume {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        coord: Coord,
        leadership: Leadership,
        size: u64,
        min_in_sync: u32,
        state: SyncState,
        in_sync: Vec<Arc<Member>>,
        links: Links,
        lease_until: Instant,
    ) -> Volume {
        Volume {
            name: leadership.volume.clone(),
            size,
            min_in_sync,
            coord,
            links,
            flushed_gen: AtomicU64::new(state.gen),
            view: RwLock::new(View {
                state,
                in_sync,
                resyncing: vec![],
            }),
            leadership,
            seqs: Mutex::new(SettledTracker::new(0)),
            regions: RegionLocks::default(),
            stopping: AtomicBool::new(false),
            stopped: Mutex::new(None),
            lease_until: Mutex::new(lease_until),
            next_read: AtomicUsize::new(0),
            progress: Mutex::new(BTreeMap::new()),
            resynced: Mutex::new(vec![]),
            gen_started: Mutex::new(Instant::now()),
            gen_touched: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn epoch(&self) -> u64 {
        self.leadership.epoch
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub(super) fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn settled(&self) -> u64 {
        lock(&self.seqs).settled()
    }

    /// Stops serving: every request from now on answers Shutdown. The first reason stays.
    pub fn stop(&self, reason: impl Into<String>) {
        let mut stopped = lock(&self.stopped);
        if stopped.is_none() {
            *stopped = Some(reason.into());
        }
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Why it stopped, once it did.
    pub fn stop_reason(&self) -> Option<String> {
        lock(&self.stopped).clone()
    }

    /// The lease is certain until `until` (set by the keep-alive).
    pub(super) fn extend_lease(&self, until: Instant) {
        let mut current = lock(&self.lease_until);
        *current = (*current).max(until);
    }

    pub fn status(&self) -> VolumeStatus {
        let view = self.view();
        let progress = lock(&self.progress);
        VolumeStatus {
            volume: self.name.clone(),
            epoch: self.leadership.epoch,
            gen: view.state.gen,
            settled: self.settled(),
            in_sync: view.state.in_sync.clone(),
            resyncing: progress.values().cloned().collect(),
            resynced: lock(&self.resynced).clone(),
            out: view.state.out.clone(),
            stopped: self.stop_reason(),
        }
    }

    fn shutdown(&self) -> IoFailure {
        IoFailure::Shutdown(format!(
            "volume {:?}, epoch {}: {}",
            self.name,
            self.leadership.epoch,
            self.stop_reason()
                .unwrap_or_else(|| "no longer served here".into())
        ))
    }

    fn check_serving(&self) -> Result<(), IoFailure> {
        if self.is_stopped() {
            return Err(self.shutdown());
        }
        Ok(())
    }

    /// Last check before a write is acknowledged: still serving, and the lease certain.
    fn check_acknowledge(&self) -> Result<(), IoFailure> {
        if Instant::now() >= *lock(&self.lease_until) {
            self.stop("the lease was not refreshed in time");
        }
        self.check_serving()
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), IoFailure> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(IoFailure::Invalid(format!(
                "{offset}+{len} is beyond the volume's size {}",
                self.size
            ))),
        }
    }

    /// WRITE, WRITE_ZEROES, TRIM: invariants 1 and 2.
    fn mutate(&self, op: Op, offset: u64, len: u64) -> Result<(), IoFailure> {
        self.check_serving()?;
        self.check_range(offset, len)?;
        let regions = regions_of(offset, len);
        self.gen_touched
            .fetch_add(regions.end - regions.start, Ordering::Relaxed);
        let _held = self.regions.lock(regions);
        let view = self.view();
        let (seq, settled) = lock(&self.seqs).begin();
        let stamp = Stamp {
            epoch: self.leadership.epoch,
            gen: view.state.gen,
            seq,
            settled,
        };
        let members: Vec<&Member> = view
            .in_sync
            .iter()
            .map(|m| &**m)
            .chain(view.resyncing.iter().map(|t| &*t.member))
            .collect();
        let replies = fan_out(&members, op, stamp);
        let n = view.in_sync.len();
        let mut answers: Vec<(ReplicaId, Answer)> = view
            .in_sync
            .iter()
            .zip(&replies)
            .map(|(m, r)| (m.id.clone(), Answer::of(r)))
            .collect();
        for (target, reply) in view.resyncing.iter().zip(&replies[n..]) {
            match reply {
                Err(ReplicaError::Fenced { .. }) => {
                    answers.push((target.member.id.clone(), Answer::Fenced))
                }
                Err(_) => target.failed.store(true, Ordering::SeqCst),
                Ok(_) => {}
            }
        }
        let targets: Vec<Arc<AtomicBool>> = view
            .resyncing
            .iter()
            .map(|t| Arc::clone(&t.failed))
            .collect();
        drop(view);
        if let Err(e) = self.conclude(&answers, &replies, stamp.gen) {
            // The targets may hold a write the in-sync replicas do not: copy again.
            for failed in targets {
                failed.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        self.check_acknowledge()?;
        lock(&self.seqs).finish(seq);
        Ok(())
    }

    /// Acts on a decision; Ok means the request may be acknowledged.
    fn conclude(
        &self,
        answers: &[(ReplicaId, Answer)],
        replies: &[super::member::Reply],
        gen: u64,
    ) -> Result<(), IoFailure> {
        match decide(answers, self.min_in_sync) {
            Decision::Ack => Ok(()),
            Decision::RemoveThenAck(ids) => self.remove(&ids, gen),
            Decision::Refuse { detail, no_space } => Err(if no_space {
                IoFailure::NoSpace(detail)
            } else {
                IoFailure::Io(detail)
            }),
            Decision::Fenced => {
                let why = replies
                    .iter()
                    .find_map(|r| match r {
                        Err(e @ ReplicaError::Fenced { .. }) => Some(e.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "fenced by a replica".into());
                self.stop(why);
                Err(self.shutdown())
            }
        }
    }

    /// Invariant 2: takes `ids` out of the in-sync set (guarded) before the request that
    /// found them failing is acknowledged. `gen`: the failing request's; the replica left
    /// at the lower of it and the gen of the last complete flush (writes after that may
    /// not be durable on it).
    fn remove(&self, ids: &[ReplicaId], gen: u64) -> Result<(), IoFailure> {
        let mut view = self.view_mut();
        let gone: Vec<ReplicaId> = ids
            .iter()
            .filter(|id| view.in_sync.iter().any(|m| &m.id == *id))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(()); // another request took them out already
        }
        let left = view.in_sync.len() - gone.len();
        if left < self.min_in_sync.max(1) as usize {
            return Err(IoFailure::Io(format!(
                "{} failed and only {left} in-sync replica(s) would be left (the volume needs {})",
                gone.join(", "),
                self.min_in_sync
            )));
        }
        let left_gen = gen.min(self.flushed_gen.load(Ordering::SeqCst));
        let mut next = view.state.clone();
        next.in_sync.retain(|r| !gone.contains(r));
        next.out.retain(|o| !gone.contains(&o.replica));
        next.out.extend(gone.iter().map(|id| OutOfSync {
            replica: id.clone(),
            left_gen,
        }));
        next.gen += 1;
        match self.coord.update_sync_state(&self.leadership, &next) {
            Ok(()) => {
                next.epoch = self.leadership.epoch;
                view.state = next;
                view.in_sync.retain(|m| !gone.contains(&m.id));
                eprintln!(
                    "haven: volume {}: {} left the in-sync set (gen {})",
                    self.name,
                    gone.join(", "),
                    view.state.gen
                );
                Ok(())
            }
            Err(e) => {
                drop(view);
                self.stop(format!(
                    "could not take {} out of the in-sync set: {e}",
                    gone.join(", ")
                ));
                Err(self.shutdown())
            }
        }
    }

    /// Starts a new generation (guarded, like every change of the in-sync record) when the
    /// current one is older than [`GEN_PERIOD`] or touched a [`GEN_SHARE`]th of the
    /// regions. Taking the view for writing waits for the
    /// writes in flight, so every write acknowledged before the FLUSH that follows carries
    /// an older gen. An etcd hiccup only skips the bump; a newer controller stops this one.
    fn advance_gen_if_due(&self) -> Result<(), IoFailure> {
        {
            let mut started = lock(&self.gen_started);
            let share = (self.size.div_ceil(crate::region::REGION_SIZE) / GEN_SHARE).max(1);
            if started.elapsed() < GEN_PERIOD && self.gen_touched.load(Ordering::Relaxed) < share {
                return Ok(());
            }
            *started = Instant::now();
            self.gen_touched.store(0, Ordering::Relaxed);
        }
        let mut view = self.view_mut();
        let mut next = view.state.clone();
        next.gen += 1;
        match self.coord.update_sync_state(&self.leadership, &next) {
            Ok(()) => {
                next.epoch = self.leadership.epoch;
                view.state = next;
                Ok(())
            }
            Err(e @ CoordError::Superseded { .. }) => {
                drop(view);
                self.stop(format!("could not start a new generation: {e}"));
                Err(self.shutdown())
            }
            Err(e) => {
                eprintln!(
                    "haven: volume {}: the generation stays {} for now: {e}",
                    self.name, view.state.gen
                );
                Ok(())
            }
        }
    }

    /// Adds a resync target: every write from now on reaches it. Returns once no write
    /// that started before is still in flight.
    pub(super) fn add_target(&self, member: Arc<Member>) -> Arc<AtomicBool> {
        let failed = Arc::new(AtomicBool::new(false));
        let mut view = self.view_mut();
        view.resyncing.retain(|t| t.member.id != member.id);
        view.resyncing.push(Target {
            member,
            failed: Arc::clone(&failed),
        });
        failed
    }

    pub(super) fn drop_target(&self, id: &str) {
        self.view_mut().resyncing.retain(|t| t.member.id != id);
        lock(&self.progress).remove(id);
    }

    /// Invariant 5: a caught-up target joins the in-sync set (guarded, new gen).
    pub(super) fn rejoin(&self, id: &str, instance: u128) -> Result<(), RejoinError> {
        let mut view = self.view_mut();
        let Some(pos) = view.resyncing.iter().position(|t| t.member.id == id) else {
            return Err(RejoinError::Failed(
                "it is no longer a resync target".into(),
            ));
        };
        if view.resyncing[pos].failed.load(Ordering::SeqCst) {
            return Err(RejoinError::Failed(
                "a write to it failed while it was resynced".into(),
            ));
        }
        let mut next = view.state.clone();
        next.out.retain(|o| o.replica != id);
        if !next.in_sync.iter().any(|r| r == id) {
            next.in_sync.push(id.to_string());
        }
        next.instances
            .insert(id.to_string(), format!("{instance:032x}"));
        next.gen += 1;
        match self.coord.update_sync_state(&self.leadership, &next) {
            Ok(()) => {
                next.epoch = self.leadership.epoch;
                view.state = next;
                let target = view.resyncing.remove(pos);
                view.in_sync.push(target.member);
                drop(view);
                if let Some(done) = lock(&self.progress).remove(id) {
                    lock(&self.resynced).push(done);
                }
                Ok(())
            }
            Err(e) => {
                drop(view);
                self.stop(format!("could not add {id} to the in-sync set: {e}"));
                Err(RejoinError::Superseded(e.to_string()))
            }
        }
    }

    /// Reads from one in-sync replica; a failing one is taken out (when enough are left)
    /// and the next is tried.
    fn read_from_one(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure> {
        let mut tried: Vec<ReplicaId> = vec![];
        loop {
            self.check_serving()?;
            let view = self.view();
            let candidates: Vec<&Arc<Member>> = view
                .in_sync
                .iter()
                .filter(|m| !m.is_dead() && !tried.contains(&m.id))
                .collect();
            if candidates.is_empty() {
                return Err(IoFailure::Io(format!(
                    "no in-sync replica could be read (tried {})",
                    if tried.is_empty() {
                        "none".into()
                    } else {
                        tried.join(", ")
                    }
                )));
            }
            let member = Arc::clone(
                candidates[self.next_read.fetch_add(1, Ordering::Relaxed) % candidates.len()],
            );
            let gen = view.state.gen;
            drop(view);
            let stamp = Stamp {
                epoch: self.leadership.epoch,
                gen,
                seq: 0,
                settled: 0,
            };
            let op = Op::Read {
                offset,
                len: buf.len() as u32,
            };
            let reply = fan_out(&[&*member], op, stamp).pop().expect("one reply");
            match reply {
                Ok(Some(data)) if data.len() == buf.len() => {
                    buf.copy_from_slice(&data);
                    return Ok(());
                }
                Ok(_) => {
                    let failure = Answer::Failed("a read answered the wrong length".into());
                    self.read_failed(&member.id, failure, gen)?;
                }
                Err(ReplicaError::Fenced { .. }) => {
                    self.stop(format!("fenced by {}", member.id));
                    return Err(self.shutdown());
                }
                Err(e) => self.read_failed(&member.id, Answer::of::<()>(&Err(e)), gen)?,
            }
            tried.push(member.id.clone());
        }
    }

    fn read_failed(&self, id: &str, answer: Answer, gen: u64) -> Result<(), IoFailure> {
        let can_remove = {
            let view = self.view();
            view.in_sync.len() > self.min_in_sync.max(1) as usize
        };
        eprintln!(
            "haven: volume {}: read from {id} failed: {answer:?}",
            self.name
        );
        if can_remove {
            match self.remove(&[id.to_string()], gen) {
                Ok(()) | Err(IoFailure::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Why a target did not rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RejoinError {
    /// Resync again later.
    Failed(String),
    /// The volume stopped serving.
    Superseded(String),
}

impl BlockDevice for Volume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure> {
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return self.check_serving();
        }
        self.read_from_one(offset, buf)
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoFailure> {
        self.write_shared(offset, Arc::new(data.to_vec()), fua)
    }

    fn write_shared(&self, offset: u64, data: Arc<Vec<u8>>, fua: bool) -> Result<(), IoFailure> {
        let len = data.len() as u64;
        self.mutate(Op::Write { offset, data, fua }, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.mutate(Op::Zeroes { offset, len, fua }, offset, len)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.mutate(Op::Trim { offset, len, fua }, offset, len)
    }

    /// `haven volume NAME epoch N`: a client that asks (NBD_INFO_DESCRIPTION) learns
    /// which epoch acknowledges its writes (the fault tests check that no two controllers
    /// acknowledged in one epoch).
    fn description(&self) -> Option<String> {
        Some(format!(
            "haven volume {} epoch {}",
            self.name, self.leadership.epoch
        ))
    }

    fn flush(&self) -> Result<(), IoFailure> {
        self.check_serving()?;
        self.advance_gen_if_due()?;
        let view = self.view();
        let gen = view.state.gen;
        let stamp = Stamp {
            epoch: self.leadership.epoch,
            gen,
            seq: 0,
            settled: 0,
        };
        let members: Vec<&Member> = view
            .in_sync
            .iter()
            .map(|m| &**m)
            .chain(view.resyncing.iter().map(|t| &*t.member))
            .collect();
        let replies = fan_out(&members, Op::Flush, stamp);
        let n = view.in_sync.len();
        let answers: Vec<(ReplicaId, Answer)> = view
            .in_sync
            .iter()
            .zip(&replies)
            .map(|(m, r)| (m.id.clone(), Answer::of(r)))
            .collect();
        for (target, reply) in view.resyncing.iter().zip(&replies[n..]) {
            if reply.is_err() {
                target.failed.store(true, Ordering::SeqCst);
            }
        }
        drop(view);
        let all_done = answers.iter().all(|(_, a)| *a == Answer::Done);
        self.conclude(&answers, &replies, gen)?;
        if all_done {
            self.flushed_gen.fetch_max(gen, Ordering::SeqCst);
        }
        self.check_acknowledge()
    }
}
