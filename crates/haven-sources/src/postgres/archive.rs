//! The fingerprint of a database as `pg_dump` writes it: read from an uncompressed
//! custom-format archive (`pg_dump -Fc -Z0`) while it streams by, without a query of our
//! own on the server.
//!
//! Format (PostgreSQL's `pg_backup_archiver.c`, `pg_backup_custom.c`): a header (`PGDMP`,
//! archive version, integer and offset sizes, format, compression, creation time, names
//! and versions), the table of contents (per entry: dump id, tag, kind such as
//! `TABLE DATA`, schema, SQL text, owner, dependencies, data offset), then the data
//! blocks in dump order: a type byte (1 table data, 3 large objects), the entry's dump
//! id, and chunks (length, bytes) up to a zero length; large objects are a sequence of
//! (oid, chunks) up to oid 0. Integers are a sign byte and `int size` little-endian
//! bytes; strings an integer length (-1 for none) and the bytes. Archive versions 1.12
//! to 1.16 (written by pg_dump up to version 18) are read.
//!
//! A table's data is its rows in COPY text format, one line per row (newlines inside
//! values are escaped). Each `TABLE DATA` entry becomes the fact `table <schema>.<name>`
//! = `rows=N sum=S`, S being the wrapping sum of a 64-bit hash of each line: independent
//! of row order and of how pg_dump cut the data into chunks. Large objects, when there
//! are any, become `large objects` = `count=N sum=S` over (oid, content).
//!
//! The same reading also finds where each data block starts ([`layout`]): a dump written
//! to a pipe has "offset not set" in its table of contents, and [`set_offsets`] writes
//! the offsets into the file the restore made of it, as pg_dump does when it writes to a
//! file, so that `pg_restore -j` seeks to each table's data instead of scanning for it.
//!
//! Limits: the hash is a fast non-cryptographic one (multiply-fold over 8-byte words): it
//! catches damage and differences, not an adversary who crafts rows. Compressed archives
//! are refused (the caller always asks for `-Z0`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::Fingerprint;

/// The oldest and newest archive versions (major, minor) read here.
const OLDEST: (u8, u8) = (1, 12);
const NEWEST: (u8, u8) = (1, 16);
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
/// `archCustom` in pg_dump's `ArchiveFormat`.
const FORMAT_CUSTOM: u8 = 1;
/// The flag before a data offset: `K_OFFSET_POS_NOT_SET`, `K_OFFSET_POS_SET`.
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;

/// The fingerprint of the archive read from `input` to its end.
pub(super) fn fingerprint(input: impl BufRead) -> Result<Fingerprint, String> {
    Ok(read(input, true)?.0)
}

/// Where each data block of the archive read from `input` starts, for
/// [`set_offsets`].
pub(super) fn layout(input: impl BufRead) -> Result<Layout, String> {
    Ok(read(input, false)?.1)
}

/// The data offsets a dump written to a pipe lacks: for each table of contents entry
/// whose offset is "not set", where its offset field is and where its data block starts.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Layout {
    off_size: usize,
    /// (the entry's dump id, the position of its offset field, of its data block)
    patches: Vec<(i64, u64, u64)>,
}

/// Write the offsets of `layout` into the archive `file` (as pg_dump does when it writes
/// to a file), so that `pg_restore -j` seeks to each table's data instead of scanning
/// the whole file for it.
pub(super) fn set_offsets(file: &Path, layout: &Layout) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(file)?;
    for (_, field, data) in &layout.patches {
        let mut bytes = vec![OFFSET_SET];
        bytes.extend((0..layout.off_size).map(|i| if i < 8 { (data >> (8 * i)) as u8 } else { 0 }));
        f.seek(SeekFrom::Start(*field))?;
        f.write_all(&bytes)?;
    }
    // No fsync: pg_restore reads the file through the page cache, and it is deleted
    // after the restore.
    Ok(())
}

/// Read the archive to its end: the fingerprint (rows hashed only when `hash`) and the
/// layout of its data.
fn read(input: impl BufRead, hash: bool) -> Result<(Fingerprint, Layout), String> {
    let mut a = Archive {
        r: input,
        pos: 0,
        version: (0, 0),
        int_size: 4,
        off_size: 8,
    };
    a.header()?;
    let Toc {
        tables: names,
        fields,
    } = a.toc()?;
    let mut layout = Layout {
        off_size: a.off_size,
        patches: vec![],
    };
    let mut tables: BTreeMap<i64, Tally> = names.keys().map(|id| (*id, Tally::default())).collect();
    let mut objects = Tally::default();
    loop {
        let start = a.pos;
        let Some(kind) = a.byte_or_end()? else { break };
        let id = a.int()?;
        if let Some((field, OFFSET_NOT_SET)) = fields.get(&id) {
            layout.patches.push((id, *field, start));
        }
        match kind {
            BLK_DATA => match tables.get_mut(&id) {
                Some(tally) if hash => a.rows(tally)?,
                _ => a.each_chunk(|_| {})?,
            },
            BLK_BLOBS => loop {
                let oid = a.int()?;
                if oid == 0 {
                    break;
                }
                let mut h = Hasher::new();
                h.update(&oid.to_le_bytes());
                a.each_chunk(|data| h.update(data))?;
                objects.add(h.finish());
            },
            other => return Err(format!("unknown data block type {other} (entry {id})")),
        }
    }
    let mut fp = Fingerprint::default();
    let mut rows = 0u64;
    for (id, tally) in &tables {
        rows += tally.rows;
        fp.fact(
            format!("table {}", names[id]),
            format!("rows={} sum={:016x}", tally.rows, tally.sum),
        );
    }
    fp.summary = format!("{} tables, {rows} rows", tables.len());
    if objects.rows > 0 {
        fp.fact(
            "large objects",
            format!("count={} sum={:016x}", objects.rows, objects.sum),
        );
        fp.summary
            .push_str(&format!(", {} large objects", objects.rows));
    }
    Ok((fp, layout))
}

/// Passes a stream through unchanged (read from or written to `inner`) and sends a copy
/// of every piece to `tx` (a reader of the archive, in another thread). A receiver that
/// has gone (it failed) is ignored.
pub(super) struct Tee<'a, R> {
    pub(super) inner: &'a mut R,
    pub(super) tx: SyncSender<Vec<u8>>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let _ = self.tx.send(buf[..n].to_vec());
        }
        Ok(n)
    }
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            let _ = self.tx.send(buf[..n].to_vec());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The receiving end of a [`Tee`] as a stream; it ends when every sender is dropped.
pub(super) struct Received {
    rx: Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl Received {
    pub(super) fn new(rx: Receiver<Vec<u8>>) -> Self {
        Received {
            rx,
            piece: vec![],
            at: 0,
        }
    }
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let piece = self.fill_buf()?;
        let n = buf.len().min(piece.len());
        buf[..n].copy_from_slice(&piece[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Received {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.piece.len() {
            match self.rx.recv() {
                Ok(piece) => {
                    self.piece = piece;
                    self.at = 0;
                }
                Err(_) => break,
            }
        }
        Ok(&self.piece[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.piece.len());
    }
}

/// Rows (or objects) and the wrapping sum of their hashes.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rows: u64,
    sum: u64,
}

impl Tally {
    fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// What the table of contents tells: the `TABLE DATA` entries (dump id ->
/// `schema.table`), and every entry's data offset field (dump id -> position, flag).
struct Toc {
    tables: BTreeMap<i64, String>,
    fields: BTreeMap<i64, (u64, u8)>,
}

struct Archive<R> {
    r: R,
    /// Bytes read so far.
    pos: u64,
    version: (u8, u8),
    int_size: usize,
    off_size: usize,
}

fn cut(what: &str, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("the archive ends inside {what}")
    } else {
        format!("reading {what}: {e}")
    }
}

impl<R: BufRead> Archive<R> {
    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b).map_err(|e| cut("a field", e))?;
        self.pos += 1;
        Ok(b[0])
    }

    /// The next byte, or `None` at the end of the stream.
    fn byte_or_end(&mut self) -> Result<Option<u8>, String> {
        let mut b = [0u8; 1];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the archive: {e}")),
            }
        }
    }

    fn int(&mut self) -> Result<i64, String> {
        let mut bytes = [0u8; 9];
        let n = 1 + self.int_size;
        self.r
            .read_exact(&mut bytes[..n])
            .map_err(|e| cut("an integer", e))?;
        self.pos += n as u64;
        let mut v = 0u64;
        for (i, b) in bytes[1..n].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        let v = i64::try_from(v).map_err(|_| format!("integer {v} out of range"))?;
        Ok(if bytes[0] != 0 { -v } else { v })
    }

    fn string(&mut self) -> Result<Option<Vec<u8>>, String> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        let mut s = vec![];
        (&mut self.r)
            .take(n as u64)
            .read_to_end(&mut s)
            .map_err(|e| cut("a string", e))?;
        if s.len() as u64 != n as u64 {
            return Err(cut("a string", io::ErrorKind::UnexpectedEof.into()));
        }
        self.pos += n as u64;
        Ok(Some(s))
    }

    fn text(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.string()?.unwrap_or_default()).into_owned())
    }

    fn header(&mut self) -> Result<(), String> {
        let mut magic = [0u8; 5];
        self.r
            .read_exact(&mut magic)
            .map_err(|e| cut("the header", e))?;
        self.pos += 5;
        if &magic != b"PGDMP" {
            return Err("not a pg_dump custom-format archive (no PGDMP header)".into());
        }
        let (major, minor, _rev) = (self.byte()?, self.byte()?, self.byte()?);
        self.version = (major, minor);
        if self.version < OLDEST || self.version > NEWEST {
            return Err(format!(
                "archive version {major}.{minor} is not read here (versions {}.{} to {}.{}, written by pg_dump up to version 18); \
                 set `bin-dir` to client tools of one of those versions",
                OLDEST.0, OLDEST.1, NEWEST.0, NEWEST.1
            ));
        }
        self.int_size = usize::from(self.byte()?);
        self.off_size = usize::from(self.byte()?);
        if !(1..=8).contains(&self.int_size) || self.off_size > 16 {
            return Err(format!(
                "unexpected integer size {} or offset size {}",
                self.int_size, self.off_size
            ));
        }
        let format = self.byte()?;
        if format != FORMAT_CUSTOM {
            return Err(format!("archive format {format} is not the custom format"));
        }
        let compressed = if self.version >= (1, 15) {
            self.byte()? != 0
        } else {
            self.int()? != 0
        };
        if compressed {
            return Err(
                "the archive is compressed; the fingerprint reads `pg_dump -Z0` archives".into(),
            );
        }
        for _ in 0..7 {
            self.int()?; // creation time: sec, min, hour, day, month, year, isdst
        }
        self.string()?; // database name
        self.string()?; // server version
        self.string()?; // pg_dump version
        Ok(())
    }

    /// The `TABLE DATA` entries (dump id -> `schema.table`), and every entry's offset
    /// field (dump id -> its position and flag).
    fn toc(&mut self) -> Result<Toc, String> {
        let count = self.int()?;
        let mut tables = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for _ in 0..count {
            let id = self.int()?;
            self.int()?; // had a data dumper
            self.string()?; // table oid
            self.string()?; // oid
            let tag = self.text()?;
            let desc = self.text()?;
            self.int()?; // section
            self.string()?; // definition
            self.string()?; // drop statement
            self.string()?; // copy statement
            let namespace = self.text()?;
            self.string()?; // tablespace
            if self.version >= (1, 14) {
                self.string()?; // table access method
            }
            if self.version >= (1, 16) {
                self.int()?; // relkind
            }
            self.string()?; // owner
            self.string()?; // "false" (no OIDs)
            while self.string()?.is_some() {} // dependencies, up to a null
            let field = self.pos;
            let flag = self.byte()?; // data offset: a flag and the offset
            for _ in 0..self.off_size {
                self.byte()?;
            }
            fields.insert(id, (field, flag));
            if desc == "TABLE DATA" {
                tables.insert(id, format!("{namespace}.{tag}"));
            }
        }
        Ok(Toc { tables, fields })
    }

    /// Call `each` with the bytes of one data block's chunks, in pieces as they lie in
    /// the reader's buffer (no copy), up to the block's zero-length end.
    fn each_chunk(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), String> {
        loop {
            let n = self.int()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                return Err(format!("negative chunk length {n}"));
            }
            let mut left = n as usize;
            while left > 0 {
                let piece = self.r.fill_buf().map_err(|e| cut("table data", e))?;
                if piece.is_empty() {
                    return Err(cut("table data", io::ErrorKind::UnexpectedEof.into()));
                }
                let take = left.min(piece.len());
                each(&piece[..take]);
                self.r.consume(take);
                left -= take;
            }
            self.pos += n as u64;
        }
    }

    /// One table's COPY text: a hash per line, whatever the chunking, up to the end
    /// marker `\.` that pg_dump writes after the rows (a row cannot be `\.`: COPY
    /// escapes a backslash as `\\`).
    fn rows(&mut self, tally: &mut Tally) -> Result<(), String> {
        let mut row = Hasher::new();
        let mut start: Vec<u8> = Vec::with_capacity(3);
        let mut ended = false;
        self.each_chunk(|mut data| loop {
            let end = newline(data);
            let piece = &data[..end.unwrap_or(data.len())];
            if start.len() < 3 {
                start.extend(piece.iter().take(3 - start.len()));
            }
            row.update(piece);
            let Some(end) = end else { break };
            if start.as_slice() == b"\\." {
                ended = true;
            } else if !ended {
                tally.add(row.finish());
            }
            row = Hasher::new();
            start.clear();
            data = &data[end + 1..];
        })?;
        if row.len > 0 {
            return Err("a table's data ends inside a row".into());
        }
        Ok(())
    }
}

/// The position of the first `\n` in `s`: eight bytes at a time (a zero byte of
/// `word ^ "\n\n\n\n\n\n\n\n"`; the lowest flagged byte is always a true match).
fn newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = ONES * b'\n' as u64;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ NL;
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| at + p)
}

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// 64 x 64 -> 128-bit multiply, folded.
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// A streaming 64-bit hash: 8-byte little-endian words folded in with `mum`, the length
/// last. The same bytes give the same hash however they are split across `update`s.
struct Hasher {
    h: u64,
    len: u64,
    tail: u64,
    tail_len: usize,
}

impl Hasher {
    fn new() -> Self {
        Hasher {
            h: P0,
            len: 0,
            tail: 0,
            tail_len: 0,
        }
    }

    fn word(&mut self, w: u64) {
        self.h = mum(self.h ^ w, P1);
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            while self.tail_len < 8 {
                let Some((b, rest)) = data.split_first() else {
                    return;
                };
                self.tail |= u64::from(*b) << (8 * self.tail_len);
                self.tail_len += 1;
                data = rest;
            }
            let w = self.tail;
            self.word(w);
            self.tail = 0;
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        for (i, b) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(*b) << (8 * i);
        }
        self.tail_len = words.remainder().len();
    }

    fn finish(&self) -> u64 {
        let mut h = self.h;
        if self.tail_len > 0 {
            h = mum(h ^ self.tail, P2);
        }
        mum(h ^ self.len, P1 ^ P2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives the way pg_dump does (int size 4, offset size 8).
    struct Writer {
        out: Vec<u8>,
        version: (u8, u8),
    }

    impl Writer {
        fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            self.out
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn string(&mut self, s: Option<&str>) {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
        }
        fn header(version: (u8, u8), compressed: bool) -> Writer {
            let mut w = Writer {
                out: b"PGDMP".to_vec(),
                version,
            };
            w.out
                .extend_from_slice(&[version.0, version.1, 0, 4, 8, FORMAT_CUSTOM]);
            if version >= (1, 15) {
                w.out.push(u8::from(compressed));
            } else {
                w.int(if compressed { -1 } else { 0 });
            }
            for v in [1, 2, 3, 21, 10, 126, 0] {
                w.int(v);
            }
            for s in ["app", "15.2", "15.2"] {
                w.string(Some(s));
            }
            w
        }
        fn entry(&mut self, id: i64, tag: &str, desc: &str, schema: &str) {
            self.int(id);
            self.int(1);
            for s in [Some("0"), Some("0"), Some(tag), Some(desc)] {
                self.string(s);
            }
            self.int(3);
            for s in [
                "CREATE ...;",
                "DROP ...;",
                "COPY ... FROM stdin;",
                schema,
                "",
            ] {
                self.string(Some(s));
            }
            if self.version >= (1, 14) {
                self.string(Some("heap"));
            }
            if self.version >= (1, 16) {
                self.int(i64::from(b'r'));
            }
            self.string(Some("postgres"));
            self.string(Some("false"));
            self.string(Some("7"));
            self.string(None);
            self.out
                .push(if desc == "TABLE" { 3 } else { OFFSET_NOT_SET });
            self.out.extend_from_slice(&[0; 8]);
        }
        fn data(&mut self, kind: u8, id: i64, chunks: &[&str]) {
            self.out.push(kind);
            self.int(id);
            for c in chunks {
                self.string(Some(c));
            }
            self.int(0);
        }
    }

    fn archive(version: (u8, u8), accounts: &[&str], blob: &[&str]) -> Vec<u8> {
        let mut w = Writer::header(version, false);
        w.int(4);
        w.entry(2, "accounts", "TABLE", "public");
        w.entry(5, "accounts", "TABLE DATA", "public");
        w.entry(6, "empty t", "TABLE DATA", "We ird");
        w.entry(7, "BLOBS", "BLOBS", "");
        w.data(BLK_DATA, 5, accounts);
        w.data(BLK_DATA, 6, &[]);
        w.out.push(BLK_BLOBS);
        w.int(7);
        w.int(16384);
        for c in blob {
            w.string(Some(c));
        }
        w.int(0);
        w.int(0);
        w.out
    }

    #[test]
    fn rows_are_counted_and_hashed_whatever_their_order_and_chunking() {
        let a =
            fingerprint(&archive((1, 14), &["1\tx\n", "2\ty\n", "3\t\\N\n"], &["ab"])[..]).unwrap();
        assert_eq!(a.summary, "2 tables, 3 rows, 1 large objects");
        assert!(
            a.facts["table public.accounts"].starts_with("rows=3 sum="),
            "{a:?}"
        );
        assert_eq!(
            a.facts["table We ird.empty t"],
            "rows=0 sum=0000000000000000"
        );
        // Other order, other chunking, newer archive version, pg_dump's end marker and the
        // empty lines after it: the same fingerprint.
        let chunks = ["3\t\\N\n2\t", "y\n1\tx", "\n\\", ".\n\n", "\n"];
        let b = fingerprint(&archive((1, 16), &chunks, &["a", "b"])[..]).unwrap();
        assert_eq!(a, b);
        let c =
            fingerprint(&archive((1, 15), &["1\tx\n", "2\ty\n", "3\t\\N\n"], &["ab"])[..]).unwrap();
        assert_eq!(a, c);
        // One value changed, two values swapped between rows, one object changed, a row
        // that starts like the end marker (an escaped backslash) instead of the third.
        for (rows, blob) in [
            (["1\tx\n", "2\tz\n", "3\t\\N\n"], ["ab"]),
            (["1\ty\n", "2\tx\n", "3\t\\N\n"], ["ab"]),
            (["1\tx\n", "2\ty\n", "3\t\\N\n"], ["ac"]),
            (["1\tx\n", "2\ty\n", "\\\\.\n"], ["ab"]),
        ] {
            let d = fingerprint(&archive((1, 14), &rows, &blob)[..]).unwrap();
            assert_eq!(a.differences(&d, 10).len(), 1, "{rows:?} {blob:?}");
        }
    }

    #[test]
    fn compressed_truncated_foreign_and_unknown_archives_are_refused() {
        let full = archive((1, 14), &["1\tx\n"], &[]);
        for n in [3, 20, 60, full.len() - 1] {
            assert!(fingerprint(&full[..n]).is_err(), "cut at {n}");
        }
        let open_row = archive((1, 14), &["1\tx"], &[]);
        assert!(fingerprint(&open_row[..])
            .unwrap_err()
            .contains("inside a row"));
        let mut w = Writer::header((1, 14), true);
        w.int(0);
        assert!(fingerprint(&w.out[..]).unwrap_err().contains("compressed"));
        let mut w = Writer::header((1, 15), true);
        w.int(0);
        assert!(fingerprint(&w.out[..]).unwrap_err().contains("compressed"));
        let newer = Writer::header((1, 17), false).out;
        assert!(fingerprint(&newer[..]).unwrap_err().contains("1.17"));
        assert!(fingerprint(&b"-- PostgreSQL database dump"[..]).is_err());
    }

    #[test]
    fn offsets_are_set_where_each_entrys_data_block_starts() {
        let bytes = archive((1, 16), &["1\tx\n", "2\ty\n"], &["ab"]);
        let layout = layout(&bytes[..]).unwrap();
        let ids: Vec<i64> = layout.patches.iter().map(|p| p.0).collect();
        assert_eq!(ids, [5, 6, 7]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dump");
        fs::write(&file, &bytes).unwrap();
        set_offsets(&file, &layout).unwrap();
        let patched = fs::read(&file).unwrap();
        assert_eq!(patched.len(), bytes.len());
        let mut a = Archive {
            r: &patched[..],
            pos: 0,
            version: (0, 0),
            int_size: 4,
            off_size: 8,
        };
        a.header().unwrap();
        let toc = a.toc().unwrap();
        for (id, field, data) in &layout.patches {
            assert_eq!(toc.fields[id], (*field, OFFSET_SET));
            let f = *field as usize;
            assert_eq!(patched[f + 1..f + 9], data.to_le_bytes());
            // the block there: a type byte, then the entry's id (sign byte, 4 bytes)
            let d = *data as usize;
            assert!([BLK_DATA, BLK_BLOBS].contains(&patched[d]));
            assert_eq!(patched[d + 1..d + 6], [0, *id as u8, 0, 0, 0]);
        }
        assert_eq!(
            toc.fields[&2],
            (toc.fields[&2].0, 3),
            "an entry without data is left alone"
        );
        assert_eq!(fingerprint(&patched[..]), fingerprint(&bytes[..]));
        assert!(super::layout(&patched[..]).unwrap().patches.is_empty());
    }

    #[test]
    fn newlines_are_found_where_they_are() {
        let text = b"0123456\n89abcdef\n\n\x8a\x0b\x09\x0a\x0a";
        for start in 0..text.len() {
            let s = &text[start..];
            assert_eq!(
                newline(s),
                s.iter().position(|b| *b == b'\n'),
                "from {start}"
            );
        }
        assert_eq!(newline(b"no newline at all here"), None);
        assert_eq!(newline(&[0x0b; 17]), None);
    }

    #[test]
    fn the_hash_does_not_depend_on_how_the_bytes_are_split() {
        let text = b"12345\t67890\tsome text of a row\t2024-02-29 10:00:00+00";
        let mut whole = Hasher::new();
        whole.update(text);
        for split in 0..text.len() {
            let mut parts = Hasher::new();
            parts.update(&text[..split]);
            parts.update(&text[split..]);
            assert_eq!(parts.finish(), whole.finish(), "split at {split}");
        }
        let mut shorter = Hasher::new();
        shorter.update(&text[..text.len() - 1]);
        assert_ne!(shorter.finish(), whole.finish());
        let (mut a, mut b) = (Hasher::new(), Hasher::new());
        a.update(b"a");
        b.update(b"a\0");
        assert_ne!(a.finish(), b.finish());
    }
}
