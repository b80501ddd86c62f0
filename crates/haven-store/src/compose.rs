//! The one place where cross-cutting concerns are wrapped around a raw backend.
//!
//! Stack, outside in: [`LimitBackend`] (at most `connections` requests in flight) around
//! [`RetryBackend`] (transient failures retried with backoff) around, when the process has
//! bandwidth limits (`--limit-upload`, `--limit-download`) and the raw backend is remote
//! (S3; a local folder, even as a mirror site, is not limited), [`ThrottleBackend`],
//! around the raw backend.
//! Per-request timeouts are not a wrapper: a timeout has to abort the request inside the
//! transport, so each network backend (S3) enforces its own and reports an expired one as
//! [`crate::ErrorClass::Transient`], which the retry layer then handles.
//!
//! A mirror wraps every site in its own stack ([`mirror_stack`]), so that one slow or
//! retrying site does not hold the permits of the others.

use std::sync::Arc;
use std::time::Duration;

use crate::{
    DynBackend, FileInfo, FileKind, LimitBackend, MinSites, MirrorBackend, ReadBackend,
    RetryBackend, RetryPolicy, SharedBytes, StoreError, ThrottleBackend, WriteBackend,
};

/// Options of the standard stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOptions {
    pub retry: RetryPolicy,
    /// Maximum concurrent requests to one backend.
    pub connections: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            retry: RetryPolicy::default(),
            connections: 5,
        }
    }
}

/// Wrap a raw backend in the standard stack: limit(retry(raw)), with throttle(raw)
/// inside for a remote backend when the process has bandwidth limits.
pub fn wrap(raw: DynBackend, options: &StackOptions) -> DynBackend {
    let raw: DynBackend = if crate::throttle::limits().any() && raw.remote() {
        Arc::new(ThrottleBackend::new(raw))
    } else {
        raw
    };
    Arc::new(LimitBackend::new(
        RetryBackend::new(raw, options.retry.clone()),
        options.connections,
    ))
}

/// A mirror of named raw sites, each wrapped in the standard stack.
pub fn mirror_stack(
    sites: Vec<(String, DynBackend)>,
    min_sites: MinSites,
    options: &StackOptions,
) -> Result<MirrorBackend, StoreError> {
    let sites = sites
        .into_iter()
        .map(|(name, raw)| (name, wrap(raw, options)))
        .collect();
    MirrorBackend::new(sites, min_sites)
}

// A shared backend is a backend, so wrappers and the mirror take `DynBackend` sites.
impl<T: ReadBackend + ?Sized> ReadBackend for Arc<T> {
    fn location(&self) -> String {
        (**self).location()
    }

    fn remote(&self) -> bool {
        (**self).remote()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        (**self).list(kind)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        (**self).read(kind, name)
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        (**self).read_range(kind, name, offset, length)
    }
}

impl<T: WriteBackend + ?Sized> WriteBackend for Arc<T> {
    fn create(&self) -> Result<(), StoreError> {
        (**self).create()
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        (**self).write(kind, name, data)
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        (**self).write_shared(kind, name, data)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        (**self).remove(kind, name)
    }

    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<usize, StoreError> {
        (**self).remove_stale_temporaries(min_age)
    }
}
