//! Bandwidth limits: [`ThrottleBackend`] paces the bytes a backend sends and receives.
//!
//! One [`Pace`] per direction is shared by every throttled backend of the process (all
//! sites of a mirror, the S3 store), because the limit a user sets stands for their link:
//! `--limit-upload 20MiB` means at most 20 MiB/s leaving this machine in all. A request of
//! `n` bytes books the next `n / rate` seconds of its direction's schedule and waits until
//! its booking ends, so over any stretch longer than one request the rate is at most the
//! limit. Each request still travels at the link's speed once its time has come (packs go
//! in one request), so the rate is an average over requests, not a shaping of packets.
//!
//! There is no saved-up allowance (a token bucket's burst): after an idle stretch a
//! request is booked from its own start, so the largest burst is one request, one pack.
//!
//! Writes are charged before they are sent; reads after the bytes arrived (their size is
//! known then). The stack ([`crate::wrap`]) puts the throttle inside the retry layer, so a
//! retried request is on the wire again and is charged again, and only around remote
//! backends: a local folder, even as a mirror site, is not limited.
//!
//! Main types: [`Limits`] (set once per process with [`set_limits`]), [`ThrottleBackend`].

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{FileInfo, FileKind, ReadBackend, SharedBytes, StoreError, WriteBackend};

/// Bytes per second for each direction; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub upload: Option<u64>,
    pub download: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.upload.is_some() || self.download.is_some()
    }
}

/// One direction's schedule: when the bytes booked so far will have passed.
#[derive(Debug)]
pub struct Pace {
    rate: u64,
    booked_until: Mutex<Option<Instant>>,
}

impl Pace {
    pub fn new(bytes_per_second: u64) -> Pace {
        Pace {
            rate: bytes_per_second.max(1),
            booked_until: Mutex::new(None),
        }
    }

    /// Book `bytes` and return when the booking ends (start: now, or the end of the
    /// previous booking if that is later).
    pub fn book(&self, bytes: u64, now: Instant) -> Instant {
        let mut until = self.booked_until.lock().expect("pace lock");
        let start = until.filter(|u| *u > now).unwrap_or(now);
        let end = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        *until = Some(end);
        end
    }

    fn wait(&self, bytes: u64) {
        let end = self.book(bytes, Instant::now());
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
        }
    }
}

static PACES: OnceLock<(Option<Pace>, Option<Pace>)> = OnceLock::new();

/// Set the process's limits; the first call wins (the CLI calls it once at start).
pub fn set_limits(limits: Limits) {
    let _ = PACES.get_or_init(|| (limits.upload.map(Pace::new), limits.download.map(Pace::new)));
}

/// The process's limits, if any were set.
pub fn limits() -> Limits {
    match PACES.get() {
        Some((up, down)) => Limits {
            upload: up.as_ref().map(|p| p.rate),
            download: down.as_ref().map(|p| p.rate),
        },
        None => Limits::default(),
    }
}

fn paces() -> (Option<&'static Pace>, Option<&'static Pace>) {
    match PACES.get() {
        Some((up, down)) => (up.as_ref(), down.as_ref()),
        None => (None, None),
    }
}

/// Parse a rate: a number with an optional unit, `KiB`/`MiB`/`GiB` (powers of 1024) or
/// `KB`/`MB`/`GB` (powers of 1000), per second; a plain number is bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().trim_end_matches("/s");
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => {
            return Err(format!(
                "{text:?}: give a rate such as 20MiB, 500KiB or 2MB (per second)"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give a rate such as 20MiB, 500KiB or 2MB (per second)"))?;
    let bytes = n * factor;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!(
            "{text:?}: a rate must be at least 1 byte per second"
        ));
    }
    Ok(bytes as u64)
}

/// A backend whose transfers are paced by the process's [`Limits`].
#[derive(Debug)]
pub struct ThrottleBackend<B> {
    inner: B,
}

impl<B> ThrottleBackend<B> {
    pub fn new(inner: B) -> Self {
        ThrottleBackend { inner }
    }
}

fn upload(bytes: usize) {
    if let (Some(p), _) = paces() {
        p.wait(bytes as u64);
    }
}

fn download(bytes: usize) {
    if let (_, Some(p)) = paces() {
        p.wait(bytes as u64);
    }
}

impl<B: WriteBackend> ReadBackend for ThrottleBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        self.inner.list(kind)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        let data = self.inner.read(kind, name)?;
        download(data.len());
        Ok(data)
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let data = self.inner.read_range(kind, name, offset, length)?;
        download(data.len());
        Ok(data)
    }
}

impl<B: WriteBackend> WriteBackend for ThrottleBackend<B> {
    fn create(&self) -> Result<(), StoreError> {
        self.inner.create()
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        upload(data.len());
        self.inner.write(kind, name, data)
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        upload(data.as_ref().len());
        self.inner.write_shared(kind, name, data)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.inner.remove(kind, name)
    }

    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<usize, StoreError> {
        self.inner.remove_stale_temporaries(min_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_follow_each_other_at_the_rate() {
        let pace = Pace::new(1000);
        let t0 = Instant::now();
        assert_eq!(pace.book(500, t0), t0 + Duration::from_millis(500));
        // A second request at the same moment starts where the first ends.
        assert_eq!(pace.book(1000, t0), t0 + Duration::from_millis(1500));
        // After an idle stretch a booking starts at its own time (no saved-up burst).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.book(250, later), later + Duration::from_millis(250));
    }

    #[test]
    fn rates_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_rate("20MiB"), Ok(20 << 20));
        assert_eq!(parse_rate("500KiB"), Ok(500 << 10));
        assert_eq!(parse_rate("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_rate("2048"), Ok(2048));
        assert_eq!(parse_rate("1GiB/s"), Ok(1 << 30));
        for bad in ["", "fast", "0", "-5MiB", "3 parsecs"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
