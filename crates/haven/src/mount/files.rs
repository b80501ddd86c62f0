//! Reading a file of a snapshot at any offset: [`OpenFile`] knows where each content
//! blob starts (from the plaintext lengths the index records), so a read of `size`
//! bytes at `offset` fetches only the blobs that cover that range, through the caller's
//! blob source (the mount's bounded cache in front of the repository).

use std::sync::Arc;

use haven_repo::id::BlobId;
use haven_repo::index::MasterIndex;

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The blob is not in the index.
    NotIndexed(BlobId),
    /// Its plaintext has another length than the index says.
    WrongLength(BlobId, usize, u64),
    /// The blob could not be read.
    Repo(BlobId, haven_repo::RepoError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotIndexed(id) => write!(
                f,
                "blob {} is not in the index; run `haven check`",
                id.short()
            ),
            ReadError::WrongLength(id, got, want) => write!(
                f,
                "blob {} holds {got} bytes where the index says {want}; run `haven check`",
                id.short()
            ),
            ReadError::Repo(id, e) => write!(f, "blob {}: {e}", id.short()),
        }
    }
}

/// Where a read gets a blob's plaintext from.
pub type BlobSource<'a> = dyn FnMut(&BlobId) -> Result<Arc<Vec<u8>>, ReadError> + 'a;

/// One open file: its content blobs and where each ends in the file.
#[derive(Debug)]
pub struct OpenFile {
    content: Arc<[BlobId]>,
    /// `ends[i]`: the file offset just past blob `i`.
    ends: Vec<u64>,
}

impl OpenFile {
    pub fn new(content: Arc<[BlobId]>, index: &MasterIndex) -> Result<OpenFile, ReadError> {
        let mut ends = Vec::with_capacity(content.len());
        let mut at = 0u64;
        for id in content.iter() {
            let loc = index.get(id).ok_or(ReadError::NotIndexed(*id))?;
            at += u64::from(loc.blob.raw_length);
            ends.push(at);
        }
        Ok(OpenFile { content, ends })
    }

    /// For tests: blobs of the given plaintext lengths.
    #[cfg(test)]
    fn with_lengths(content: Vec<BlobId>, lengths: &[u64]) -> OpenFile {
        let ends = lengths
            .iter()
            .scan(0, |at, l| {
                *at += l;
                Some(*at)
            })
            .collect();
        OpenFile {
            content: content.into(),
            ends,
        }
    }

    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file), reading only the
    /// blobs that cover the range.
    pub fn read(
        &self,
        offset: u64,
        size: usize,
        blob: &mut BlobSource<'_>,
    ) -> Result<Vec<u8>, ReadError> {
        let end = offset.saturating_add(size as u64).min(self.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        let mut i = self.ends.partition_point(|&e| e <= offset);
        while at < end {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            let id = &self.content[i];
            let data = blob(id)?;
            let want = self.ends[i] - start;
            if data.len() as u64 != want {
                return Err(ReadError::WrongLength(*id, data.len(), want));
            }
            let from = (at - start) as usize;
            let to = (end.min(self.ends[i]) - start) as usize;
            out.extend_from_slice(&data[from..to]);
            at = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_range_from_only_the_blobs_that_cover_it() {
        let lengths = [5u64, 0, 7, 3];
        let ids: Vec<BlobId> = (0..4u8).map(|i| BlobId([i; 32])).collect();
        let file = OpenFile::with_lengths(ids, &lengths);
        let whole: Vec<u8> = (0..15u8).collect();
        let plain = |id: &BlobId| -> Vec<u8> {
            let i = id.0[0] as usize;
            let start: u64 = lengths[..i].iter().sum();
            whole[start as usize..(start + lengths[i]) as usize].to_vec()
        };
        for offset in 0..17u64 {
            for size in 0..18usize {
                let mut fetched = vec![];
                let got = file
                    .read(offset, size, &mut |id| {
                        fetched.push(id.0[0]);
                        Ok(Arc::new(plain(id)))
                    })
                    .unwrap();
                let (a, b) = ((offset as usize).min(15), (offset as usize + size).min(15));
                assert_eq!(got, whole[a..b], "offset {offset} size {size}");
                // Never a blob outside the range (the empty blob aside).
                for f in fetched.iter().filter(|&&f| lengths[f as usize] > 0) {
                    let s: u64 = lengths[..*f as usize].iter().sum();
                    assert!(s < b as u64 && s + lengths[*f as usize] > a as u64);
                }
            }
        }
    }

    #[test]
    fn a_blob_of_the_wrong_length_is_an_error() {
        let file = OpenFile::with_lengths(vec![BlobId([1; 32])], &[4]);
        let r = file.read(0, 4, &mut |_| Ok(Arc::new(vec![0; 3])));
        assert!(matches!(r, Err(ReadError::WrongLength(_, 3, 4))));
    }
}
