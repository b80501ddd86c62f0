//! A replica as the serving volume sees it: a few worker threads, each with its own
//! [`ReplicaClient`] (sealed with the controller's epoch), taking jobs from one queue. A
//! request is fanned out by sending one job to each member and waiting for every reply.
//!
//! A member whose connection failed keeps answering (with the failure) until the volume
//! drops it; dropping the last handle closes the queue and its threads end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::coord::ReplicaId;
use crate::replica::{ReplicaClient, ReplicaError, VolumeState};

/// One request to one replica.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Arc<Vec<u8>>,
        fua: bool,
    },
    Zeroes {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Flush,
}

/// What a write carries besides its data (docs/VOLUMES.md, "Words"); reads and flushes
/// use its epoch only.
pub(crate) use crate::wire::WriteStamp as Stamp;

/// A reply: the bytes of a read, nothing for the others.
pub(crate) type Reply = Result<Option<Vec<u8>>, ReplicaError>;

struct Job {
    op: Arc<Op>,
    stamp: Stamp,
    index: usize,
    reply: Sender<(usize, Reply)>,
}

/// A session number no link of this process has used: links to a replica opened later get
/// higher ones, so the replica refuses what a link given up earlier still had in flight.
pub(crate) fn next_session() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

pub(crate) struct Member {
    pub id: ReplicaId,
    /// The session its connections were sealed with (0: never connected).
    pub session: u64,
    /// None: the replica could not be reached when the member was made.
    queue: Option<Sender<Job>>,
    dead: String,
    /// Set when a connection failed (it stays failed: the volume connects anew only
    /// through a new member).
    broken: Arc<AtomicBool>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl Member {
    /// Connects `conns` clients to `addr` and seals each with `epoch` and `session` (HELLO
    /// on `volume`).
    pub fn connect(
        id: &str,
        addr: SocketAddr,
        volume: &str,
        (epoch, session): (u64, u64),
        timeout: Duration,
        conns: usize,
    ) -> Result<(Member, VolumeState), ReplicaError> {
        let mut clients = Vec::with_capacity(conns.max(1));
        let mut state = None;
        for _ in 0..conns.max(1) {
            let mut client = ReplicaClient::connect(addr, timeout)?;
            state = Some(client.hello(volume, epoch, session)?);
            clients.push(client);
        }
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let broken = Arc::new(AtomicBool::new(false));
        for (n, client) in clients.into_iter().enumerate() {
            let (rx, broken) = (Arc::clone(&rx), Arc::clone(&broken));
            thread::Builder::new()
                .name(format!("replica {id} #{n}"))
                .spawn(move || work(client, &rx, &broken))
                .map_err(|e| ReplicaError::Failed {
                    replica: id.to_string(),
                    detail: format!("cannot start a worker thread: {e}"),
                })?;
        }
        let member = Member {
            id: id.to_string(),
            session,
            queue: Some(tx),
            dead: String::new(),
            broken,
        };
        Ok((member, state.expect("at least one connection")))
    }

    /// A member that answers every job with `detail` (an in-sync replica kept in the set
    /// for min-in-sync while it cannot be reached).
    pub fn dead(id: &str, detail: String) -> Member {
        Member {
            id: id.to_string(),
            session: 0,
            queue: None,
            dead: detail,
            broken: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Unreachable: never connected, or a connection failed since.
    pub fn is_dead(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Queues `op`; its reply arrives on `reply` tagged with `index`.
    fn send(&self, op: &Arc<Op>, stamp: Stamp, index: usize, reply: &Sender<(usize, Reply)>) {
        let failed = |detail: String| {
            let _ = reply.send((
                index,
                Err(ReplicaError::Unreachable {
                    replica: self.id.clone(),
                    detail,
                }),
            ));
        };
        match &self.queue {
            None => failed(self.dead.clone()),
            Some(queue) => {
                let job = Job {
                    op: Arc::clone(op),
                    stamp,
                    index,
                    reply: reply.clone(),
                };
                if queue.send(job).is_err() {
                    failed("its worker threads ended".into());
                }
            }
        }
    }
}

/// Sends `op` to every member at once and returns their replies in `members`' order.
pub(crate) fn fan_out(members: &[&Member], op: Op, stamp: Stamp) -> Vec<Reply> {
    let op = Arc::new(op);
    let (tx, rx) = channel();
    for (index, member) in members.iter().enumerate() {
        member.send(&op, stamp, index, &tx);
    }
    drop(tx);
    let mut replies: Vec<Option<Reply>> = members.iter().map(|_| None).collect();
    for (index, reply) in rx.iter() {
        replies[index] = Some(reply);
    }
    replies
        .into_iter()
        .zip(members)
        .map(|(reply, member)| {
            reply.unwrap_or_else(|| {
                Err(ReplicaError::Unreachable {
                    replica: member.id.clone(),
                    detail: "its worker ended without an answer".into(),
                })
            })
        })
        .collect()
}

fn work(mut client: ReplicaClient, jobs: &Mutex<Receiver<Job>>, broken: &AtomicBool) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let reply = run(&mut client, &job.op, job.stamp);
        if matches!(reply, Err(ReplicaError::Unreachable { .. })) {
            broken.store(true, Ordering::SeqCst);
        }
        let _ = job.reply.send((job.index, reply));
    }
}

fn run(client: &mut ReplicaClient, op: &Op, s: Stamp) -> Reply {
    match *op {
        Op::Read { offset, len } => client.read(s.epoch, offset, len).map(Some),
        Op::Write {
            offset,
            ref data,
            fua,
        } => client.write(&s, offset, data, fua).map(|()| None),
        Op::Zeroes { offset, len, fua } => client.write_zeroes(&s, offset, len, fua).map(|()| None),
        Op::Trim { offset, len, fua } => client.trim(&s, offset, len, fua).map(|()| None),
        Op::Flush => client.flush(s.epoch).map(|()| None),
    }
}
