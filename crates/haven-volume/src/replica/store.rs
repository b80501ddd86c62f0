//! A replica's store: one directory per volume under `DATA/volumes/`.
//!
//! ```text
//! DATA/volumes/NAME/data            the volume's bytes (sparse, size fixed at create)
//! DATA/volumes/NAME/meta            size, instance, highest epoch, dirty floor, settle gen
//! DATA/volumes/NAME/dirty/GEN.map   the dirty map of generation GEN (header + bitmap)
//! ```
//! [`Store`] holds the open [`Volume`]s; the server calls their methods, one per request.
//!
//! Durability, where it is enforced (docs/VOLUMES.md, "Replica protocol", binds it):
//!
//! | what | how | when |
//! |---|---|---|
//! | meta (epoch, floors) | write `meta.tmp` -> fsync -> rename -> fsync dir | before answering the request that changed it |
//! | a new generation's map file | zeroed `GEN.map.tmp` -> fsync -> rename -> fsync dir | before the first write of that generation touches the data |
//! | a region newly marked in a map | pwrite of the bitmap word -> `sync_data` | before the write touches the data |
//! | data | pwrite (page cache); `sync_data` for FUA and FLUSH | before the reply |
//!
//! Unsettled regions live in memory; after a restart the replica reports the union of the
//! dirty maps of every generation since its last SETTLE_ALL (a superset: every write was
//! marked in its map before it touched the data), or "unknown" when those maps were pruned.
//!
//! Locks: each volume has `fence` (RwLock over the highest [`Seal`] seen: epoch, then
//! session; data requests hold it shared from their check to their reply, raising it or
//! deleting holds it exclusive, so no request of an older epoch, or of an older session of
//! the same epoch, lands after a newer one was answered), then `state` (Mutex: maps,
//! unsettled regions, meta). Order: fence, then state. Only the epoch is persisted: a
//! session lives as long as its connections, which a restart closes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::region::{region_count, regions_of, RegionMap, REGION_SIZE};
use crate::replica::VolumeState;
use crate::wire::{ErrorCode, Response, WireError, WriteStamp, MAX_CHECKSUM_REGIONS, MAX_DATA};

/// Dirty maps of this many most recent generations are kept.
pub const KEPT_GENERATIONS: u64 = 64;
/// Regions marked ahead of a sequential writer (4 MiB).
const LOOKAHEAD: u64 = 64;
const META_MAGIC: [u8; 4] = *b"HVM1";
const META_LEN: usize = 4 + 8 + 16 + 8 + 8 + 8 + 8;
const MAP_MAGIC: [u8; 4] = *b"HVD1";
const MAP_HEADER: u64 = 32;

/// A request's failure, as the wire reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("fenced: epoch {seen} seen, request carries {sent}")]
    Fenced { seen: u64, sent: u64 },
    #[error("superseded: session {seen} of this epoch sealed since this connection's session {sent}; reconnect")]
    Superseded { seen: u64, sent: u64 },
    #[error("{0}")]
    NoSpace(String),
    #[error("no volume {0:?} on this replica")]
    NoVolume(String),
    #[error("volume {0:?} already exists on this replica")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

impl StoreError {
    /// Classifies an I/O error: ENOSPC and EDQUOT are NoSpace.
    fn io(what: &str, e: io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                StoreError::NoSpace(format!("{what}: no space left on the replica's disk"))
            }
            _ => StoreError::Io(format!("{what}: {e}")),
        }
    }

    pub fn to_response(&self) -> Response {
        let (code, seen) = match self {
            StoreError::Fenced { seen, .. } => (ErrorCode::Fenced, *seen),
            StoreError::Superseded { seen, .. } => (ErrorCode::Superseded, *seen),
            StoreError::NoSpace(_) => (ErrorCode::NoSpace, 0),
            StoreError::NoVolume(_) => (ErrorCode::NoVolume, 0),
            StoreError::Exists(_) => (ErrorCode::Exists, 0),
            StoreError::Invalid(_) => (ErrorCode::Invalid, 0),
            StoreError::Io(_) => (ErrorCode::Io, 0),
        };
        Response::Error(WireError {
            code,
            seen,
            message: self.to_string(),
        })
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Names are path components: 1..=64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "volume name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with a dot)"
        )))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write temp -> fsync -> rename -> fsync dir.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().expect("a file in a directory"))
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes).expect("the OS's random source");
    hex::encode(bytes)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The persisted fields of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    size: u64,
    instance: u128,
    epoch: u64,
    /// Maps of generations below this were dropped (or lost): DIRTY_SINCE of an older
    /// generation cannot be answered.
    dirty_floor: u64,
    /// One above the highest generation with a map at the last SETTLE_ALL; later writes
    /// of older generations are recorded in this one. After a restart, the unsettled
    /// regions are within the maps of generations from here on.
    settle_gen: u64,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_LEN);
        out.extend_from_slice(&META_MAGIC);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.dirty_floor.to_le_bytes());
        out.extend_from_slice(&self.settle_gen.to_le_bytes());
        let sum = blake3::hash(&out);
        out.extend_from_slice(&sum.as_bytes()[..8]);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Meta> {
        if bytes.len() != META_LEN || bytes[..4] != META_MAGIC {
            return None;
        }
        if blake3::hash(&bytes[..META_LEN - 8]).as_bytes()[..8] != bytes[META_LEN - 8..] {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        Some(Meta {
            size: u64_at(4),
            instance: u128::from_le_bytes(bytes[12..28].try_into().expect("16")),
            epoch: u64_at(28),
            dirty_floor: u64_at(36),
            settle_gen: u64_at(44),
        })
    }
}

/// One generation's dirty map: the bitmap words and the file mirroring them.
struct GenMap {
    file: File,
    words: Vec<u64>,
}

impl GenMap {
    fn to_map(&self) -> RegionMap {
        RegionMap::from_bytes(
            &self
                .words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    }
}

/// What the replica knows of unsettled writes from before its last start.
enum Recovered {
    Known(RegionMap),
    Unknown,
}

struct State {
    meta: Meta,
    maps: BTreeMap<u64, GenMap>,
    /// region -> (epoch, seq) of the last write to it not yet known settled.
    unsettled: HashMap<u64, (u64, u64)>,
    recovered: Recovered,
}

/// What a connection's HELLO sealed it with: the controller's epoch, then the session the
/// controller gave this link to the replica. Ordered by epoch, then session: a controller
/// that gives up a link (a replica it stopped trusting) opens its next one with a higher
/// session, so whatever the old link still had in flight is refused (docs/VOLUMES.md,
/// "Session rule").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seal {
    pub epoch: u64,
    pub session: u64,
}

/// One volume's copy on this replica.
pub struct Volume {
    name: String,
    dir: PathBuf,
    size: u64,
    instance: u128,
    data: File,
    fence: RwLock<Seal>,
    state: Mutex<State>,
    deleted: AtomicBool,
    /// Tests only: a write that passed its epoch check waits here (entered, then resume).
    #[cfg(test)]
    pause: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

/// What a write-like request does to the data.
pub enum WriteOp<'a> {
    Data(&'a [u8]),
    Zeroes(u64),
    Trim(u64),
}

impl WriteOp<'_> {
    fn len(&self) -> u64 {
        match self {
            WriteOp::Data(d) => d.len() as u64,
            WriteOp::Zeroes(len) | WriteOp::Trim(len) => *len,
        }
    }
}

fn map_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join("dirty").join(format!("{gen:020}.map"))
}

impl Volume {
    fn open(name: &str, dir: PathBuf) -> io::Result<Volume> {
        let bytes = fs::read(dir.join("meta"))?;
        let mut meta = Meta::decode(&bytes).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "meta: bad magic or checksum")
        })?;
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("data"))?;
        if data.metadata()?.len() != meta.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data file size differs from meta",
            ));
        }
        let words = region_count(meta.size).div_ceil(64);
        let map_dir = dir.join("dirty");
        fs::create_dir_all(&map_dir)?;
        let mut maps = BTreeMap::new();
        let mut lost = None;
        for entry in fs::read_dir(&map_dir)? {
            let path = entry?.path();
            let gen = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".map"))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(gen) = gen else {
                fs::remove_file(&path)?; // a torn `.tmp` of a map never used
                continue;
            };
            if gen < meta.dirty_floor {
                fs::remove_file(&path)?; // pruned; the floor was persisted first
                continue;
            }
            match read_map(&path, gen, words) {
                Some((file, words)) => {
                    maps.insert(gen, GenMap { file, words });
                }
                None => lost = Some(lost.unwrap_or(0).max(gen)),
            }
        }
        if let Some(gen) = lost {
            // A damaged map: no generation up to it can be answered any more.
            meta.dirty_floor = gen + 1;
            maps.retain(|g, _| *g > gen);
            write_atomic(&dir.join("meta"), &meta.encode())?;
        }
        let recovered = if meta.settle_gen < meta.dirty_floor {
            Recovered::Unknown
        } else {
            let mut union = RegionMap::new(region_count(meta.size));
            for (_, map) in maps.range(meta.settle_gen..) {
                union.union_with(&map.to_map());
            }
            Recovered::Known(union)
        };
        Ok(Volume {
            name: name.to_string(),
            dir,
            size: meta.size,
            instance: meta.instance,
            data,
            fence: RwLock::new(Seal {
                epoch: meta.epoch,
                session: 0,
            }),
            state: Mutex::new(State {
                meta,
                maps,
                unsettled: HashMap::new(),
                recovered,
            }),
            deleted: AtomicBool::new(false),
            #[cfg(test)]
            pause: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `seal` against the highest seen, raising it when higher (a higher epoch is
    /// persisted first); returns the shared fence guard the request holds until its reply.
    fn enter(&self, seal: Seal) -> Result<RwLockReadGuard<'_, Seal>> {
        loop {
            let seen = self.fence.read().unwrap_or_else(|e| e.into_inner());
            if self.deleted.load(Ordering::SeqCst) {
                return Err(StoreError::NoVolume(self.name.clone()));
            }
            if seal.epoch < seen.epoch {
                return Err(StoreError::Fenced {
                    seen: seen.epoch,
                    sent: seal.epoch,
                });
            }
            if seal < *seen {
                return Err(StoreError::Superseded {
                    seen: seen.session,
                    sent: seal.session,
                });
            }
            if seal == *seen {
                return Ok(seen);
            }
            drop(seen);
            let mut seen = self.fence.write().unwrap_or_else(|e| e.into_inner());
            if seal > *seen && !self.deleted.load(Ordering::SeqCst) {
                if seal.epoch > seen.epoch {
                    let mut state = self.state();
                    let mut meta = state.meta;
                    meta.epoch = seal.epoch;
                    write_atomic(&self.dir.join("meta"), &meta.encode())
                        .map_err(|e| StoreError::io("persisting the epoch", e))?;
                    state.meta = meta;
                }
                *seen = seal;
            }
        }
    }

    /// What HELLO answers, after raising the seal to `seal`.
    pub fn hello(&self, seal: Seal) -> Result<VolumeState> {
        let seen = self.enter(seal)?;
        let state = self.state();
        let unsettled = match &state.recovered {
            Recovered::Unknown => None,
            Recovered::Known(map) => {
                let mut map = map.clone();
                for region in state.unsettled.keys() {
                    map.insert(*region);
                }
                Some(map)
            }
        };
        Ok(VolumeState {
            size: self.size,
            instance: self.instance,
            epoch: seen.epoch,
            unsettled,
        })
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(StoreError::Invalid(format!(
                "range {offset}+{len} beyond the volume's size {}",
                self.size
            ))),
        }
    }

    pub fn read(&self, seal: Seal, offset: u64, len: u32) -> Result<Vec<u8>> {
        if len > MAX_DATA {
            return Err(StoreError::Invalid(format!(
                "read of {len} bytes exceeds {MAX_DATA}"
            )));
        }
        self.check_range(offset, u64::from(len))?;
        let _fence = self.enter(seal)?;
        let mut buf = vec![0u8; len as usize];
        self.data
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StoreError::io("reading", e))?;
        Ok(buf)
    }

    /// A write-like request of the connection sealed in `session`.
    pub fn write(
        &self,
        session: u64,
        stamp: &WriteStamp,
        offset: u64,
        op: WriteOp<'_>,
        fua: bool,
    ) -> Result<()> {
        let len = op.len();
        self.check_range(offset, len)?;
        let _fence = self.enter(Seal {
            epoch: stamp.epoch,
            session,
        })?;
        #[cfg(test)]
        if let Some((entered, resume)) = self.pause.lock().unwrap().take() {
            entered.send(()).unwrap();
            resume.recv().unwrap();
        }
        if len > 0 {
            self.mark(stamp, offset, len)?;
        }
        match op {
            WriteOp::Data(data) => self.data.write_all_at(data, offset),
            WriteOp::Zeroes(len) | WriteOp::Trim(len) => self.zero(offset, len),
        }
        .map_err(|e| StoreError::io("writing the data", e))?;
        if fua {
            self.data
                .sync_data()
                .map_err(|e| StoreError::io("syncing the data (FUA)", e))?;
        }
        Ok(())
    }

    /// Zeroes a range: a punched hole where the filesystem can, written zeroes elsewhere.
    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::FallocateFlags;
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.data, punch, offset, len) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => {}
            Err(e) => return Err(e.into()),
        }
        let zeroes = vec![0u8; (1 << 20).min(len) as usize];
        let mut at = offset;
        while at < offset + len {
            let n = zeroes.len().min((offset + len - at) as usize);
            self.data.write_all_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Records a write in its generation's dirty map (persisted when a region is new to
    /// it) and in the unsettled regions, before the write touches the data.
    fn mark(&self, stamp: &WriteStamp, offset: u64, len: u64) -> Result<()> {
        let mut state = self.state();
        let regions = regions_of(offset, len);
        // Recording a write under a later generation than its own only over-reports.
        let gen = stamp
            .gen
            .max(state.meta.dirty_floor)
            .max(state.meta.settle_gen);
        if !state.maps.contains_key(&gen) {
            self.new_map(&mut state, gen)?;
        }
        let map = state.maps.get_mut(&gen).expect("just made");
        let marked = |words: &[u64], r: u64| words[(r / 64) as usize] & (1 << (r % 64)) != 0;
        let mut to_mark = regions.clone();
        // A sequential writer (the region before this write is already marked) gets the
        // next LOOKAHEAD regions marked with this one sync: one map write per 4 MiB instead
        // of one per region. Over-reporting is safe; random writers are not affected.
        if regions.start > 0
            && marked(&map.words, regions.start - 1)
            && regions.clone().any(|r| !marked(&map.words, r))
        {
            to_mark.end = (regions.end + LOOKAHEAD).min(region_count(self.size));
        }
        let mut changed: BTreeMap<usize, u64> = BTreeMap::new();
        for region in to_mark.clone() {
            let (word, bit) = ((region / 64) as usize, region % 64);
            if map.words[word] & (1 << bit) == 0 {
                map.words[word] |= 1 << bit;
                changed.insert(word, map.words[word]);
            }
        }
        if !changed.is_empty() {
            let persist = || -> io::Result<()> {
                for (word, value) in &changed {
                    map.file
                        .write_all_at(&value.to_le_bytes(), MAP_HEADER + *word as u64 * 8)?;
                }
                map.file.sync_data()
            };
            if let Err(e) = persist() {
                // Not persisted: forget the bits so a retry persists them again.
                for region in to_mark {
                    map.words[(region / 64) as usize] &= !(1 << (region % 64));
                }
                return Err(StoreError::io("persisting the dirty map", e));
            }
        }
        let epoch = stamp.epoch;
        state
            .unsettled
            .retain(|_, (e, seq)| !(*e == epoch && *seq <= stamp.settled));
        if stamp.seq > stamp.settled {
            for region in regions {
                state.unsettled.insert(region, (epoch, stamp.seq));
            }
        }
        Ok(())
    }

    /// Creates generation `gen`'s map file (zeroed, so later word writes need no new
    /// blocks) and drops the maps of generations `KEPT_GENERATIONS` or more below it.
    fn new_map(&self, state: &mut State, gen: u64) -> Result<()> {
        if state.maps.is_empty() && state.meta.dirty_floor == 0 {
            // The first write this copy ever took: it knows nothing of earlier
            // generations, so it cannot vouch for them (and has nothing to settle there).
            let mut meta = state.meta;
            meta.dirty_floor = gen;
            meta.settle_gen = meta.settle_gen.max(gen);
            if meta != state.meta {
                write_atomic(&self.dir.join("meta"), &meta.encode())
                    .map_err(|e| StoreError::io("persisting the dirty floor", e))?;
                state.meta = meta;
            }
        }
        let words = region_count(self.size).div_ceil(64) as usize;
        let path = map_path(&self.dir, gen);
        let mut bytes = vec![0u8; MAP_HEADER as usize + words * 8];
        bytes[..4].copy_from_slice(&MAP_MAGIC);
        bytes[4..12].copy_from_slice(&gen.to_le_bytes());
        bytes[12..20].copy_from_slice(&(words as u64).to_le_bytes());
        write_atomic(&path, &bytes).map_err(|e| StoreError::io("creating a dirty map", e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("opening a dirty map", e))?;
        state.maps.insert(
            gen,
            GenMap {
                file,
                words: vec![0; words],
            },
        );
        let old: Vec<u64> = state
            .maps
            .keys()
            .copied()
            .filter(|g| g + KEPT_GENERATIONS <= gen)
            .collect();
        if let Some(newest_dropped) = old.last() {
            let mut meta = state.meta;
            meta.dirty_floor = meta.dirty_floor.max(newest_dropped + 1);
            write_atomic(&self.dir.join("meta"), &meta.encode())
                .map_err(|e| StoreError::io("persisting the dirty floor", e))?;
            state.meta = meta;
            for g in old {
                state.maps.remove(&g);
                // Already below the persisted floor: a leftover file is removed at open.
                let _ = fs::remove_file(map_path(&self.dir, g));
            }
        }
        Ok(())
    }

    pub fn flush(&self, seal: Seal) -> Result<()> {
        let _fence = self.enter(seal)?;
        self.data
            .sync_data()
            .map_err(|e| StoreError::io("flushing", e))
    }

    pub fn dirty_since(&self, seal: Seal, gen: u64) -> Result<Option<RegionMap>> {
        let _fence = self.enter(seal)?;
        let state = self.state();
        if gen < state.meta.dirty_floor {
            return Ok(None);
        }
        let mut union = RegionMap::new(region_count(self.size));
        for (_, map) in state.maps.range(gen..) {
            union.union_with(&map.to_map());
        }
        Ok(Some(union))
    }

    pub fn region_checksums(&self, seal: Seal, first: u64, count: u32) -> Result<Vec<[u8; 32]>> {
        let regions = region_count(self.size);
        if count > MAX_CHECKSUM_REGIONS || first.saturating_add(u64::from(count)) > regions {
            return Err(StoreError::Invalid(format!(
                "regions {first}+{count}: the volume has {regions} (at most {MAX_CHECKSUM_REGIONS} per request)"
            )));
        }
        let _fence = self.enter(seal)?;
        let mut buf = vec![0u8; REGION_SIZE as usize];
        let mut sums = Vec::with_capacity(count as usize);
        for region in first..first + u64::from(count) {
            let start = region * REGION_SIZE;
            let len = REGION_SIZE.min(self.size - start) as usize;
            self.data
                .read_exact_at(&mut buf[..len], start)
                .map_err(|e| StoreError::io("reading for checksums", e))?;
            sums.push(*blake3::hash(&buf[..len]).as_bytes());
        }
        Ok(sums)
    }

    pub fn settle_all(&self, seal: Seal) -> Result<()> {
        let _fence = self.enter(seal)?;
        let mut state = self.state();
        // Writes from now on are recorded in generation `settle_gen` or later (see
        // `mark`), so after a restart the maps from there on cover every unsettled one.
        let next = state.maps.keys().next_back().map_or(0, |g| g + 1);
        let mut meta = state.meta;
        meta.settle_gen = meta.settle_gen.max(next).max(meta.dirty_floor);
        if meta != state.meta {
            write_atomic(&self.dir.join("meta"), &meta.encode())
                .map_err(|e| StoreError::io("persisting the settle mark", e))?;
            state.meta = meta;
        }
        state.unsettled.clear();
        state.recovered = Recovered::Known(RegionMap::new(region_count(self.size)));
        Ok(())
    }
}

fn read_map(path: &Path, gen: u64, words: u64) -> Option<(File, Vec<u64>)> {
    let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    let mut bytes = vec![0u8; (MAP_HEADER + words * 8) as usize];
    file.read_exact_at(&mut bytes, 0).ok()?;
    if bytes[..4] != MAP_MAGIC
        || bytes[4..12] != gen.to_le_bytes()
        || bytes[12..20] != words.to_le_bytes()
    {
        return None;
    }
    let words = bytes[MAP_HEADER as usize..]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
        .collect();
    Some((file, words))
}

/// All volumes of one replica.
pub struct Store {
    dir: PathBuf,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
}

impl Store {
    /// Opens (creating when absent) `DATA`; removes what interrupted creates and deletes
    /// left; a volume whose meta cannot be read is moved aside as `.damaged-NAME-…` and
    /// reported on stderr (its copy cannot be trusted: the controller rebuilds it).
    pub fn open(dir: &Path) -> io::Result<Store> {
        let volumes_dir = dir.join("volumes");
        fs::create_dir_all(&volumes_dir)?;
        let mut volumes = BTreeMap::new();
        for entry in fs::read_dir(&volumes_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".deleted-") {
                fs::remove_dir_all(entry.path())?;
                continue;
            }
            if name.starts_with('.') || check_name(&name).is_err() {
                continue;
            }
            match Volume::open(&name, entry.path()) {
                Ok(volume) => {
                    volumes.insert(name, Arc::new(volume));
                }
                Err(e) => {
                    let aside = volumes_dir.join(format!(".damaged-{name}-{}", random_suffix()));
                    eprintln!(
                        "replica store {}: volume {name:?} cannot be opened ({e}); moved to {}",
                        dir.display(),
                        aside.display()
                    );
                    fs::rename(entry.path(), &aside)?;
                }
            }
        }
        sync_dir(&volumes_dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            volumes: Mutex::new(volumes),
        })
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Volume>>> {
        self.volumes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn free_bytes(&self) -> Result<u64> {
        free_bytes(&self.dir).map_err(|e| StoreError::io("statvfs", e))
    }

    pub fn names(&self) -> Vec<String> {
        self.volumes().keys().cloned().collect()
    }

    pub fn volume(&self, name: &str) -> Result<Arc<Volume>> {
        self.volumes()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoVolume(name.to_string()))
    }

    pub fn create(&self, name: &str, size: u64) -> Result<VolumeState> {
        check_name(name)?;
        if size == 0 {
            return Err(StoreError::Invalid("a volume of size 0".into()));
        }
        let mut volumes = self.volumes();
        if volumes.contains_key(name) {
            return Err(StoreError::Exists(name.to_string()));
        }
        let free = self.free_bytes()?;
        if size > free {
            return Err(StoreError::NoSpace(format!(
                "volume {name:?} of {size} bytes does not fit: {free} bytes free in {}",
                self.dir.display()
            )));
        }
        let volumes_dir = self.dir.join("volumes");
        let tmp = volumes_dir.join(format!(".tmp-{name}-{}", random_suffix()));
        let make = || -> io::Result<()> {
            fs::create_dir(&tmp)?;
            fs::create_dir(tmp.join("dirty"))?;
            let data = File::create(tmp.join("data"))?;
            data.set_len(size)?;
            data.sync_all()?;
            let mut instance = [0u8; 16];
            getrandom::getrandom(&mut instance).map_err(|e| io::Error::other(e.to_string()))?;
            let meta = Meta {
                size,
                instance: u128::from_le_bytes(instance),
                epoch: 0,
                dirty_floor: 0,
                settle_gen: 0,
            };
            write_atomic(&tmp.join("meta"), &meta.encode())?;
            sync_dir(&tmp.join("dirty"))?;
            fs::rename(&tmp, volumes_dir.join(name))?;
            sync_dir(&volumes_dir)
        };
        if let Err(e) = make() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(StoreError::io(&format!("creating volume {name:?}"), e));
        }
        let volume = Volume::open(name, volumes_dir.join(name))
            .map_err(|e| StoreError::io(&format!("opening volume {name:?}"), e))?;
        let state = VolumeState {
            size,
            instance: volume.instance,
            epoch: 0,
            unsettled: Some(RegionMap::new(region_count(size))),
        };
        volumes.insert(name.to_string(), Arc::new(volume));
        Ok(state)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut volumes = self.volumes();
        let volume = volumes
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoVolume(name.to_string()))?;
        // Waits for the requests in flight on it; later ones find it deleted.
        let _fence = volume.fence.write().unwrap_or_else(|e| e.into_inner());
        volume.deleted.store(true, Ordering::SeqCst);
        volumes.remove(name);
        let volumes_dir = self.dir.join("volumes");
        let aside = volumes_dir.join(format!(".deleted-{name}-{}", random_suffix()));
        let remove = || -> io::Result<()> {
            fs::rename(&volume.dir, &aside)?;
            sync_dir(&volumes_dir)?;
            fs::remove_dir_all(&aside)
        };
        remove().map_err(|e| StoreError::io(&format!("deleting volume {name:?}"), e))
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
