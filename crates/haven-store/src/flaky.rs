//! [`FlakyBackend`]: a fault-injecting wrapper, **for tests only**.
//!
//! Wraps any backend (by default a [`MemoryBackend`]) and can fail the next N operations
//! with a chosen class, be "down" (every operation fails `Transient`) through a shared
//! switch, slow every operation down, and count calls and the peak number of concurrent
//! operations. Failures happen before the inner backend is reached: a failed write wrote
//! nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    ErrorClass, FileInfo, FileKind, MemoryBackend, ReadBackend, SharedBytes, StoreError,
    WriteBackend,
};

#[derive(Debug, Default)]
pub struct FlakyBackend<B = MemoryBackend> {
    inner: B,
    down: Arc<AtomicBool>,
    fail_next: Mutex<(usize, Option<ErrorClass>)>,
    delay: Mutex<Duration>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl FlakyBackend<MemoryBackend> {
    /// A flaky memory backend.
    pub fn new() -> Self {
        Self::wrap(MemoryBackend::new())
    }
}

impl<B: WriteBackend> FlakyBackend<B> {
    pub fn wrap(inner: B) -> Self {
        FlakyBackend {
            inner,
            down: Arc::default(),
            fail_next: Mutex::new((0, None)),
            delay: Mutex::new(Duration::ZERO),
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Fail the next `n` operations with `Transient`.
    pub fn fail_next(&self, n: usize) {
        self.fail_next_with(n, ErrorClass::Transient);
    }

    /// Fail the next `n` operations with `class`.
    pub fn fail_next_with(&self, n: usize, class: ErrorClass) {
        *self.fail_next.lock().unwrap() = (n, Some(class));
    }

    /// Take the site down (every operation fails `Transient`) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The down switch, to share with other test code.
    pub fn down_switch(&self) -> Arc<AtomicBool> {
        self.down.clone()
    }

    /// Sleep this long in every operation.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Operations attempted so far (including failed ones; `location` not counted).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The most operations that ran at the same time.
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn op<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let injected = {
            let mut f = self.fail_next.lock().unwrap();
            if f.0 > 0 {
                f.0 -= 1;
                f.1
            } else {
                None
            }
        };
        let result = if self.down.load(Ordering::SeqCst) {
            Err(StoreError::new(
                ErrorClass::Transient,
                &self.inner.location(),
                what,
                "site is down (injected)",
            ))
        } else if let Some(class) = injected {
            Err(StoreError::new(
                class,
                &self.inner.location(),
                what,
                "injected failure",
            ))
        } else {
            f()
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl<B: WriteBackend> ReadBackend for FlakyBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        self.op(kind.folder(), || self.inner.list(kind))
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        self.op(&kind.path(name), || self.inner.read(kind, name))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.op(&kind.path(name), || {
            self.inner.read_range(kind, name, offset, length)
        })
    }
}

impl<B: WriteBackend> WriteBackend for FlakyBackend<B> {
    fn create(&self) -> Result<(), StoreError> {
        self.op("", || self.inner.create())
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.op(&kind.path(name), || self.inner.write(kind, name, data))
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        self.op(&kind.path(name), || {
            self.inner.write_shared(kind, name, data.clone())
        })
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.op(&kind.path(name), || self.inner.remove(kind, name))
    }

    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<usize, StoreError> {
        self.op("", || self.inner.remove_stale_temporaries(min_age))
    }
}
