//! The replica registry: a permanent record per replica server (`/haven/replicas/ID`) and
//! a liveness key bound to its lease (`/haven/replicas-alive/ID`), gone within the TTL of
//! the server's death or partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use haven_sources::etcd::Txn;

use super::{decode, encode, keys, lease_secs, Coord, CoordError, ReplicaRecord, Result};

/// A registered replica server: its liveness key lives as long as `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub record: ReplicaRecord,
    pub lease: i64,
    pub ttl: Duration,
}

impl Coord {
    /// Write the replica's record (replacing an earlier one of the same id) and its
    /// liveness key under a fresh lease of `ttl`, in one transaction. Keep it alive with
    /// [`Coord::keep_replica_alive`] (or [`Coord::run_replica_keep_alive`] in a thread).
    pub fn register_replica(&self, record: &ReplicaRecord, ttl: Duration) -> Result<Registration> {
        let lease = self.cluster.run(|c| c.lease_grant(lease_secs(ttl)))?;
        let registration = Registration {
            record: ReplicaRecord {
                alive: false,
                ..record.clone()
            },
            lease,
            ttl,
        };
        self.put_registration(&registration)?;
        Ok(registration)
    }

    fn put_registration(&self, registration: &Registration) -> Result<()> {
        let id = &registration.record.id;
        let (record, alive) = (keys::replica(id), keys::alive(id));
        let txn = Txn::new()
            .then_put(record.as_bytes(), &encode(&registration.record), 0)
            .then_put(
                alive.as_bytes(),
                registration.record.addr.as_bytes(),
                registration.lease,
            );
        self.cluster.run(|c| c.txn(&txn))?;
        Ok(())
    }

    /// Refresh the liveness lease. When it was lost (the server paused or cut off past
    /// its TTL) a new lease is granted and the keys are written again, so the replica
    /// shows as alive once more.
    pub fn keep_replica_alive(&self, registration: &mut Registration) -> Result<()> {
        if self
            .cluster
            .run(|c| c.lease_keep_alive(registration.lease))?
            .is_some()
        {
            return Ok(());
        }
        registration.lease = self
            .cluster
            .run(|c| c.lease_grant(lease_secs(registration.ttl)))?;
        self.put_registration(registration)
    }

    /// Update the free space the record advertises (placement reads it).
    pub fn update_replica_free(&self, registration: &mut Registration, free: u64) -> Result<()> {
        registration.record.free_bytes = free;
        self.put_registration(registration)
    }

    /// Keep `registration` alive every third of its TTL until `stop` is set; errors (etcd
    /// briefly unreachable) are passed to `on_error` and the loop goes on.
    pub fn run_replica_keep_alive(
        &self,
        registration: &mut Registration,
        stop: &AtomicBool,
        mut on_error: impl FnMut(&CoordError),
    ) {
        let period = (registration.ttl / 3).max(Duration::from_millis(100));
        while !stop.load(Ordering::Relaxed) {
            let next = Instant::now() + period;
            if let Err(e) = self.keep_replica_alive(registration) {
                on_error(&e);
            }
            while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50).min(period));
            }
        }
    }

    /// Take the replica out of the live set at once (its record stays).
    pub fn deregister_replica(&self, registration: &Registration) -> Result<()> {
        self.cluster.run(|c| c.lease_revoke(registration.lease))?;
        Ok(())
    }

    /// Every registered replica, by id, with `alive` set from its liveness key (both
    /// read at one revision).
    pub fn replicas(&self) -> Result<Vec<ReplicaRecord>> {
        let txn = Txn::new()
            .then_range(keys::ALIVE.as_bytes(), true)
            .then_range(keys::REPLICAS.as_bytes(), true);
        let answer = self.cluster.run(|c| c.txn(&txn))?;
        let mut ranges = answer.responses.into_iter().map(|r| r.response_range);
        let (Some(Some(alive)), Some(Some(records))) = (ranges.next(), ranges.next()) else {
            return Err(CoordError::Etcd(
                "a transaction of two ranges answered with something else".into(),
            ));
        };
        let alive: Vec<&[u8]> = alive
            .kvs
            .iter()
            .map(|kv| &kv.key[keys::ALIVE.len()..])
            .collect();
        let mut out = vec![];
        for kv in records.kvs {
            let mut record: ReplicaRecord = decode(&String::from_utf8_lossy(&kv.key), &kv.value)?;
            record.alive = alive.contains(&record.id.as_bytes());
            out.push(record);
        }
        Ok(out)
    }
}
