//! The RDB a Redis server sends to a replica after `SYNC`, read as a plain byte stream.
//!
//! After `SYNC` the server sends bare `\n` keep-alives while it prepares the RDB, then a
//! header: either `$<len>\r\n` followed by exactly `len` bytes (disk-based replication),
//! or `$EOF:<40 chars>\r\n` followed by the RDB and those same 40 chars (diskless
//! replication). [`read_sync_header`] reads up to the first RDB byte; [`RdbBody`] yields
//! exactly the RDB bytes and reports a connection closed too early as an error, so a
//! truncated RDB never looks complete.

use std::io::{self, BufRead, Read};

use super::resp::{protocol_error, read_line};

/// Length of the end marker of a diskless transfer.
pub const EOF_MARK_LEN: usize = 40;

/// How the RDB that follows is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delimiter {
    /// Exactly this many bytes follow.
    Length(u64),
    /// The RDB ends with this marker (not part of the RDB).
    EndMark([u8; EOF_MARK_LEN]),
}

/// Read the server's answer to `SYNC` up to the first byte of the RDB. `Ok(Err(message))`
/// is an error reply of the server (e.g. `NOAUTH ...`).
pub fn read_sync_header<R: BufRead>(r: &mut R) -> io::Result<Result<Delimiter, String>> {
    loop {
        // Keep-alives are a bare "\n"; look at the next byte before reading a line.
        let next = r.fill_buf()?.first().copied();
        match next {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before sending the RDB",
                ))
            }
            Some(b'\n') => {
                r.consume(1);
                continue;
            }
            Some(_) => {}
        }
        let line = read_line(r)?;
        if let Some(message) = line.strip_prefix(b"-") {
            return Ok(Err(String::from_utf8_lossy(message).into_owned()));
        }
        let Some(spec) = line.strip_prefix(b"$") else {
            return Err(protocol_error(
                "expected the RDB header ($<length>) after SYNC",
            ));
        };
        if let Some(mark) = spec.strip_prefix(b"EOF:") {
            let mark: [u8; EOF_MARK_LEN] = mark
                .try_into()
                .map_err(|_| protocol_error("the end marker after $EOF: is not 40 bytes"))?;
            return Ok(Ok(Delimiter::EndMark(mark)));
        }
        let len = std::str::from_utf8(spec)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol_error("the RDB length is not a number"))?;
        return Ok(Ok(Delimiter::Length(len)));
    }
}

/// Exactly the bytes of one RDB, read from the replication stream.
pub struct RdbBody<R> {
    src: R,
    delimiter: Delimiter,
    /// Bytes read so far (returned or held back).
    read: u64,
    /// End-marker mode: bytes read but not yet returned; the last 40 are held back until we
    /// know whether they are the marker.
    held: Vec<u8>,
    start: usize,
    done: bool,
}

impl<R: Read> RdbBody<R> {
    pub fn new(src: R, delimiter: Delimiter) -> Self {
        RdbBody {
            src,
            done: delimiter == Delimiter::Length(0),
            delimiter,
            read: 0,
            held: Vec::new(),
            start: 0,
        }
    }

    /// Whether the whole RDB was returned.
    pub fn is_done(&self) -> bool {
        self.done && self.start == self.held.len()
    }

    fn closed_early(&self) -> io::Error {
        let expected = match self.delimiter {
            Delimiter::Length(len) => format!("of {len} bytes"),
            Delimiter::EndMark(_) => "before the end marker".to_string(),
        };
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the server closed the connection after {} bytes of the RDB, {expected}",
                self.read
            ),
        )
    }
}

impl<R: Read> Read for RdbBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mark = match self.delimiter {
            Delimiter::Length(len) => {
                let left = len - self.read;
                if left == 0 {
                    return Ok(0);
                }
                let want = (buf.len() as u64).min(left) as usize;
                let n = self.src.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(self.closed_early());
                }
                self.read += n as u64;
                self.done = self.read == len;
                return Ok(n);
            }
            Delimiter::EndMark(mark) => mark,
        };
        loop {
            let keep = if self.done { 0 } else { EOF_MARK_LEN };
            let ready = (self.held.len() - self.start).saturating_sub(keep);
            if ready > 0 {
                let n = ready.min(buf.len());
                buf[..n].copy_from_slice(&self.held[self.start..self.start + n]);
                self.start += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.held.drain(..self.start);
            self.start = 0;
            let old = self.held.len();
            self.held.resize(old + 64 * 1024, 0);
            let n = match self.src.read(&mut self.held[old..]) {
                Ok(n) => n,
                Err(e) => {
                    self.held.truncate(old);
                    return Err(e);
                }
            };
            self.held.truncate(old + n);
            if n == 0 {
                return Err(self.closed_early());
            }
            self.read += n as u64;
            // Like Redis itself, look for the marker at the end of what arrived: the server
            // sends nothing after it until the replica acknowledges.
            if self.held.ends_with(&mark) {
                self.held.truncate(self.held.len() - EOF_MARK_LEN);
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader returning its data in small pieces, like a socket.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn rdb_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_length_delimited_rdb_after_keepalives_reads_exactly() {
        let rdb = rdb_bytes(100_000);
        let mut wire = b"\n\n\n".to_vec();
        wire.extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
        wire.extend_from_slice(&rdb);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let mut r = io::BufReader::new(Trickle(&wire, 777));
        let delim = read_sync_header(&mut r).unwrap().unwrap();
        assert_eq!(delim, Delimiter::Length(rdb.len() as u64));
        let mut body = RdbBody::new(&mut r, delim);
        let mut got = vec![];
        body.read_to_end(&mut got).unwrap();
        assert!(body.is_done());
        assert_eq!(got, rdb);
    }

    #[test]
    fn an_end_marked_rdb_stops_before_the_marker_whatever_the_chunking() {
        let rdb = rdb_bytes(70_000);
        let mark = *b"0123456789abcdef0123456789abcdef01234567";
        for chunk in [1, 39, 40, 41, 4096, 1 << 20] {
            let mut wire = b"\n$EOF:".to_vec();
            wire.extend_from_slice(&mark);
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&rdb);
            wire.extend_from_slice(&mark);
            let mut r = io::BufReader::new(Trickle(&wire, chunk));
            let delim = read_sync_header(&mut r).unwrap().unwrap();
            assert_eq!(delim, Delimiter::EndMark(mark));
            let mut body = RdbBody::new(&mut r, delim);
            let mut got = vec![];
            body.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), rdb.len(), "chunk {chunk}");
            assert!(got == rdb, "chunk {chunk}");
        }
    }

    #[test]
    fn a_connection_closed_early_is_an_error_in_both_forms() {
        let mut wire = b"$100\r\n".to_vec();
        wire.extend_from_slice(&rdb_bytes(60));
        let mut r = &wire[..];
        let delim = read_sync_header(&mut r).unwrap().unwrap();
        let err = RdbBody::new(&mut r, delim)
            .read_to_end(&mut vec![])
            .unwrap_err();
        assert!(err.to_string().contains("after 60 bytes"), "{err}");

        let mut wire = b"$EOF:0123456789abcdef0123456789abcdef01234567\r\n".to_vec();
        wire.extend_from_slice(&rdb_bytes(60));
        let mut r = &wire[..];
        let delim = read_sync_header(&mut r).unwrap().unwrap();
        let err = RdbBody::new(&mut r, delim)
            .read_to_end(&mut vec![])
            .unwrap_err();
        assert!(err.to_string().contains("before the end marker"), "{err}");
    }

    #[test]
    fn an_error_reply_to_sync_is_returned() {
        let mut r = &b"\n-NOPERM no sync for you\r\n"[..];
        assert_eq!(
            read_sync_header(&mut r).unwrap(),
            Err("NOPERM no sync for you".into())
        );
    }
}
