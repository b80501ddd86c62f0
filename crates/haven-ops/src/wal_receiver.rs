//! The WAL receiver of a `wal = "stream"` component: WAL from the server's replication
//! slot into the repository, at most one flush interval (1 s) behind the server.
//!
//! ```text
//! pg_receivewal (stream.rs) ──> spool/  SEG (complete)  SEG.partial  TL.history
//!                                   │ complete files every SPOOL_LOOK (200 ms),
//!                                   │ the partial one every flush interval
//!                                   ▼
//!                  WalSink: one-file snapshots, tagged like `haven wal push`'s
//!                     SEG          stored once, then deleted from the spool
//!                     SEG.partial  stored again whenever it grew; the copies it
//!                                  replaced are removed once PARTIAL_KEEP old
//! every check interval: the slot (pg_replication_slots) ──> SlotLag / SlotDropped
//! ```
//! Main types: [`ReceiverOptions`], [`ReceiverEvent`] (what the caller logs or alerts on),
//! [`receive`] (runs until `stop`), [`WalSink`].
//!
//! The slot keeps every segment on the server until `pg_receivewal` confirmed it, so a
//! receiver that was down (or a server that restarted) resumes with no gap. What the slot
//! costs is WAL held on the server: past 80 % of `slot-max-lag` [`ReceiverEvent::SlotLag`]
//! is raised, past it the slot is dropped ([`ReceiverEvent::SlotDropped`]): the archive
//! then has a gap, named by the event, that the next base backup closes.
//!
//! `synchronous = true` runs `pg_receivewal --synchronous`: a commit the server
//! acknowledged while it counts the receiver as a synchronous standby is fsynced in the
//! spool on the receiver's host, and in the repository within one flush interval, also
//! when the server dies right after (the receiver keeps flushing what it holds).
//!
//! Limits: every flush reloads the repository's index (so a chunk that a prune removed
//! meanwhile is never referenced): on a repository with a very large index that costs
//! more than the interval. Restores that list a partial segment and read it more than
//! [`PARTIAL_KEEP`] later fail and must be run again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use haven_repo::backup::backup_stream;
use haven_repo::id::SnapshotId;
use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::Repository;
use haven_sources::postgres::physical::lsn::segment_header;
use haven_sources::postgres::physical::stream::{default_slot_name, parse_wal_size};
use haven_sources::postgres::physical::WalFile;
use haven_sources::postgres::{PostgresComponent, WalMode};
use haven_sources::process::Running;
use haven_store::FileKind;

use crate::config::Config;
use crate::wal::{list_wal, physical_component, wal_file_of, wal_tags, DEFAULT_SEGMENT_SIZE};
use crate::OpsError;

/// The default `slot-max-lag`.
pub const DEFAULT_SLOT_MAX_LAG: u64 = 10 << 30;
/// How long a replaced partial segment stays readable (for a restore that listed it).
pub const PARTIAL_KEEP: Duration = Duration::from_secs(600);

/// How often the spool is looked at for complete segments (a base backup waits for the
/// one it ended in).
pub const SPOOL_LOOK: Duration = Duration::from_millis(200);

/// How the receiver runs.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Where `pg_receivewal` writes (on the receiver's host; kept across restarts).
    pub spool: PathBuf,
    /// How often the segment being written (`.partial`) is stored (at most 1 s for the
    /// RPO the docs promise); complete segments are stored within [`SPOOL_LOOK`].
    pub flush_every: Duration,
    /// How often the slot's retained WAL is checked.
    pub check_every: Duration,
    /// How long to wait for the repository's lock.
    pub lock_wait: Duration,
}

impl ReceiverOptions {
    pub fn new(spool: PathBuf) -> ReceiverOptions {
        ReceiverOptions {
            spool,
            flush_every: Duration::from_secs(1),
            check_every: Duration::from_secs(10),
            lock_wait: Duration::from_secs(60),
        }
    }
}

/// Where the receiver of `component` of `tenant` spools WAL unless told otherwise:
/// `<daemon state-dir>/wal/<tenant>/<component>`.
pub fn default_spool(config: &Config, tenant: &str, component: &str) -> PathBuf {
    config
        .daemon
        .state_dir
        .join("wal")
        .join(tenant)
        .join(component)
}

/// What happened, for the caller to print, log or alert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// `pg_receivewal` started on the slot.
    Receiving { slot: String, synchronous: bool },
    /// A file is in the repository (a partial segment: as far as it was received).
    Stored {
        name: String,
        bytes: u64,
        last_commit: Option<String>,
    },
    /// `pg_receivewal` ended (the server went away, or refused); retried.
    ReceiverEnded { detail: String },
    /// Everything received before the receiver ended is in the repository.
    CaughtUp,
    /// A timeline history file arrived: the source was promoted (a failover).
    TimelineSwitch { history: String },
    /// At each check: how much WAL the slot holds on the server (what the receiver has
    /// not yet confirmed) and where the server is.
    Lag { retained: u64, server: String },
    /// The slot holds back more than 80 % of `slot-max-lag` on the server.
    SlotLag { retained: u64, max: u64 },
    /// The slot held back more than `slot-max-lag` and was dropped (then created anew):
    /// the archive has a gap from the server's position `from`.
    SlotDropped {
        retained: u64,
        max: u64,
        from: String,
    },
    /// `synchronous = true`, but the server's `synchronous_standby_names` does not name
    /// the slot: commits do not wait for the receiver.
    NotSynchronous { slot: String, names: String },
    /// Storing failed; retried at the next flush.
    StoreFailed { detail: String },
}

/// Receive WAL for `component` of `tenant` until `stop` is set; `on` hears every event.
/// Returns early only for what retrying cannot fix (not a streaming component, a bad
/// config); the server being away is an event, and retried.
pub fn receive(
    config: &Config,
    tenant: &str,
    component: &str,
    options: &ReceiverOptions,
    stop: &AtomicBool,
    on: &mut dyn FnMut(&ReceiverEvent),
) -> Result<(), OpsError> {
    let t = config.tenant(tenant)?;
    let pg_config = physical_component(t, component)?.clone();
    if pg_config.wal != WalMode::Stream {
        return Err(OpsError::Invalid(format!(
            "component {component} of tenant {tenant} has wal = \"archive\": its server pushes \
             WAL with archive_command; set wal = \"stream\" to have Haven receive it"
        )));
    }
    let slot = pg_config
        .slot
        .clone()
        .unwrap_or_else(|| default_slot_name(tenant, component));
    let max_lag = match &pg_config.slot_max_lag {
        Some(s) => parse_wal_size(s).map_err(OpsError::Invalid)?,
        None => DEFAULT_SLOT_MAX_LAG,
    };
    let synchronous = pg_config.synchronous;
    let pg = PostgresComponent::new(pg_config);
    fs::create_dir_all(&options.spool).map_err(|e| {
        OpsError::Invalid(format!(
            "creating the WAL spool {}: {e}",
            options.spool.display()
        ))
    })?;
    let mut sink = WalSink::open(config, tenant, component, options.lock_wait)?;
    let mut receiver: Option<Running> = None;
    let mut next_start = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut next_check = Instant::now();
    let mut behind = false; // the receiver ended and the spool is not yet stored
    let mut warned_sync = false;
    // A slot made anew after a drop reserves from where streaming starts.
    let mut reserve = true;
    let mut seen_partial: Option<(String, blake3::Hash)> = None;
    let mut next_partial = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            if let Some(mut r) = receiver.take() {
                r.stop();
            }
        }
        if !stopping && receiver.is_none() && Instant::now() >= next_start {
            match pg
                .ensure_slot(&slot, reserve)
                .and_then(|()| pg.receive_wal(&options.spool, &slot, synchronous))
            {
                Ok(r) => {
                    receiver = Some(r);
                    on(&ReceiverEvent::Receiving {
                        slot: slot.clone(),
                        synchronous,
                    });
                }
                Err(e) => {
                    on(&ReceiverEvent::ReceiverEnded {
                        detail: e.to_string(),
                    });
                    next_start = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if let Some(r) = receiver.as_mut() {
            if r.has_exited()?.is_some() {
                let exit = r.wait()?;
                receiver = None;
                behind = true;
                on(&ReceiverEvent::ReceiverEnded {
                    detail: exit.detail(),
                });
                next_start = Instant::now() + backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        let partial_due = stopping || Instant::now() >= next_partial;
        if partial_due {
            next_partial = Instant::now() + options.flush_every;
        }
        let flushed = flush(
            &mut sink,
            &pg,
            &options.spool,
            &mut seen_partial,
            partial_due,
            on,
        );
        match flushed {
            Ok(()) => {
                if behind && receiver.is_none() {
                    behind = false;
                    on(&ReceiverEvent::CaughtUp);
                }
                if receiver.is_some() {
                    backoff = Duration::from_secs(1);
                }
            }
            Err(e) => on(&ReceiverEvent::StoreFailed {
                detail: e.to_string(),
            }),
        }
        if stopping {
            return Ok(());
        }
        if receiver.is_some() && Instant::now() >= next_check {
            next_check = Instant::now() + options.check_every;
            if let Ok(Some(status)) = pg.slot_status(&slot) {
                on(&ReceiverEvent::Lag {
                    retained: status.retained,
                    server: status.current.to_string(),
                });
                if synchronous
                    && !warned_sync
                    && !names_standby(&status.synchronous_standby_names, &slot)
                {
                    warned_sync = true;
                    on(&ReceiverEvent::NotSynchronous {
                        slot: slot.clone(),
                        names: status.synchronous_standby_names.clone(),
                    });
                }
                if status.retained > max_lag {
                    if let Some(mut r) = receiver.take() {
                        r.stop();
                    }
                    // Store what arrived, then empty the spool: pg_receivewal starts where
                    // its files end, which the new slot no longer holds.
                    if let Err(e) =
                        flush(&mut sink, &pg, &options.spool, &mut seen_partial, true, on)
                    {
                        on(&ReceiverEvent::StoreFailed {
                            detail: e.to_string(),
                        });
                    }
                    clear_spool(&options.spool)?;
                    seen_partial = None;
                    pg.drop_slot(&slot)?;
                    reserve = false;
                    on(&ReceiverEvent::SlotDropped {
                        retained: status.retained,
                        max: max_lag,
                        from: status.current.to_string(),
                    });
                    next_start = Instant::now();
                } else if status.retained > max_lag / 10 * 8 {
                    on(&ReceiverEvent::SlotLag {
                        retained: status.retained,
                        max: max_lag,
                    });
                }
            }
        }
        pause(SPOOL_LOOK.min(options.flush_every), stop);
    }
}

/// Wait `for_how_long`, or less when `stop` is set meanwhile (checked every 20 ms).
pub(crate) fn pause(for_how_long: Duration, stop: &AtomicBool) {
    let until = Instant::now() + for_how_long;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl std::fmt::Display for ReceiverEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiverEvent::Receiving { slot, synchronous } => write!(
                f,
                "receiving WAL on slot {slot}{}",
                if *synchronous { " (synchronous)" } else { "" }
            ),
            ReceiverEvent::Stored {
                name,
                bytes,
                last_commit,
            } => {
                write!(f, "stored {name} ({bytes} bytes")?;
                if let Some(t) = last_commit {
                    write!(f, ", last commit {t}")?;
                }
                write!(f, ")")
            }
            ReceiverEvent::ReceiverEnded { detail } => {
                write!(f, "pg_receivewal ended, retrying: {detail}")
            }
            ReceiverEvent::CaughtUp => {
                write!(f, "caught up: everything received is in the repository")
            }
            ReceiverEvent::TimelineSwitch { history } => write!(
                f,
                "timeline switch: {history} arrived (the source was promoted); the archive \
                 follows the new timeline, take a base backup of the new primary"
            ),
            ReceiverEvent::Lag { retained, server } => write!(
                f,
                "lag: the slot holds {retained} bytes of WAL on the server (server at {server})"
            ),
            ReceiverEvent::SlotLag { retained, max } => write!(
                f,
                "the slot holds {retained} bytes of WAL on the server, {}% of slot-max-lag \
                 ({max}): the receiver falls behind (repository slow or unreachable?)",
                retained * 100 / (*max).max(1)
            ),
            ReceiverEvent::SlotDropped {
                retained,
                max,
                from,
            } => write!(
                f,
                "the slot held {retained} bytes of WAL, above slot-max-lag ({max}): dropped it \
                 to spare the server's disk and made a new one; the archive has a gap before \
                 {from}: take a base backup now"
            ),
            ReceiverEvent::NotSynchronous { slot, names } => write!(
                f,
                "synchronous = true, but synchronous_standby_names ({names:?}) does not name \
                 {slot}: commits do not wait for Haven; set it to e.g. 'ANY 1 ({slot}, \
                 <your standbys>)'"
            ),
            ReceiverEvent::StoreFailed { detail } => {
                write!(f, "storing WAL failed, retrying: {detail}")
            }
        }
    }
}

/// Remove every file of the spool (after a slot was dropped).
fn clear_spool(spool: &Path) -> Result<(), OpsError> {
    let entries = fs::read_dir(spool)
        .map_err(|e| OpsError::Invalid(format!("reading the spool {}: {e}", spool.display())))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path()).map_err(|e| {
                OpsError::Invalid(format!("removing {}: {e}", entry.path().display()))
            })?;
        }
    }
    Ok(())
}

/// Whether `synchronous_standby_names` lists `name` (or `*`).
fn names_standby(setting: &str, name: &str) -> bool {
    setting
        .split([',', '(', ')', ' '])
        .map(|s| s.trim().trim_matches('"'))
        .any(|s| s == "*" || s.eq_ignore_ascii_case(name))
}

/// Store what is new in `spool`: complete files in WAL order (then delete them), and the
/// partial segment when it changed since `seen`.
fn flush(
    sink: &mut WalSink,
    pg: &PostgresComponent,
    spool: &Path,
    seen: &mut Option<(String, blake3::Hash)>,
    with_partial: bool,
    on: &mut dyn FnMut(&ReceiverEvent),
) -> Result<(), OpsError> {
    let mut complete: Vec<(WalFile, String)> = vec![];
    // By content: a file's mtime moves in clock ticks, so a write just after a read can
    // leave it unchanged (and the size of a preallocated segment never changes).
    let mut partial: Option<(String, blake3::Hash, Vec<u8>)> = None;
    let entries = fs::read_dir(spool)
        .map_err(|e| OpsError::Invalid(format!("reading the spool {}: {e}", spool.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match WalFile::parse(&name, DEFAULT_SEGMENT_SIZE) {
            Some(WalFile::Partial { .. }) if with_partial => {
                if let Ok(bytes) = fs::read(entry.path()) {
                    partial = Some((name, blake3::hash(&bytes), bytes));
                }
            }
            Some(f @ (WalFile::Segment { .. } | WalFile::History { .. })) => {
                complete.push((f, name))
            }
            _ => {}
        }
    }
    complete.sort_by_key(|(f, _)| match *f {
        WalFile::History { timeline } => (0, 0, timeline),
        WalFile::Segment { timeline, segno } => (1, segno, timeline),
        _ => (2, 0, 0),
    });
    // The partial segment as read (name and hash), unless the last flush stored it so.
    let partial = partial.filter(|(name, hash, _)| seen.as_ref() != Some(&(name.clone(), *hash)));
    if complete.is_empty() && partial.is_none() {
        return Ok(());
    }
    let batch = sink.begin()?;
    for (file, name) in &complete {
        let path = spool.join(name);
        let bytes = fs::read(&path)
            .map_err(|e| OpsError::Invalid(format!("reading {}: {e}", path.display())))?;
        let stored = sink.store(&batch, pg, name, &path, bytes)?;
        if let WalFile::History { .. } = file {
            on(&ReceiverEvent::TimelineSwitch {
                history: name.clone(),
            });
        }
        if let Some(stored) = stored {
            on(&stored);
        }
        fs::remove_file(&path)
            .map_err(|e| OpsError::Invalid(format!("removing {}: {e}", path.display())))?;
    }
    if let Some((name, hash, bytes)) = partial {
        if let Some(stored) = sink.store(&batch, pg, &name, &spool.join(&name), bytes)? {
            on(&stored);
            *seen = Some((name, hash));
        }
    }
    sink.remove_replaced_partials(&batch)?;
    Ok(())
}

/// The repository end of a receiver: which WAL files it holds (listed once, then kept
/// up to date by what this sink stores).
pub struct WalSink {
    repo: Repository,
    tenant: String,
    component: String,
    /// The cluster whose WAL this component archives, once known.
    system: Option<String>,
    /// Stored names -> (snapshot, when stored), newest last; complete files hold one.
    stored: BTreeMap<String, Vec<(SnapshotId, SystemTime)>>,
    lock_wait: Duration,
    /// Where a partial segment is copied for pg_waldump to read it.
    scratch: PathBuf,
}

/// One flush's hold on the repository: a shared lock.
pub struct Batch {
    _lock: RepoLock,
}

impl WalSink {
    pub fn open(
        config: &Config,
        tenant: &str,
        component: &str,
        lock_wait: Duration,
    ) -> Result<WalSink, OpsError> {
        let t = config.tenant(tenant)?;
        let (repo, _) = crate::open_repository(config.repository_of(t), false)?;
        let (snapshots, _) = {
            let _lock = RepoLock::acquire(&repo, false, "wal receive", lock_wait)?;
            repo.snapshots()?
        };
        let archived = list_wal(&snapshots, tenant, component);
        let system = archived.iter().find_map(|a| a.system().map(str::to_string));
        let mut stored: BTreeMap<String, Vec<(SnapshotId, SystemTime)>> = BTreeMap::new();
        // Every partial snapshot (list_wal keeps one per name), so replaced ones go too.
        for e in &snapshots {
            if let Some(name) = wal_file_of(e, tenant, component) {
                stored
                    .entry(name.to_string())
                    .or_default()
                    .push((e.id, SystemTime::from(e.snapshot.time)));
            }
        }
        for v in stored.values_mut() {
            v.sort_by_key(|(_, t)| *t);
        }
        Ok(WalSink {
            repo,
            tenant: tenant.to_string(),
            component: component.to_string(),
            system,
            stored,
            lock_wait,
            scratch: config.work_base().join(format!(
                "haven-wal-{tenant}-{component}-{}",
                std::process::id()
            )),
        })
    }

    pub fn begin(&self) -> Result<Batch, OpsError> {
        Ok(Batch {
            _lock: RepoLock::acquire(&self.repo, false, "wal receive", self.lock_wait)?,
        })
    }

    /// Store `bytes`, read from `path`, under `name` (a complete name already stored is skipped:
    /// the receiver stored it before a restart and had not yet removed it). None: a
    /// partial segment with nothing written yet, left for the next flush.
    pub fn store(
        &mut self,
        _batch: &Batch,
        pg: &PostgresComponent,
        name: &str,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<Option<ReceiverEvent>, OpsError> {
        let file = WalFile::parse(name, DEFAULT_SEGMENT_SIZE)
            .ok_or_else(|| OpsError::Invalid(format!("{name} is not a WAL file name")))?;
        let partial = matches!(file, WalFile::Partial { .. });
        if !partial && self.stored.contains_key(name) {
            return Ok(Some(ReceiverEvent::Stored {
                name: name.to_string(),
                bytes: 0,
                last_commit: None,
            }));
        }
        if partial && segment_header(&bytes).is_none() {
            // pg_receivewal made the file and has not written its first page yet.
            return Ok(None);
        }
        let system = match file {
            WalFile::Segment { .. } | WalFile::Partial { .. } => {
                let header = segment_header(&bytes).ok_or_else(|| {
                    OpsError::Invalid(format!(
                        "{} does not start with a WAL segment header",
                        path.display()
                    ))
                })?;
                let id = header.system_identifier.to_string();
                if let Some(known) = &self.system {
                    if *known != id {
                        return Err(OpsError::Invalid(format!(
                            "{name} belongs to the cluster with system identifier {id}, but component {} \
                             of tenant {} archives cluster {known}: the url now points at another cluster; \
                             give it its own component",
                            self.component, self.tenant
                        )));
                    }
                }
                Some(header.system_identifier)
            }
            _ => None,
        };
        // pg_waldump reads segments by their name: a partial one is summarized as a copy
        // named like its segment.
        let summary_path = match file {
            WalFile::Partial { timeline, segno } => {
                fs::create_dir_all(&self.scratch).map_err(|e| {
                    OpsError::Invalid(format!("creating {}: {e}", self.scratch.display()))
                })?;
                let p = self
                    .scratch
                    .join(WalFile::Segment { timeline, segno }.name(DEFAULT_SEGMENT_SIZE));
                fs::write(&p, &bytes)
                    .map_err(|e| OpsError::Invalid(format!("copying {name}: {e}")))?;
                p
            }
            _ => path.to_path_buf(),
        };
        let tags = wal_tags(
            pg,
            &self.tenant,
            &self.component,
            name,
            system,
            &summary_path,
        );
        if summary_path != path {
            let _ = fs::remove_file(&summary_path);
        }
        let tags = tags?;
        let last_commit = tags
            .iter()
            .find_map(|t| t.strip_prefix("haven-wal-last-commit="))
            .map(str::to_string);
        let repo = self.repo.clone().indexed()?;
        let result = backup_stream(
            repo,
            bytes.as_slice(),
            name,
            tags,
            None,
            Arc::new(Progress::default()),
        )?;
        if let Some(s) = system {
            self.system.get_or_insert_with(|| s.to_string());
        }
        self.stored
            .entry(name.to_string())
            .or_default()
            .push((result.id, SystemTime::from(result.snapshot.time)));
        Ok(Some(ReceiverEvent::Stored {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            last_commit,
        }))
    }

    /// Remove partial snapshots replaced (by a newer copy, or by the complete segment)
    /// more than [`PARTIAL_KEEP`] ago.
    pub fn remove_replaced_partials(&mut self, _batch: &Batch) -> Result<usize, OpsError> {
        let now = SystemTime::now();
        let old = |t: SystemTime| now.duration_since(t).unwrap_or_default() > PARTIAL_KEEP;
        // When each complete segment was stored: its partial copies were replaced then.
        let complete: BTreeMap<String, SystemTime> = self
            .stored
            .iter()
            .filter(|(n, _)| {
                matches!(
                    WalFile::parse(n, DEFAULT_SEGMENT_SIZE),
                    Some(WalFile::Segment { .. })
                )
            })
            .filter_map(|(n, v)| v.first().map(|(_, t)| (n.clone(), *t)))
            .collect();
        let mut removed = 0;
        for (name, copies) in self.stored.iter_mut() {
            let Some(segment) = name.strip_suffix(".partial") else {
                continue;
            };
            let whole = complete.get(segment).copied();
            let mut keep = vec![];
            for (i, (id, when)) in copies.iter().enumerate() {
                // Replaced by the next copy, or by the complete segment.
                let replaced_at = copies.get(i + 1).map(|(_, t)| *t).or(whole);
                match replaced_at {
                    Some(t) if old(t) => {
                        self.repo
                            .backend()
                            .remove(FileKind::Snapshot, &id.to_hex())?;
                        removed += 1;
                    }
                    _ => keep.push((*id, *when)),
                }
            }
            *copies = keep;
        }
        self.stored.retain(|_, v| !v.is_empty());
        Ok(removed)
    }
}
