//! The NBD server (fixed newstyle handshake) and a small client. Owned by the nbd work;
//! the trait below is the interface the controller implements.

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

/// A device an NBD export serves. Called from one thread per connection, so `&self`.
pub trait BlockDevice: Send + Sync {
    /// Size in bytes (a multiple of 512).
    fn size(&self) -> u64;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure>;
    /// `fua`: durable before returning.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoFailure>;
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure>;
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure>;
    /// Every write acknowledged before this call durable before it returns.
    fn flush(&self) -> Result<(), IoFailure>;
}
