//! An in-memory [`BlockDevice`] for tests and benches: no durability, counters of what
//! the server asked for, and an injectable failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{BlockDevice, IoFailure};

/// A device held in memory. `fail_with` makes every later call fail the same way (a
/// replica set that lost its quorum, a fenced controller) until `clear_failure`.
#[derive(Debug)]
pub struct MemDevice {
    data: Mutex<Vec<u8>>,
    failure: Mutex<Option<IoFailure>>,
    flushes: AtomicU64,
    fua_writes: AtomicU64,
}

impl MemDevice {
    /// A zeroed device of `size` bytes.
    pub fn new(size: usize) -> MemDevice {
        MemDevice::from_bytes(vec![0; size])
    }

    pub fn from_bytes(data: Vec<u8>) -> MemDevice {
        MemDevice {
            data: Mutex::new(data),
            failure: Mutex::new(None),
            flushes: AtomicU64::new(0),
            fua_writes: AtomicU64::new(0),
        }
    }

    /// A copy of the whole content.
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().expect("mem device lock").clone()
    }

    pub fn fail_with(&self, failure: IoFailure) {
        *self.failure.lock().expect("mem device lock") = Some(failure);
    }

    pub fn clear_failure(&self) {
        *self.failure.lock().expect("mem device lock") = None;
    }

    /// How many FLUSH calls reached the device.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// How many write, write-zeroes or trim calls asked for FUA.
    pub fn fua_writes(&self) -> u64 {
        self.fua_writes.load(Ordering::SeqCst)
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), IoFailure> {
        if let Some(f) = self.failure.lock().expect("mem device lock").clone() {
            return Err(f);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(IoFailure::Invalid(format!(
                "{len} bytes at {offset} beyond the device's {} bytes",
                self.size()
            ))),
        }
    }

    fn fill(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.check(offset, len)?;
        if fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        let mut data = self.data.lock().expect("mem device lock");
        data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.lock().expect("mem device lock").len() as u64
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure> {
        self.check(offset, buf.len() as u64)?;
        let data = self.data.lock().expect("mem device lock");
        buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, src: &[u8], fua: bool) -> Result<(), IoFailure> {
        self.check(offset, src.len() as u64)?;
        if fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        let mut data = self.data.lock().expect("mem device lock");
        data[offset as usize..offset as usize + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.fill(offset, len, fua)
    }

    /// Trimmed ranges read back as zeroes (allowed: after a trim the content is undefined).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.fill(offset, len, fua)
    }

    fn flush(&self) -> Result<(), IoFailure> {
        self.check(0, 0)?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
