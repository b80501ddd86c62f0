//! The components of a tenant: how each kind of system is backed up, restored into a
//! target, fingerprinted and probed. This crate knows nothing of repositories or of the
//! config file: a component gets its settings as a typed struct (deserialised by the ops
//! layer) and exchanges its data as byte streams.
//!
//! Data flow of one component backup (driven by `haven-ops`):
//! ```text
//! StreamComponent::backup ──dump stream (Read)──> sink (the repository, one snapshot)
//!        └─ fingerprint taken consistently with the dump ──> recorded in the recovery point
//! ```
//! and of a restore into a target (a component of the same kind, often of another tenant):
//! ```text
//! repository ──feed (Write)──> StreamComponent::restore ──> target system
//! then StreamComponent::fingerprint (compared with the recorded one) and ::probe
//! ```
//! Main types: [`StreamComponent`] (the contract every kind implements), [`Fingerprint`],
//! [`SourceError`]; every program is run through [`process`], the one choke point that
//! gives it a deadline, its own process group (killed on timeout or drop), an environment
//! without Haven's secrets, bounded stderr and a private work folder, and turns a missing
//! binary or a failing tool into a clear error.
//!
//! Kinds: [`postgres`], [`redis`], [`etcd`], [`command`]. File trees (`files`) live in the
//! ops layer because they are the repository engine's own tree backup. [`servers`] starts
//! throwaway local servers (own data directory and port): scratch targets, tests, the demo.

pub mod command;
pub mod etcd;
pub mod fingerprint;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod servers;

use std::io::{Read, Write};
use std::path::Path;

pub use fingerprint::Fingerprint;

/// Why a component operation failed. Messages say what to do; the ops layer adds the
/// tenant and component names.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A program the component needs is not installed.
    #[error("`{tool}` is not installed or not on the PATH: {hint}")]
    MissingTool { tool: String, hint: String },
    /// The system did not answer (connection refused, timeout, unknown host).
    #[error("{target} is unreachable: {detail}")]
    Unreachable { target: String, detail: String },
    /// The system answered but refused our credentials.
    #[error("{target} refused the credentials: {detail}")]
    AccessDenied { target: String, detail: String },
    /// A restore target already holds data and `force` was not given.
    #[error("{target} is not empty ({detail}); restore into an empty target, or pass --force to overwrite it")]
    TargetNotEmpty { target: String, detail: String },
    /// A tool ran and failed, or the system answered with an error.
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    /// A tool ran past its deadline and was stopped, with its whole process group.
    #[error("{what} did not finish within {after} and was stopped (with every process it started); {next}")]
    TimedOut {
        what: String,
        after: String,
        next: String,
    },
    /// The operation is not possible for this component as configured.
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SourceError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn failed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        SourceError::Failed {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// The system did not answer at all (connection refused, unknown host, connect
    /// timeout): the site may be down. Retrying soon rarely helps; the daemon alerts at
    /// once (`source-down`) rather than after its retries.
    pub fn is_unreachable(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            SourceError::Unreachable { .. } => true,
            SourceError::Io { source, .. } => matches!(
                source.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// Where a dump stream goes: the ops layer stores everything read from the reader as one
/// snapshot. It returns an error (and stores nothing) when reading fails, which is how a
/// dump tool exiting non-zero aborts the backup (see [`process::ChildOutput`]).
pub type Sink<'a> = dyn FnMut(&mut (dyn Read + Send)) -> Result<()> + 'a;

/// Where a restore's data comes from: the ops layer writes the stored stream into the
/// writer it is given and returns the number of bytes written.
pub type Feed<'a> = dyn FnMut(&mut dyn Write) -> Result<u64> + 'a;

/// Options of a restore into a target.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Overwrite a target that already holds data.
    pub force: bool,
}

/// A component whose backup is one stream (a dump), restored by feeding the stream back.
///
/// `self` is the component as configured: for `backup` the source, for `restore`,
/// `fingerprint` and `probe` the target (a component of the same kind, possibly of
/// another tenant).
pub trait StreamComponent: Send + Sync {
    /// The kind as written in the config (`postgres`, `redis`, ...).
    fn kind(&self) -> &'static str;

    /// A display name of the system, with any password removed (for reports and errors).
    fn describe(&self) -> String;

    /// Stop every program this component runs at `deadline` (the job's), besides its
    /// own `timeout` (see [`process::Limits`]).
    fn set_deadline(&mut self, deadline: Option<std::time::Instant>);

    /// The file name the stream gets inside its snapshot (e.g. `dump.pgcustom`).
    fn stream_name(&self) -> &'static str;

    /// Dump into `sink`, and return a fingerprint consistent with what was dumped. `work`
    /// is a private scratch directory (deleted after).
    fn backup(&self, sink: &mut Sink<'_>, work: &Path) -> Result<Fingerprint>;

    /// Restore a stream produced by `backup` of a component of the same kind into this
    /// target. `work` is a private scratch directory the restore may use (deleted after).
    fn restore(&self, feed: &mut Feed<'_>, work: &Path, opts: &RestoreOptions) -> Result<()>;

    /// The fingerprint of the target as it is now, comparable with the one `backup` returned.
    fn fingerprint(&self) -> Result<Fingerprint>;

    /// A health probe: the system answers and serves. Returns what was checked.
    fn probe(&self) -> Result<String>;

    /// A scratch target of this kind for `tenant verify`: a fresh, empty instance next to
    /// this one (another database, a throwaway server), removed when the returned value is
    /// dropped. `work` is a private directory that lives as long as the scratch target.
    fn scratch(&self, work: &Path) -> Result<Box<dyn ScratchTarget>>;
}

/// A throwaway restore target made by [`StreamComponent::scratch`]; dropping it removes it
/// (drops the database, stops the server).
pub trait ScratchTarget: Send {
    fn component(&self) -> &dyn StreamComponent;
}
