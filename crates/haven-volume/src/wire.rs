//! The replica protocol, version 2: frames and messages (spec: `docs/VOLUMES.md`, section
//! "Replica protocol, version 2"; this module and that section change together).
//!
//! A frame is a 20-byte header (magic `HVR2`, kind, flags, reserved, payload length,
//! request id), the payload, and a 4-byte checksum (CRC-32 of header and payload).
//! [`write_frame`] sends one without copying its payload; [`read_frame`] checks all of it
//! and hands back a [`Frame`];
//! [`Request::decode`]/[`Response::decode`] turn a frame into a message and
//! [`Request::encode`]/[`Response::encode`] a message into the bytes of one frame.
//! The client sends one request and waits for the response with the same id; the server
//! answers in order. Any [`FrameError`] ends the connection: a peer that sent a bad frame
//! cannot be trusted to be in step.

use std::io::{self, IoSlice, Read, Write};

use crate::region::RegionMap;
use crate::replica::{ReplicaInfo, VolumeState};

/// `HVR` + protocol version 2 (version 1 checksummed with truncated BLAKE3; see
/// docs/VOLUMES.md). A released magic is never edited: version 3 is `HVR3`.
pub const MAGIC: [u8; 4] = *b"HVR2";
pub const HEADER_LEN: usize = 20;
pub const CHECKSUM_LEN: usize = 4;
/// Largest data a READ or WRITE carries.
pub const MAX_DATA: u32 = 32 << 20;
/// Largest payload: the data plus the fixed fields of a WRITE, with room to spare.
pub const MAX_PAYLOAD: u32 = MAX_DATA + 4096;
/// Most regions one REGION_CHECKSUMS asks for (1 GiB of data read per request).
pub const MAX_CHECKSUM_REGIONS: u32 = 16 << 10;
/// Flag bit 0 of WRITE, WRITE_ZEROES and TRIM: durable before the reply.
pub const FLAG_FUA: u8 = 1;

/// Message kinds (byte 4 of the header). Requests below 0x80, responses from 0x80.
pub mod kind {
    pub const INFO: u8 = 0x01;
    pub const CREATE_VOLUME: u8 = 0x02;
    pub const DELETE_VOLUME: u8 = 0x03;
    pub const HELLO: u8 = 0x04;
    pub const READ: u8 = 0x05;
    pub const WRITE: u8 = 0x06;
    pub const WRITE_ZEROES: u8 = 0x07;
    pub const TRIM: u8 = 0x08;
    pub const FLUSH: u8 = 0x09;
    pub const DIRTY_SINCE: u8 = 0x0a;
    pub const REGION_CHECKSUMS: u8 = 0x0b;
    pub const SETTLE_ALL: u8 = 0x0c;

    pub const R_INFO: u8 = 0x81;
    pub const R_VOLUME: u8 = 0x82;
    pub const R_DONE: u8 = 0x83;
    pub const R_DATA: u8 = 0x84;
    pub const R_DIRTY: u8 = 0x85;
    pub const R_CHECKSUMS: u8 = 0x86;
    pub const R_ERROR: u8 = 0xff;
}

/// Why a frame or message was refused. Every one of them closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad magic {0:02x?}: not a Haven replica peer")]
    BadMagic([u8; 4]),
    #[error("replica protocol version {0:?} not supported (this side speaks HVR2; run the same Haven version on both sides)")]
    Version(char),
    #[error("frame of {0} payload bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(u32),
    #[error("frame checksum mismatch (kind {kind:#04x}, request {id}): corrupted in transit")]
    Checksum { kind: u8, id: u64 },
    #[error("reserved header bits set (flags {flags:#04x}, reserved {reserved:#06x})")]
    Reserved { flags: u8, reserved: u16 },
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// One checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// The fields every write-like request carries (see "Words" in docs/VOLUMES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStamp {
    pub epoch: u64,
    pub gen: u64,
    pub seq: u64,
    pub settled: u64,
}

impl WriteStamp {
    pub fn new(epoch: u64, gen: u64, seq: u64, settled: u64) -> WriteStamp {
        WriteStamp {
            epoch,
            gen,
            seq,
            settled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Info,
    CreateVolume {
        name: String,
        size: u64,
    },
    DeleteVolume {
        name: String,
    },
    /// Binds the connection to `volume` and raises its seal to (`epoch`, `session`).
    Hello {
        volume: String,
        epoch: u64,
        session: u64,
    },
    Read {
        epoch: u64,
        offset: u64,
        len: u32,
    },
    Write {
        stamp: WriteStamp,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    WriteZeroes {
        stamp: WriteStamp,
        offset: u64,
        len: u64,
        fua: bool,
    },
    Trim {
        stamp: WriteStamp,
        offset: u64,
        len: u64,
        fua: bool,
    },
    Flush {
        epoch: u64,
    },
    DirtySince {
        epoch: u64,
        gen: u64,
    },
    RegionChecksums {
        epoch: u64,
        first: u64,
        count: u32,
    },
    SettleAll {
        epoch: u64,
    },
}

/// Error codes of an ERROR response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request's epoch is below the highest seen (carried in `seen`).
    Fenced = 1,
    NoSpace = 2,
    NoVolume = 3,
    Exists = 4,
    /// Malformed or out of range, or a data request before HELLO.
    Invalid = 5,
    Io = 6,
    /// The connection's session is below the highest its epoch has sealed: a newer link of
    /// the same controller replaced it (the server closes the connection after this).
    Superseded = 7,
}

impl ErrorCode {
    fn from_u8(code: u8) -> Option<ErrorCode> {
        Some(match code {
            1 => ErrorCode::Fenced,
            2 => ErrorCode::NoSpace,
            3 => ErrorCode::NoVolume,
            4 => ErrorCode::Exists,
            5 => ErrorCode::Invalid,
            6 => ErrorCode::Io,
            7 => ErrorCode::Superseded,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: ErrorCode,
    /// The highest epoch seen (Fenced), the highest session of this epoch (Superseded),
    /// else 0.
    pub seen: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Info(ReplicaInfo),
    /// CREATE_VOLUME and HELLO.
    Volume(VolumeState),
    /// DELETE_VOLUME, WRITE, WRITE_ZEROES, TRIM, FLUSH, SETTLE_ALL.
    Done,
    Data(Vec<u8>),
    Dirty(Option<RegionMap>),
    Checksums(Vec<[u8; 32]>),
    Error(WireError),
}

/// CRC-32 (IEEE) of a frame's header and payload parts, little-endian: it catches what
/// TCP's 16-bit checksum lets through, as iSCSI's and NVMe/TCP's CRCs do, at a small
/// fraction of a cryptographic hash's cost on the write path (docs/adr/0019).
fn checksum(header: &[u8], parts: &[&[u8]]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().to_le_bytes()
}

fn header(kind: u8, flags: u8, id: u64, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = kind;
    h[5] = flags;
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12..20].copy_from_slice(&id.to_le_bytes());
    h
}

/// The bytes of one frame whose payload is `parts` concatenated.
pub fn encode_frame(kind: u8, flags: u8, id: u64, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let head = header(kind, flags, id, len);
    let mut out = Vec::with_capacity(HEADER_LEN + len + CHECKSUM_LEN);
    out.extend_from_slice(&head);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&checksum(&head, parts));
    out
}

/// Writes one frame whose payload is `parts` concatenated, gathered by `writev` (the
/// payload is not copied).
pub fn write_frame(
    w: &mut impl Write,
    kind: u8,
    flags: u8,
    id: u64,
    parts: &[&[u8]],
) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let head = header(kind, flags, id, len);
    let sum = checksum(&head, parts);
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
    pieces.push(&head);
    pieces.extend(parts.iter().copied().filter(|p| !p.is_empty()));
    pieces.push(&sum);
    // (first piece not fully sent, bytes of it already sent)
    let (mut first, mut sent) = (0, 0);
    while first < pieces.len() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len() - first);
        slices.push(IoSlice::new(&pieces[first][sent..]));
        slices.extend(pieces[first + 1..].iter().map(|p| IoSlice::new(p)));
        match w.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                while n > 0 {
                    let left = pieces[first].len() - sent;
                    if n < left {
                        sent += n;
                        n = 0;
                    } else {
                        n -= left;
                        first += 1;
                        sent = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame. A clean end of stream before the first byte is [`FrameError::Closed`].
pub fn read_frame(r: &mut impl Read) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let magic: [u8; 4] = header[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        if magic[..3] == MAGIC[..3] {
            return Err(FrameError::Version(magic[3] as char));
        }
        return Err(FrameError::BadMagic(magic));
    }
    let (kind, flags) = (header[4], header[5]);
    let reserved = u16::from_le_bytes([header[6], header[7]]);
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    if reserved != 0 || flags & !FLAG_FUA != 0 {
        return Err(FrameError::Reserved { flags, reserved });
    }
    // Read into spare capacity: no zero-filling of a buffer the socket overwrites.
    let mut payload = Vec::with_capacity(len as usize);
    r.by_ref().take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let mut sum = [0u8; CHECKSUM_LEN];
    r.read_exact(&mut sum)?;
    if sum != checksum(&header, &[&payload]) {
        return Err(FrameError::Checksum { kind, id });
    }
    Ok(Frame {
        kind,
        flags,
        id,
        payload,
    })
}

/// Appends little-endian fields to a payload.
#[derive(Default)]
struct Put(Vec<u8>);

impl Put {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u128(mut self, v: u128) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(mut self, s: &str) -> Self {
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }
    fn bytes32(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn stamp(self, s: &WriteStamp) -> Self {
        self.u64(s.epoch).u64(s.gen).u64(s.seq).u64(s.settled)
    }
    fn map(self, map: &Option<RegionMap>) -> Self {
        match map {
            None => self.u8(0),
            Some(map) => self.u8(1).bytes32(&map.to_bytes()),
        }
    }
}

/// Reads little-endian fields of a payload; every read is bounds-checked.
struct Get<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Get<'a> {
    fn new(what: &'static str, payload: &'a [u8]) -> Self {
        Get {
            what,
            rest: payload,
        }
    }
    fn bad(&self, detail: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            what: self.what,
            detail: detail.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.bad(format!("needs {n} more bytes, has {}", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u128(&mut self) -> Result<u128, FrameError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16")))
    }
    fn str(&mut self) -> Result<String, FrameError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2"));
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.u32()?;
        self.take(len as usize)
    }
    fn stamp(&mut self) -> Result<WriteStamp, FrameError> {
        Ok(WriteStamp {
            epoch: self.u64()?,
            gen: self.u64()?,
            seq: self.u64()?,
            settled: self.u64()?,
        })
    }
    fn map(&mut self) -> Result<Option<RegionMap>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(RegionMap::from_bytes(self.bytes32()?))),
            other => Err(self.bad(format!("option tag {other}"))),
        }
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
    fn end(self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad(format!("{} trailing bytes", self.rest.len())))
        }
    }
}

fn fua_flag(fua: bool) -> u8 {
    if fua {
        FLAG_FUA
    } else {
        0
    }
}

/// Sends the frame of a WRITE straight from borrowed data (no copy).
pub fn write_write(
    w: &mut impl Write,
    id: u64,
    stamp: &WriteStamp,
    offset: u64,
    data: &[u8],
    fua: bool,
) -> io::Result<()> {
    let fixed = Put::default().stamp(stamp).u64(offset);
    write_frame(w, kind::WRITE, fua_flag(fua), id, &[&fixed.0, data])
}

impl Request {
    pub fn kind(&self) -> u8 {
        match self {
            Request::Info => kind::INFO,
            Request::CreateVolume { .. } => kind::CREATE_VOLUME,
            Request::DeleteVolume { .. } => kind::DELETE_VOLUME,
            Request::Hello { .. } => kind::HELLO,
            Request::Read { .. } => kind::READ,
            Request::Write { .. } => kind::WRITE,
            Request::WriteZeroes { .. } => kind::WRITE_ZEROES,
            Request::Trim { .. } => kind::TRIM,
            Request::Flush { .. } => kind::FLUSH,
            Request::DirtySince { .. } => kind::DIRTY_SINCE,
            Request::RegionChecksums { .. } => kind::REGION_CHECKSUMS,
            Request::SettleAll { .. } => kind::SETTLE_ALL,
        }
    }

    /// The epoch the request carries (None: INFO, CREATE_VOLUME, DELETE_VOLUME).
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Request::Info | Request::CreateVolume { .. } | Request::DeleteVolume { .. } => None,
            Request::Hello { epoch, .. }
            | Request::Read { epoch, .. }
            | Request::Flush { epoch }
            | Request::DirtySince { epoch, .. }
            | Request::RegionChecksums { epoch, .. }
            | Request::SettleAll { epoch } => Some(*epoch),
            Request::Write { stamp, .. }
            | Request::WriteZeroes { stamp, .. }
            | Request::Trim { stamp, .. } => Some(stamp.epoch),
        }
    }

    /// The bytes of the frame carrying this request with id `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let (flags, fixed, data): (u8, Put, &[u8]) = match self {
            Request::Info => (0, Put::default(), &[]),
            Request::CreateVolume { name, size } => (0, Put::default().str(name).u64(*size), &[]),
            Request::DeleteVolume { name } => (0, Put::default().str(name), &[]),
            Request::Hello {
                volume,
                epoch,
                session,
            } => (0, Put::default().str(volume).u64(*epoch).u64(*session), &[]),
            Request::Read { epoch, offset, len } => {
                (0, Put::default().u64(*epoch).u64(*offset).u32(*len), &[])
            }
            Request::Write {
                stamp,
                offset,
                data,
                fua,
            } => (
                fua_flag(*fua),
                Put::default().stamp(stamp).u64(*offset),
                &data[..],
            ),
            Request::WriteZeroes {
                stamp,
                offset,
                len,
                fua,
            }
            | Request::Trim {
                stamp,
                offset,
                len,
                fua,
            } => (
                fua_flag(*fua),
                Put::default().stamp(stamp).u64(*offset).u64(*len),
                &[],
            ),
            Request::Flush { epoch } | Request::SettleAll { epoch } => {
                (0, Put::default().u64(*epoch), &[])
            }
            Request::DirtySince { epoch, gen } => (0, Put::default().u64(*epoch).u64(*gen), &[]),
            Request::RegionChecksums {
                epoch,
                first,
                count,
            } => (0, Put::default().u64(*epoch).u64(*first).u32(*count), &[]),
        };
        encode_frame(self.kind(), flags, id, &[&fixed.0, data])
    }

    pub fn decode(frame: &Frame) -> Result<Request, FrameError> {
        let fua = frame.flags & FLAG_FUA != 0;
        let writes = [kind::WRITE, kind::WRITE_ZEROES, kind::TRIM];
        if fua && !writes.contains(&frame.kind) {
            return Err(FrameError::Reserved {
                flags: frame.flags,
                reserved: 0,
            });
        }
        let p = &frame.payload;
        let request = match frame.kind {
            kind::INFO => {
                Get::new("INFO", p).end()?;
                Request::Info
            }
            kind::CREATE_VOLUME => {
                let mut g = Get::new("CREATE_VOLUME", p);
                let (name, size) = (g.str()?, g.u64()?);
                g.end()?;
                Request::CreateVolume { name, size }
            }
            kind::DELETE_VOLUME => {
                let mut g = Get::new("DELETE_VOLUME", p);
                let name = g.str()?;
                g.end()?;
                Request::DeleteVolume { name }
            }
            kind::HELLO => {
                let mut g = Get::new("HELLO", p);
                let (volume, epoch, session) = (g.str()?, g.u64()?, g.u64()?);
                g.end()?;
                Request::Hello {
                    volume,
                    epoch,
                    session,
                }
            }
            kind::READ => {
                let mut g = Get::new("READ", p);
                let (epoch, offset, len) = (g.u64()?, g.u64()?, g.u32()?);
                g.end()?;
                Request::Read { epoch, offset, len }
            }
            kind::WRITE => {
                let mut g = Get::new("WRITE", p);
                let (stamp, offset) = (g.stamp()?, g.u64()?);
                let data = g.rest().to_vec();
                Request::Write {
                    stamp,
                    offset,
                    data,
                    fua,
                }
            }
            kind::WRITE_ZEROES | kind::TRIM => {
                let mut g = Get::new("WRITE_ZEROES/TRIM", p);
                let (stamp, offset, len) = (g.stamp()?, g.u64()?, g.u64()?);
                g.end()?;
                if frame.kind == kind::TRIM {
                    Request::Trim {
                        stamp,
                        offset,
                        len,
                        fua,
                    }
                } else {
                    Request::WriteZeroes {
                        stamp,
                        offset,
                        len,
                        fua,
                    }
                }
            }
            kind::FLUSH | kind::SETTLE_ALL => {
                let mut g = Get::new("FLUSH/SETTLE_ALL", p);
                let epoch = g.u64()?;
                g.end()?;
                if frame.kind == kind::FLUSH {
                    Request::Flush { epoch }
                } else {
                    Request::SettleAll { epoch }
                }
            }
            kind::DIRTY_SINCE => {
                let mut g = Get::new("DIRTY_SINCE", p);
                let (epoch, gen) = (g.u64()?, g.u64()?);
                g.end()?;
                Request::DirtySince { epoch, gen }
            }
            kind::REGION_CHECKSUMS => {
                let mut g = Get::new("REGION_CHECKSUMS", p);
                let (epoch, first, count) = (g.u64()?, g.u64()?, g.u32()?);
                g.end()?;
                Request::RegionChecksums {
                    epoch,
                    first,
                    count,
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(request)
    }
}

impl Response {
    pub fn kind(&self) -> u8 {
        match self {
            Response::Info(_) => kind::R_INFO,
            Response::Volume(_) => kind::R_VOLUME,
            Response::Done => kind::R_DONE,
            Response::Data(_) => kind::R_DATA,
            Response::Dirty(_) => kind::R_DIRTY,
            Response::Checksums(_) => kind::R_CHECKSUMS,
            Response::Error(_) => kind::R_ERROR,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(WireError {
            code,
            seen: 0,
            message: message.into(),
        })
    }

    /// The bytes of the frame answering request `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let (fixed, data): (Put, &[u8]) = match self {
            Response::Info(info) => {
                let mut put = Put::default()
                    .str(&info.site)
                    .str(&info.node)
                    .u64(info.free_bytes)
                    .u32(info.volumes.len() as u32);
                for volume in &info.volumes {
                    put = put.str(volume);
                }
                (put, &[])
            }
            Response::Volume(state) => (
                Put::default()
                    .u64(state.size)
                    .u128(state.instance)
                    .u64(state.epoch)
                    .map(&state.unsettled),
                &[],
            ),
            Response::Done => (Put::default(), &[]),
            Response::Data(data) => (Put::default(), data),
            Response::Dirty(map) => (Put::default().map(map), &[]),
            Response::Checksums(sums) => {
                let mut put = Put::default().u32(sums.len() as u32);
                for sum in sums {
                    put.0.extend_from_slice(sum);
                }
                (put, &[])
            }
            Response::Error(e) => (
                Put::default().u8(e.code as u8).u64(e.seen).str(&e.message),
                &[],
            ),
        };
        encode_frame(self.kind(), 0, id, &[&fixed.0, data])
    }

    pub fn decode(frame: &Frame) -> Result<Response, FrameError> {
        if frame.flags != 0 {
            return Err(FrameError::Reserved {
                flags: frame.flags,
                reserved: 0,
            });
        }
        let p = &frame.payload;
        let response = match frame.kind {
            kind::R_INFO => {
                let mut g = Get::new("INFO reply", p);
                let (site, node, free_bytes, n) = (g.str()?, g.str()?, g.u64()?, g.u32()?);
                let mut volumes = Vec::new();
                for _ in 0..n {
                    volumes.push(g.str()?);
                }
                g.end()?;
                Response::Info(ReplicaInfo {
                    site,
                    node,
                    free_bytes,
                    volumes,
                })
            }
            kind::R_VOLUME => {
                let mut g = Get::new("VOLUME reply", p);
                let state = VolumeState {
                    size: g.u64()?,
                    instance: g.u128()?,
                    epoch: g.u64()?,
                    unsettled: g.map()?,
                };
                g.end()?;
                Response::Volume(state)
            }
            kind::R_DONE => {
                Get::new("DONE reply", p).end()?;
                Response::Done
            }
            kind::R_DATA => Response::Data(p.clone()),
            kind::R_DIRTY => {
                let mut g = Get::new("DIRTY reply", p);
                let map = g.map()?;
                g.end()?;
                Response::Dirty(map)
            }
            kind::R_CHECKSUMS => {
                let mut g = Get::new("CHECKSUMS reply", p);
                let n = g.u32()?;
                let mut sums = Vec::new();
                for _ in 0..n {
                    sums.push(g.take(32)?.try_into().expect("32"));
                }
                g.end()?;
                Response::Checksums(sums)
            }
            kind::R_ERROR => {
                let mut g = Get::new("ERROR reply", p);
                let raw = g.u8()?;
                let code = ErrorCode::from_u8(raw).ok_or_else(|| g.bad(format!("code {raw}")))?;
                let (seen, message) = (g.u64()?, g.str()?);
                g.end()?;
                Response::Error(WireError {
                    code,
                    seen,
                    message,
                })
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(response)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
