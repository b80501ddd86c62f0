//! The NBD server (fixed newstyle handshake) and a small client; `docs/VOLUMES.md`,
//! section "NBD server", says what is implemented and the limits.
//!
//! ```text
//! qemu-io / nbdcopy / NbdClient ──TCP──▶ NbdServer::run (accept loop, one scoped thread
//!                                        per connection)
//!   handshake: options until NBD_OPT_GO / NBD_OPT_EXPORT_NAME ─▶ Exports::lookup(name)
//!   transmission: the connection thread reads Requests ─▶ its workers (max_in_flight):
//!                 checks (bounds, flags, 32 MiB) ─▶ BlockDevice call
//!                 ◀─ SimpleReply as each completes (IoFailure ─▶ NBD error; Shutdown
//!                    closes the connection)
//! ```
//! Main types: [`BlockDevice`] (what an export serves; the controller implements it),
//! [`Exports`] (name ─▶ device; [`ExportMap`] is the plain one), [`NbdServer`] with its
//! [`Stopper`], [`NbdClient`], [`MemDevice`] (in memory, for tests). [`proto`] holds the
//! wire constants and frames both sides share.

use std::collections::BTreeMap;
use std::sync::Arc;

mod client;
mod mem;
pub mod proto;
mod server;
#[cfg(test)]
mod tests;

pub use client::{list_exports, ClientError, ExportInfo, NbdClient};
pub use mem::MemDevice;
pub use server::{NbdServer, ServerConfig, ServerError, ServerStats, Stopper};

/// Why a block operation failed; each maps to an NBD error code in the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoFailure {
    /// NBD_EIO: the data could not be read or written (replicas failed, min-in-sync not met).
    #[error("input/output error: {0}")]
    Io(String),
    /// NBD_ENOSPC.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// NBD_EINVAL: out of range or malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// NBD_EPERM: writes refused (read-only export).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// NBD_ESHUTDOWN: this server no longer serves the export (fenced, lease lost); the
    /// client should reconnect, possibly elsewhere. The server closes the connection.
    #[error("shutting down: {0}")]
    Shutdown(String),
}

/// A device an NBD export serves. Calls run concurrently, from several connections and from
/// several requests of one connection (`ServerConfig::max_in_flight`), so `&self`.
pub trait BlockDevice: Send + Sync {
    /// Size in bytes (a multiple of 512).
    fn size(&self) -> u64;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure>;
    /// `fua`: durable before returning.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoFailure>;
    /// [`BlockDevice::write`] of data the caller already holds in an `Arc` (the NBD
    /// server): a device that keeps or fans out the buffer takes it without a copy.
    fn write_shared(&self, offset: u64, data: Arc<Vec<u8>>, fua: bool) -> Result<(), IoFailure> {
        self.write(offset, &data, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure>;
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure>;
    /// Every write acknowledged before this call durable before it returns.
    fn flush(&self) -> Result<(), IoFailure>;
    /// Text for NBD_INFO_DESCRIPTION (sent when a client asks for it), e.g. who serves
    /// the export in which epoch; none by default.
    fn description(&self) -> Option<String> {
        None
    }
}

impl IoFailure {
    /// The NBD error value a reply carries for this failure.
    pub fn nbd_error(&self) -> u32 {
        match self {
            IoFailure::Io(_) => proto::EIO,
            IoFailure::NoSpace(_) => proto::ENOSPC,
            IoFailure::Invalid(_) => proto::EINVAL,
            IoFailure::NotPermitted(_) => proto::EPERM,
            IoFailure::Shutdown(_) => proto::ESHUTDOWN,
        }
    }
}

/// What a server serves: export names to devices. Looked up on every NBD_OPT_GO,
/// NBD_OPT_INFO and NBD_OPT_EXPORT_NAME, so an implementation may change its answer over
/// time (a controller that lost its lease answers `None`).
pub trait Exports: Send + Sync {
    /// The device of export `name`; the empty name is the default export (the
    /// implementation decides which one that is, or that there is none).
    fn lookup(&self, name: &str) -> Option<Arc<dyn BlockDevice>>;
    /// The names NBD_OPT_LIST answers.
    fn names(&self) -> Vec<String>;
}

/// A fixed set of named exports, one of them optionally the default (empty name).
#[derive(Default)]
pub struct ExportMap {
    devices: BTreeMap<String, Arc<dyn BlockDevice>>,
    default: Option<String>,
}

impl ExportMap {
    pub fn new() -> ExportMap {
        ExportMap::default()
    }

    /// Adds (or replaces) export `name`. The first export added is the default one until
    /// [`ExportMap::set_default`] says otherwise.
    pub fn insert(&mut self, name: impl Into<String>, device: Arc<dyn BlockDevice>) -> &mut Self {
        let name = name.into();
        if self.default.is_none() {
            self.default = Some(name.clone());
        }
        self.devices.insert(name, device);
        self
    }

    /// Which export the empty name selects; `None`: no default export.
    pub fn set_default(&mut self, name: Option<&str>) -> &mut Self {
        self.default = name.map(str::to_owned);
        self
    }
}

impl Exports for ExportMap {
    fn lookup(&self, name: &str) -> Option<Arc<dyn BlockDevice>> {
        let name = if name.is_empty() {
            self.default.as_deref()?
        } else {
            name
        };
        self.devices.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn failures_map_to_nbd_errors() {
        let cases = [
            (IoFailure::Io(String::new()), 5),
            (IoFailure::NoSpace(String::new()), 28),
            (IoFailure::Invalid(String::new()), 22),
            (IoFailure::NotPermitted(String::new()), 1),
            (IoFailure::Shutdown(String::new()), 108),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.nbd_error(), code, "{failure:?}");
        }
    }

    #[test]
    fn export_map_default_is_the_first_unless_set() {
        let a: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(512));
        let b: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(1024));
        let mut m = ExportMap::new();
        m.insert("b", b).insert("a", a);
        assert_eq!(m.names(), ["a", "b"]);
        assert_eq!(m.lookup("").map(|d| d.size()), Some(1024));
        m.set_default(Some("a"));
        assert_eq!(m.lookup("").map(|d| d.size()), Some(512));
        m.set_default(None);
        assert!(m.lookup("").is_none());
        assert!(m.lookup("c").is_none());
    }
}
