//! Volume specs and the in-sync record: created together, read, listed, deleted.

use haven_sources::etcd::Txn;

use super::{decode, encode, keys, Coord, CoordError, Leadership, Result, SyncState, VolumeSpec};

/// Progress of one replica's resync.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResyncProgress {
    pub replica: super::ReplicaId,
    /// `dirty` (regions written since it left) or `full` (every region).
    pub mode: String,
    pub regions_done: u64,
    pub regions_total: u64,
}

/// What the serving controller publishes about its resyncs (`volume status` shows it).
/// Informational: bound to the controller's lease, so it goes when the controller goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgressRecord {
    pub epoch: u64,
    pub resyncing: Vec<ResyncProgress>,
}

/// A volume name is a path segment of its keys: no `/`, nothing that reads as `.`/`..`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CoordError::BadName(name.to_string()))
    }
}

impl Coord {
    /// Write the spec and the first in-sync record in one transaction guarded on "the spec
    /// key is absent": `Exists` otherwise.
    pub fn create_volume(&self, spec: &VolumeSpec, initial: &SyncState) -> Result<()> {
        check_name(&spec.name)?;
        let (spec_key, sync_key) = (keys::spec(&spec.name), keys::sync(&spec.name));
        let txn = Txn::new()
            .when_version(spec_key.as_bytes(), 0)
            .then_put(spec_key.as_bytes(), &encode(spec), 0)
            .then_put(sync_key.as_bytes(), &encode(initial), 0);
        let answer = self.cluster.run(|c| c.txn(&txn))?;
        if answer.succeeded {
            Ok(())
        } else {
            Err(CoordError::Exists(spec.name.clone()))
        }
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeSpec>> {
        check_name(name)?;
        let key = keys::spec(name);
        let value = self.cluster.run(|c| c.get(key.as_bytes()))?;
        value.map(|v| decode(&key, &v)).transpose()
    }

    /// Every volume's spec, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeSpec>> {
        let prefix = keys::VOLUMES.as_bytes();
        let end = prefix_end(prefix);
        let page = self.cluster.run(|c| c.range(prefix, &end, 0, 0, false))?;
        page.kvs
            .iter()
            .filter(|kv| kv.key.ends_with(b"/spec"))
            .map(|kv| decode(&String::from_utf8_lossy(&kv.key), &kv.value))
            .collect()
    }

    /// Remove every key of the volume (spec, in-sync record, controller key). A controller
    /// still serving it fails its next guarded transaction (`Superseded`).
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let prefix = keys::volume(name);
        let deleted = self.cluster.run(|c| c.delete_prefix(prefix.as_bytes()))?;
        if deleted == 0 {
            return Err(CoordError::NoVolume(name.to_string()));
        }
        Ok(())
    }

    /// Publishes the resyncs in progress, bound to the controller's lease and only while
    /// `leadership` holds the controller key (Err(Superseded) otherwise).
    pub fn publish_progress(
        &self,
        leadership: &Leadership,
        resyncing: &[ResyncProgress],
    ) -> Result<()> {
        let volume = &leadership.volume;
        let (controller, key) = (keys::controller(volume), keys::progress(volume));
        let record = ProgressRecord {
            epoch: leadership.epoch,
            resyncing: resyncing.to_vec(),
        };
        let txn = Txn::new()
            .when_create_revision(controller.as_bytes(), leadership.epoch as i64)
            .then_put(key.as_bytes(), &encode(&record), leadership.lease);
        if self.cluster.run(|c| c.txn(&txn))?.succeeded {
            Ok(())
        } else {
            Err(CoordError::Superseded {
                volume: volume.clone(),
                epoch: leadership.epoch,
            })
        }
    }

    /// The serving controller's last published progress, if any.
    pub fn progress(&self, volume: &str) -> Result<Option<ProgressRecord>> {
        check_name(volume)?;
        let key = keys::progress(volume);
        let page = self
            .cluster
            .run(|c| c.range(key.as_bytes(), &[], 0, 1, false))?;
        page.kvs
            .into_iter()
            .next()
            .map(|kv| decode(&key, &kv.value))
            .transpose()
    }

    /// The in-sync record; `NoVolume` when the volume does not exist.
    pub fn sync_state(&self, volume: &str) -> Result<SyncState> {
        Ok(self.sync_state_at(volume)?.0)
    }

    /// The in-sync record and its mod revision (which changes on every update).
    pub fn sync_state_at(&self, volume: &str) -> Result<(SyncState, i64)> {
        check_name(volume)?;
        let key = keys::sync(volume);
        let page = self
            .cluster
            .run(|c| c.range(key.as_bytes(), &[], 0, 1, false))?;
        let kv = page
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| CoordError::NoVolume(volume.to_string()))?;
        Ok((decode(&key, &kv.value)?, kv.mod_revision))
    }
}

pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
