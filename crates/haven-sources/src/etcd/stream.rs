//! The snapshot stream of etcd's maintenance API read back as the snapshot file, with
//! the checks that make a broken stream fail instead of being stored as a good backup.

use std::io::{self, BufRead, Read};

use serde::Deserialize;
use serde_json::Value;

use super::bolt::RevisionFinder;
use super::gateway::{bytes, int};
use crate::{Result, SourceError};

/// The snapshot stream of etcd's maintenance API read back as the snapshot file: a bbolt
/// database followed by its 32-byte SHA-256 (what `etcdctl snapshot save` writes and
/// `etcdctl snapshot restore` checks).
///
/// Each message carries a piece (`blob`) and how many database bytes are still to come
/// (`remaining_bytes`); the piece that brings it to 0 is followed by exactly one message
/// with the checksum, then the end of the stream. Anything else (an error message, a
/// count that does not add up, an early end) fails the read, so the repository discards
/// the stream. The database bytes also pass through a [`RevisionFinder`], which reads the
/// snapshot's revision.
pub(crate) struct SnapshotStream<R> {
    lines: R,
    line: Vec<u8>,
    piece: Vec<u8>,
    pos: usize,
    /// Size of the database, known from the first message.
    size: Option<u64>,
    received: u64,
    checksum_seen: bool,
    finished: bool,
    finder: RevisionFinder,
    /// Why the stream failed, in full (the reader can only return an io::Error).
    failure: Option<SourceError>,
    url: String,
}

#[derive(Deserialize)]
struct SnapshotMessage {
    result: Option<SnapshotPiece>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SnapshotPiece {
    #[serde(deserialize_with = "int")]
    remaining_bytes: u64,
    #[serde(deserialize_with = "bytes")]
    blob: Vec<u8>,
}

impl<R: BufRead> SnapshotStream<R> {
    pub(crate) fn new(lines: R, url: String) -> Self {
        SnapshotStream {
            lines,
            line: vec![],
            piece: vec![],
            pos: 0,
            size: None,
            received: 0,
            checksum_seen: false,
            finished: false,
            finder: RevisionFinder::new(),
            failure: None,
            url,
        }
    }

    /// The error that made a read fail, if one did.
    pub(crate) fn take_failure(&mut self) -> Option<SourceError> {
        self.failure.take()
    }

    /// After the stream was read to its end: the revision an etcd restored from this
    /// snapshot starts at.
    pub(crate) fn finish(self) -> Result<u64> {
        if !self.finished {
            return Err(self.broken("the snapshot was not read to its end"));
        }
        self.finder.finish().map_err(|detail| {
            SourceError::failed(
                format!(
                    "reading the revision of the snapshot of etcd at {}",
                    self.url
                ),
                format!("{detail} (Haven reads etcd 3.4's bbolt layout on little-endian hosts)"),
            )
        })
    }

    fn broken(&self, detail: impl std::fmt::Display) -> SourceError {
        let got = match self.size {
            Some(size) => format!("{} of {size} bytes", self.received),
            None => "nothing".to_string(),
        };
        SourceError::failed(
            format!("the snapshot stream of etcd at {}", self.url),
            format!("{detail} (after {got})"),
        )
    }

    /// Read the next message into `piece`, or set `finished`.
    fn next_message(&mut self) -> Result<()> {
        loop {
            self.line.clear();
            let n = self
                .lines
                .read_until(b'\n', &mut self.line)
                .map_err(|e| self.broken(e))?;
            if n == 0 {
                if !self.checksum_seen {
                    return Err(self.broken("the stream ended early"));
                }
                self.finished = true;
                return Ok(());
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.checksum_seen {
                return Err(self.broken("more data after the checksum"));
            }
            let message: SnapshotMessage = serde_json::from_slice(&self.line)
                .map_err(|e| self.broken(format!("a message that is not JSON: {e}")))?;
            if let Some(error) = message.error {
                let text = error["message"]
                    .as_str()
                    .map_or(error.to_string(), str::to_string);
                return Err(self.broken(format!("etcd reported: {text}")));
            }
            let piece = message
                .result
                .ok_or_else(|| self.broken("a message without result"))?;
            let len = piece.blob.len() as u64;
            let size = *self.size.get_or_insert(piece.remaining_bytes + len);
            if self.received < size {
                if size.checked_sub(self.received + len) != Some(piece.remaining_bytes) {
                    return Err(self.broken(format!(
                        "a piece of {len} bytes with {} bytes remaining does not add up",
                        piece.remaining_bytes
                    )));
                }
                self.finder.feed(&piece.blob);
                self.received += len;
            } else if len == 32 && piece.remaining_bytes == 0 {
                self.checksum_seen = true;
            } else {
                return Err(self.broken(format!("expected the 32-byte checksum, got {len} bytes")));
            }
            self.piece = piece.blob;
            self.pos = 0;
            return Ok(());
        }
    }
}

impl<R: BufRead> Read for SnapshotStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(failure) = &self.failure {
                return Err(io::Error::other(failure.to_string()));
            }
            if self.pos < self.piece.len() {
                let n = buf.len().min(self.piece.len() - self.pos);
                buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_message() {
                self.failure = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gateway::base64_encode;
    use super::*;
    use std::io::Cursor;

    fn message(blob: &[u8], remaining: u64) -> String {
        format!(
            "{{\"result\":{{\"remaining_bytes\":\"{remaining}\",\"blob\":\"{}\"}}}}\n",
            base64_encode(blob)
        )
    }

    fn read_stream(text: &str) -> std::result::Result<Vec<u8>, String> {
        let mut stream = SnapshotStream::new(Cursor::new(text.as_bytes().to_vec()), "x".into());
        let mut out = vec![];
        match stream.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(_) => Err(stream.take_failure().unwrap().to_string()),
        }
    }

    #[test]
    fn a_snapshot_stream_must_add_up_and_end_with_its_checksum() {
        let good = [message(b"abcd", 2), message(b"ef", 0), message(&[7; 32], 0)].concat();
        let mut want = b"abcdef".to_vec();
        want.extend_from_slice(&[7; 32]);
        assert_eq!(read_stream(&good).unwrap(), want);

        let early = [message(b"abcd", 2), message(b"ef", 0)].concat();
        assert!(read_stream(&early).unwrap_err().contains("ended early"));
        let gap = [message(b"abcd", 4), message(b"ef", 0), message(&[7; 32], 0)].concat();
        assert!(read_stream(&gap).unwrap_err().contains("does not add up"));
        let error = [
            message(b"abcd", 2),
            "{\"error\":{\"grpc_code\":14,\"message\":\"transport is closing\"}}\n".to_string(),
        ]
        .concat();
        assert!(read_stream(&error)
            .unwrap_err()
            .contains("transport is closing"));
        let extra = [good.clone(), message(b"x", 0)].concat();
        assert!(read_stream(&extra)
            .unwrap_err()
            .contains("after the checksum"));
    }
}
