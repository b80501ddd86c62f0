//! The serving controller's lease and epoch, and the in-sync record's guarded update.
//!
//! campaign: grant a lease, then one transaction "controller key absent (version 0) and
//! spec present" -> put the key bound to the lease and read it back; its create revision
//! is the epoch. A lost campaign revokes its lease at once. update_sync_state: one
//! transaction "controller key's create revision == epoch and its lease == ours" -> put.

use std::time::Duration;

use haven_sources::etcd::Txn;

use super::volumes::check_name;
use super::{encode, keys, lease_secs, Coord, CoordError, Leadership, Result, SyncState};

impl Coord {
    /// Tries once to become the serving controller: Some when won, None when another
    /// candidate holds the volume; `NoVolume` when there is no such volume.
    pub fn campaign(
        &self,
        volume: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Option<Leadership>> {
        check_name(volume)?;
        let (key, spec) = (keys::controller(volume), keys::spec(volume));
        let lease = self.cluster.run(|c| c.lease_grant(lease_secs(ttl)))?;
        let txn = Txn::new()
            .when_version(key.as_bytes(), 0)
            .when_version_above(spec.as_bytes(), 0)
            .then_put(key.as_bytes(), candidate.as_bytes(), lease)
            .then_range(key.as_bytes(), false)
            .else_range(spec.as_bytes(), false);
        let answer = self.cluster.run(|c| c.txn(&txn));
        let won = match &answer {
            Ok(a) if a.succeeded => a
                .responses
                .get(1)
                .and_then(|r| r.response_range.as_ref())
                .and_then(|r| r.kvs.first())
                .map(|kv| kv.create_revision),
            _ => None,
        };
        let Some(epoch) = won else {
            // Lost, or no answer: the lease must not outlive this call (if the put did
            // apply, revoking removes the key again).
            let _ = self.cluster.run(|c| c.lease_revoke(lease));
            let answer = answer?;
            let spec_exists = answer
                .responses
                .first()
                .and_then(|r| r.response_range.as_ref())
                .is_some_and(|r| !r.kvs.is_empty());
            if !answer.succeeded && !spec_exists {
                return Err(CoordError::NoVolume(volume.to_string()));
            }
            return Ok(None);
        };
        Ok(Some(Leadership {
            volume: volume.to_string(),
            epoch: epoch as u64,
            lease,
            ttl,
        }))
    }

    /// Refreshes the lease; Err(Superseded) when it is gone.
    pub fn keep_alive(&self, leadership: &Leadership) -> Result<()> {
        self.keep_alive_ttl(leadership).map(drop)
    }

    /// [`Coord::keep_alive`], returning the TTL etcd granted. The lease is certain to last
    /// until (the instant *before* this call) + that TTL; a controller that cannot refresh
    /// by then must stop acknowledging writes.
    pub fn keep_alive_ttl(&self, leadership: &Leadership) -> Result<Duration> {
        match self.cluster.run(|c| c.lease_keep_alive(leadership.lease))? {
            Some(ttl) => Ok(Duration::from_secs(ttl as u64)),
            None => Err(superseded(leadership)),
        }
    }

    /// Gives the volume up: revokes the lease, which deletes the controller key, so that
    /// another candidate can win at once. Idempotent.
    pub fn resign(&self, leadership: &Leadership) -> Result<()> {
        self.cluster.run(|c| c.lease_revoke(leadership.lease))?;
        Ok(())
    }

    /// The serving controller's candidate name and epoch, if any.
    pub fn leader(&self, volume: &str) -> Result<Option<(String, u64)>> {
        check_name(volume)?;
        let key = keys::controller(volume);
        let page = self
            .cluster
            .run(|c| c.range(key.as_bytes(), &[], 0, 1, false))?;
        Ok(page.kvs.into_iter().next().map(|kv| {
            (
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision as u64,
            )
        }))
    }

    /// Replaces the in-sync record, guarded on `leadership` (Err(Superseded) otherwise).
    /// The stored record's `epoch` is set to the leadership's.
    pub fn update_sync_state(&self, leadership: &Leadership, new: &SyncState) -> Result<()> {
        let volume = &leadership.volume;
        let (key, sync) = (keys::controller(volume), keys::sync(volume));
        let record = SyncState {
            epoch: leadership.epoch,
            ..new.clone()
        };
        let txn = Txn::new()
            .when_create_revision(key.as_bytes(), leadership.epoch as i64)
            .when_lease(key.as_bytes(), leadership.lease)
            .when_version_above(sync.as_bytes(), 0)
            .then_put(sync.as_bytes(), &encode(&record), 0);
        let answer = self.cluster.run(|c| c.txn(&txn))?;
        if answer.succeeded {
            Ok(())
        } else {
            Err(superseded(leadership))
        }
    }
}

fn superseded(leadership: &Leadership) -> CoordError {
    CoordError::Superseded {
        volume: leadership.volume.clone(),
        epoch: leadership.epoch,
    }
}
