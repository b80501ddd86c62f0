//! Compression of chunk data: zstd, skipped where the data does not compress.
//!
//! The test is a trial compression of a 16 KiB sample from the middle of the chunk at
//! level 1: random or already-compressed data fails it in microseconds and is stored as
//! is, so backups of media or encrypted files pay almost nothing for compression.
//!
//! Level 1 runs with fixed match-finder parameters instead of zstd's size-dependent
//! table ([`FASTEST_MIN_MATCH`], [`FASTEST_HASH_LOG`]); [`AUTO`], the default, uses
//! level 3 where the sample looks like text (ADR 0022).

use std::cell::RefCell;

const SAMPLE: usize = 16 << 10;

thread_local! {
    /// One compressor per thread and level: creating a zstd context per chunk costs
    /// more than compressing a small chunk.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A compressor for `level`. Level 1 gets fixed parameters (ADR 0022): zstd picks
/// level 1's match finder by input size, and above 256 KiB (about half of all chunks)
/// its table asks for matches of at least 6 bytes in a 2^13-entry hash table, which
/// loses 12 % on PostgreSQL WAL and other page-structured data against the 5 bytes and
/// 2^14 entries it uses below 256 KiB, at the same speed. Fixed, every chunk gets the
/// small-input parameters.
fn compressor(level: i32) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::{CParameter, Strategy};
    let mut c = zstd::bulk::Compressor::new(level).ok()?;
    if level == 1 {
        for p in [
            CParameter::Strategy(Strategy::ZSTD_fast),
            CParameter::MinMatch(FASTEST_MIN_MATCH),
            CParameter::HashLog(FASTEST_HASH_LOG),
        ] {
            c.set_parameter(p).ok()?;
        }
    }
    Some(c)
}

/// Level 1's fixed parameters (see [`compressor`]).
pub const FASTEST_MIN_MATCH: u32 = 5;
pub const FASTEST_HASH_LOG: u32 = 14;

pub(crate) fn compress_with(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let i = match all.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                all.push((level, compressor(level)?));
                all.len() - 1
            }
        };
        all[i].1.compress(data).ok()
    })
}
/// Store compressed only when it saves at least this fraction.
const MIN_SAVING: f64 = 0.03;

/// The config's `compression_level` for `auto` (ADR 0022): chunks whose 16 KiB sample
/// level 1 shrinks to no less than [`AUTO_STRONG_FROM`] of its size (text: logs, SQL,
/// JSON; on the incompressible side the sample test stores them raw) are compressed at
/// level 3, everything else at level 1.
pub const AUTO: i32 = 0;
/// Below this sample ratio (tables of repeated rows, WAL, dumps of tables) level 3
/// stores as much as level 1 or more, at three times the CPU
/// (`bench/results/2026-12-06-compression-auto.txt`).
pub const AUTO_STRONG_FROM: f64 = 0.28;

/// `Some(compressed)` when compression pays off, `None` to store the data raw.
/// `level` is a zstd level or [`AUTO`]. Deterministic: the result depends on the data
/// and the level only.
pub fn compress_chunk(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if data.len() < 64 {
        return None;
    }
    let mut sample_ratio = None;
    if data.len() > SAMPLE * 2 {
        let start = data.len() / 2 - SAMPLE / 2;
        let sample = &data[start..start + SAMPLE];
        let trial = compress_with(sample, 1)?;
        let ratio = trial.len() as f64 / sample.len() as f64;
        if ratio > 1.0 - MIN_SAVING {
            return None;
        }
        sample_ratio = Some(ratio);
    }
    let level = match (level, sample_ratio) {
        (AUTO, Some(r)) if r >= AUTO_STRONG_FROM => 3,
        (AUTO, _) => 1,
        (l, _) => l,
    };
    let out = compress_with(data, level)?;
    (out.len() as f64 <= data.len() as f64 * (1.0 - MIN_SAVING)).then_some(out)
}

/// Upper bound for the raw length of a blob: data chunks are at most 64 MiB
/// (`ChunkerParams`), tree blobs are encoded objects of at most
/// [`crate::codec::MAX_OBJECT_BODY`] plus their 10-byte envelope.
pub const MAX_RAW_LEN: usize = crate::codec::MAX_OBJECT_BODY + 10;

/// Decompress a blob to exactly `raw_len` bytes. `raw_len` is checked against
/// [`MAX_RAW_LEN`] before the output buffer is allocated, so a damaged length cannot
/// make this allocate gigabytes (found by `fuzz/`, target `decompress_chunk`).
/// Decompress into `out` (cleared first), reusing its allocation.
pub fn decompress_into(data: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if raw_len > MAX_RAW_LEN {
        return Err(format!("claims an implausible size of {raw_len} bytes"));
    }
    out.clear();
    out.reserve(raw_len);
    let n = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        slot.as_mut()
            .expect("set above")
            .decompress_to_buffer(data, out)
            .map_err(|e| e.to_string())
    });
    let n = n.map_err(|e| format!("does not decompress: {e}"))?;
    if n != raw_len {
        return Err(format!("decompressed to {n} bytes, expected {raw_len}"));
    }
    Ok(())
}

/// [`decompress_into`] a new buffer (with the thread's reused zstd context: creating one
/// per tree blob showed in profiles of tree walks).
pub fn decompress_chunk(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decompress_into(data, raw_len, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn random_data_is_stored_raw() {
        let data: Vec<u8> = (0..200_000)
            .map(|_| crate::crypto::random_bytes::<1>()[0])
            .collect();
        assert!(compress_chunk(&data, 3).is_none());
    }

    /// Deterministic pseudo-random numbers (a linear congruential generator).
    fn numbers(seed: u64) -> impl FnMut() -> usize {
        let mut x = seed;
        move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        }
    }

    /// Page-structured data like PostgreSQL WAL (8 KiB records sharing most bytes with
    /// earlier ones, a few changed fields in each): above 256 KiB zstd's own level-1
    /// table (6-byte matches) stores it clearly larger than the fixed parameters do.
    #[test]
    fn level_1_keeps_short_matches_in_chunks_above_256_kib() {
        let mut data = Vec::new();
        let mut next = numbers(7);
        let template: Vec<u8> = (0..8192).map(|i| (i * 7 % 251) as u8).collect();
        while data.len() < 1 << 20 {
            let mut page = template.clone();
            // Every sixth byte differs: runs of 5 equal bytes remain, of 6 none.
            for i in (0..page.len()).step_by(6) {
                page[i] = next() as u8;
            }
            data.extend_from_slice(&page);
        }
        let fixed = compress_with(&data, 1).unwrap().len();
        let table = zstd::bulk::compress(&data, 1).unwrap().len();
        assert!(
            (fixed as f64) < table as f64 * 0.97,
            "fixed parameters {fixed} bytes, zstd's table {table}"
        );
        assert_eq!(
            decompress_chunk(&compress_chunk(&data, 1).unwrap(), data.len()).unwrap(),
            data
        );
    }

    /// `auto`: text (a middle sample ratio) at level 3, highly compressible data at
    /// level 1; the same data always gives the same frame.
    #[test]
    fn auto_uses_level_3_for_text_and_level_1_for_the_rest() {
        let mut next = numbers(11);
        // Words of random letters from a vocabulary, as in prose or logs.
        let words: Vec<Vec<u8>> = (0..5000)
            .map(|_| {
                (0..3 + next() % 8)
                    .map(|_| b'a' + (next() % 26) as u8)
                    .collect()
            })
            .collect();
        let mut text = Vec::new();
        while text.len() < 1 << 20 {
            text.extend_from_slice(&words[next() % words.len()]);
            text.push(b' ');
        }
        let auto = compress_chunk(&text, AUTO).unwrap();
        let (l1, l3) = (
            compress_chunk(&text, 1).unwrap(),
            compress_chunk(&text, 3).unwrap(),
        );
        assert!(
            auto == l3,
            "auto {} bytes, level 3 {}, level 1 {}",
            auto.len(),
            l3.len(),
            l1.len()
        );
        assert!(l3.len() < l1.len());
        assert!(compress_chunk(&text, AUTO).unwrap() == auto);
        assert!(decompress_chunk(&auto, text.len()).unwrap() == text);
        let zeros = vec![0u8; 1 << 20];
        assert!(compress_chunk(&zeros, AUTO) == compress_chunk(&zeros, 1));
    }

    proptest! {
        #[test]
        fn compression_roundtrips(data in proptest::collection::vec(0u8..4, 0..100_000)) {
            if let Some(c) = compress_chunk(&data, 3) {
                prop_assert_eq!(decompress_chunk(&c, data.len()).unwrap(), data);
            }
        }
    }
}
