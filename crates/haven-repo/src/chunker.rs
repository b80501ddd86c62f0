//! Content-defined chunking (FastCDC with normalized chunking).
//!
//! A rolling "gear" hash runs over the data; a chunk ends where the hash's top bits are
//! zero. Before the average size a harder mask (2 more bits) applies, after it an
//! easier one (2 fewer), which narrows the size distribution around the average. The
//! gear table is derived from the repository key, so chunk boundaries (and with them
//! chunk sizes, visible in pack sizes) cannot be predicted by someone without the key.
//!
//! [`ChunkStream`] cuts any `Read` into chunks with one buffer of twice the maximum
//! chunk size: memory is constant whatever the size of the input.

use serde::{Deserialize, Serialize};
use std::io::Read;

/// Chunk size limits, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 256 << 10,
            avg_size: 1 << 20,
            max_size: 4 << 20,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_size >= 1024
            && self.avg_size.is_power_of_two()
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.max_size <= 64 << 20;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunker sizes min={} avg={} max={}: need 1 KiB <= min < avg < max <= 64 MiB, avg a power of two",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

/// A chunker for one repository: its gear table and masks.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    mask_hard: u64,
    mask_easy: u64,
    params: ChunkerParams,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn top_bits(n: u32) -> u64 {
    !0u64 << (64 - n)
}

impl Chunker {
    /// `seed` is a secret derived from the repository key.
    pub fn new(params: ChunkerParams, seed: &[u8; 32]) -> Self {
        let mut gear = Box::new([0u64; 256]);
        let mut xof = blake3::Hasher::new_keyed(seed)
            .update(b"haven gear table v1")
            .finalize_xof();
        for g in gear.iter_mut() {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            *g = u64::from_le_bytes(b);
        }
        let bits = params.avg_size.trailing_zeros();
        Chunker {
            gear,
            mask_hard: top_bits(bits + 2),
            mask_easy: top_bits(bits - 2),
            params,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. `data` holds everything available up to
    /// `max_size`; when it is shorter than that, its end is the end of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let len = data.len().min(p.max_size as usize);
        if len <= p.min_size as usize {
            return len;
        }
        let normal = (p.avg_size as usize).min(len);
        let mut hash = 0u64;
        let mut i = p.min_size as usize;
        while i < normal {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_hard == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < len {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_easy == 0 {
                return i + 1;
            }
            i += 1;
        }
        len
    }
}

/// Chunks of a reader, in order. The buffer is allocated and zeroed once; refills
/// move the unread tail to the front and read into the rest.
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'c, R: Read> ChunkStream<'c, R> {
    pub fn new(chunker: &'c Chunker, reader: R) -> Self {
        Self::with_buffer(chunker, reader, Vec::new())
    }

    /// Reuse a buffer from an earlier stream (see [`ChunkStream::into_buffer`]): backing up
    /// thousands of small files then costs no allocation per file.
    pub fn with_buffer(chunker: &'c Chunker, reader: R, mut buf: Vec<u8>) -> Self {
        let cap = chunker.params.max_size as usize * 2;
        if buf.len() != cap {
            buf = vec![0; cap];
        }
        ChunkStream {
            chunker,
            reader,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Give the buffer back for the next stream.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.fill()?;
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return Ok(None);
        }
        let n = self.chunker.cut(avail);
        let chunk = avail[..n].to_vec();
        self.start += n;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker() -> Chunker {
        Chunker::new(
            ChunkerParams {
                min_size: 2048,
                avg_size: 8192,
                max_size: 32768,
            },
            &[7; 32],
        )
    }

    fn chunks(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut s = ChunkStream::new(c, data);
        let mut out = vec![];
        while let Some(ch) = s.next_chunk().unwrap() {
            out.push(ch);
        }
        out
    }

    fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
        let mut x = blake3::Hasher::new().update(&[seed]).finalize_xof();
        let mut v = vec![0u8; n];
        x.fill(&mut v);
        v
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let c = chunker();
        let data = pseudo_random(1 << 20, 1);
        let mut edited = data[..300_000].to_vec();
        edited.extend_from_slice(b"inserted bytes shift every offset after this point");
        edited.extend_from_slice(&data[300_000..]);
        let a: std::collections::HashSet<_> = chunks(&c, &data).into_iter().collect();
        let b = chunks(&c, &edited);
        let shared = b.iter().filter(|ch| a.contains(*ch)).count();
        assert!(
            shared + 3 >= b.len(),
            "only the chunks around the edit may change: {shared} of {}",
            b.len()
        );
    }

    #[test]
    fn sizes_stay_within_limits_and_near_average() {
        let c = chunker();
        let all = chunks(&c, &pseudo_random(4 << 20, 2));
        for ch in &all[..all.len() - 1] {
            assert!(
                ch.len() >= 2048 && ch.len() <= 32768,
                "chunk of {} bytes",
                ch.len()
            );
        }
        let avg = (4 << 20) / all.len();
        assert!((4096..16384).contains(&avg), "average {avg} far from 8192");
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input(data in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            let c = chunker();
            prop_assert_eq!(chunks(&c, &data).concat(), data);
        }
    }
}
