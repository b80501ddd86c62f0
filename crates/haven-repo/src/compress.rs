//! Compression of chunk data: zstd, skipped where the data does not compress.
//!
//! The test is a trial compression of a 16 KiB sample from the middle of the chunk at
//! level 1: random or already-compressed data fails it in microseconds and is stored as
//! is, so backups of media or encrypted files pay almost nothing for compression.

const SAMPLE: usize = 16 << 10;
/// Store compressed only when it saves at least this fraction.
const MIN_SAVING: f64 = 0.03;

/// `Some(compressed)` when compression pays off, `None` to store the data raw.
pub fn compress_chunk(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if data.len() < 64 {
        return None;
    }
    if data.len() > SAMPLE * 2 {
        let start = data.len() / 2 - SAMPLE / 2;
        let sample = &data[start..start + SAMPLE];
        let trial = zstd::bulk::compress(sample, 1).ok()?;
        if trial.len() as f64 > sample.len() as f64 * (1.0 - MIN_SAVING) {
            return None;
        }
    }
    let out = zstd::bulk::compress(data, level).ok()?;
    (out.len() as f64 <= data.len() as f64 * (1.0 - MIN_SAVING)).then_some(out)
}

pub fn decompress_chunk(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let out =
        zstd::bulk::decompress(data, raw_len).map_err(|e| format!("does not decompress: {e}"))?;
    if out.len() != raw_len {
        return Err(format!(
            "decompressed to {} bytes, expected {raw_len}",
            out.len()
        ));
    }
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

    proptest! {
        #[test]
        fn compression_roundtrips(data in proptest::collection::vec(0u8..4, 0..100_000)) {
            if let Some(c) = compress_chunk(&data, 3) {
                prop_assert_eq!(decompress_chunk(&c, data.len()).unwrap(), data);
            }
        }
    }
}
