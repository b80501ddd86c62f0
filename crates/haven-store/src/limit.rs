//! [`LimitBackend`]: at most N operations of the wrapped backend run at the same time.
//!
//! A small counting semaphore (std `Mutex` + `Condvar`); callers beyond the limit wait.
//! Placed around the retry wrapper (see `compose`), a request waiting for its retry keeps
//! its slot: a struggling store gets fewer new requests, not more.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::{FileInfo, FileKind, ReadBackend, SharedBytes, StoreError, WriteBackend};

#[derive(Debug)]
struct Semaphore {
    in_use: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn acquire(&self) -> Permit<'_> {
        let mut n = self.in_use.lock().expect("limit lock poisoned");
        while *n >= self.max {
            n = self.freed.wait(n).expect("limit lock poisoned");
        }
        *n += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_use.lock().expect("limit lock poisoned");
        *n -= 1;
        self.0.freed.notify_one();
    }
}

/// Wraps a backend so that at most `max` of its operations run concurrently.
#[derive(Debug)]
pub struct LimitBackend<B> {
    inner: B,
    sem: Semaphore,
}

impl<B: WriteBackend> LimitBackend<B> {
    /// `max` is at least 1 (0 is treated as 1).
    pub fn new(inner: B, max: usize) -> Self {
        LimitBackend {
            inner,
            sem: Semaphore {
                in_use: Mutex::new(0),
                freed: Condvar::new(),
                max: max.max(1),
            },
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn max(&self) -> usize {
        self.sem.max
    }
}

impl<B: WriteBackend> ReadBackend for LimitBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        let _p = self.sem.acquire();
        self.inner.list(kind)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        let _p = self.sem.acquire();
        self.inner.read(kind, name)
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let _p = self.sem.acquire();
        self.inner.read_range(kind, name, offset, length)
    }
}

impl<B: WriteBackend> WriteBackend for LimitBackend<B> {
    fn create(&self) -> Result<(), StoreError> {
        let _p = self.sem.acquire();
        self.inner.create()
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let _p = self.sem.acquire();
        self.inner.write(kind, name, data)
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        let _p = self.sem.acquire();
        self.inner.write_shared(kind, name, data)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        let _p = self.sem.acquire();
        self.inner.remove(kind, name)
    }

    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<usize, StoreError> {
        let _p = self.sem.acquire();
        self.inner.remove_stale_temporaries(min_age)
    }
}
