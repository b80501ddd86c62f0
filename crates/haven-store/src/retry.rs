//! [`RetryBackend`]: retries operations that failed with [`ErrorClass::Transient`].
//!
//! Retrying is safe because of the idempotency the backend contract promises (crate doc):
//! a `write` of a name that exists with the same content is a no-op success (names are
//! content-derived), and a `remove` of a missing file succeeds. So a write or remove whose
//! first attempt did reach the store but whose answer was lost can simply be repeated.
//! `create` is the one operation that is *not* idempotent (it fails when a repository
//! exists), so it is never retried: a transient failure of `create` is returned as is.
//! `NotFound`, `Permanent` and `NoSpace` are never retried: waiting does not change them.

use std::time::Duration;

use crate::{ErrorClass, FileInfo, FileKind, ReadBackend, SharedBytes, StoreError, WriteBackend};

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for every further retry.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 = first retry): exponential, capped, with
    /// "equal jitter" (uniform in [d/2, d]) so that many clients failing together do not
    /// retry in lock-step.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX));
        let d = exp.min(self.max_delay);
        let mut b = [0u8; 8];
        let r = match getrandom::getrandom(&mut b) {
            Ok(()) => u64::from_le_bytes(b) as f64 / u64::MAX as f64,
            Err(_) => 0.5,
        };
        d / 2 + (d / 2).mul_f64(r)
    }
}

/// Wraps a backend and retries its transient failures according to a [`RetryPolicy`].
#[derive(Debug)]
pub struct RetryBackend<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: WriteBackend> RetryBackend<B> {
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        RetryBackend { inner, policy }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn run<T>(&self, mut op: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let attempts = self.policy.max_attempts.max(1);
        let mut retry = 0;
        loop {
            match op() {
                Err(e) if e.class == ErrorClass::Transient => {
                    if retry + 1 >= attempts {
                        let mut e = e;
                        if attempts > 1 {
                            e.message = format!(
                                "{} (gave up after {attempts} attempts; the store may be down or overloaded, try again later)",
                                e.message
                            );
                        }
                        return Err(e);
                    }
                    std::thread::sleep(self.policy.delay(retry));
                    retry += 1;
                }
                other => return other,
            }
        }
    }
}

impl<B: WriteBackend> ReadBackend for RetryBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        self.run(|| self.inner.list(kind))
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        self.run(|| self.inner.read(kind, name))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.run(|| self.inner.read_range(kind, name, offset, length))
    }
}

impl<B: WriteBackend> WriteBackend for RetryBackend<B> {
    fn create(&self) -> Result<(), StoreError> {
        // Not idempotent: a retry after a lost success would report "exists".
        self.inner.create()
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.run(|| self.inner.write(kind, name, data))
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        self.run(|| self.inner.write_shared(kind, name, data.clone()))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.run(|| self.inner.remove(kind, name))
    }

    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<usize, StoreError> {
        self.run(|| self.inner.remove_stale_temporaries(min_age))
    }
}
