//! A small synchronous NBD client: fixed newstyle handshake with NBD_OPT_GO (falling back
//! to NBD_OPT_EXPORT_NAME when a server does not know GO), then one request at a time,
//! simple replies only. Used by the tests (fault schedules stamping blocks) and benches.
//! It sends what it is asked to send, out-of-range or oversized requests included, so a
//! test can watch the server refuse them.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::proto::{self, InfoRequest, OptionHeader, OptionReplyHeader, Request, SimpleReply};

/// Longest option reply the client accepts (the server's are a few dozen bytes).
const MAX_REPLY_LEN: u32 = 1 << 20;
/// Requests with a payload this small go out in one write with their header.
const COALESCE: usize = 256 << 10;

/// Errors of [`NbdClient`] calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed; the connection is closed.
    #[error("NBD connection to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    /// The server sent something the protocol does not allow; the connection is closed.
    #[error("NBD server {addr} broke the protocol: {detail}")]
    Protocol { addr: String, detail: String },
    /// The server answered an option with an error (e.g. NBD_REP_ERR_UNKNOWN: no such
    /// export).
    #[error("NBD server {addr} refused {} for export {export:?}: {} {message}", proto::option_name(*option), proto::reply_name(*reply))]
    Refused {
        addr: String,
        export: String,
        option: u32,
        reply: u32,
        message: String,
    },
    /// A request failed with an NBD error value (`code`, e.g. 22 for EINVAL). After
    /// ESHUTDOWN the connection is closed; after any other the connection stays usable.
    #[error("{command} of {len} bytes at {offset} failed: NBD error {code} ({})", proto::error_name(*code))]
    Command {
        command: &'static str,
        offset: u64,
        len: u64,
        code: u32,
    },
    /// An earlier failure (or ESHUTDOWN) closed this connection; reconnect.
    #[error("the NBD connection is closed; reconnect")]
    Closed,
}

impl ClientError {
    /// The NBD error value of a failed request.
    pub fn nbd_error(&self) -> Option<u32> {
        match self {
            ClientError::Command { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The option reply type of a refused option.
    pub fn option_reply(&self) -> Option<u32> {
        match self {
            ClientError::Refused { reply, .. } => Some(*reply),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What NBD_OPT_GO (or EXPORT_NAME) told about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    pub flags: u16,
    /// (minimum, preferred, maximum payload) when the server sent NBD_INFO_BLOCK_SIZE.
    pub block_sizes: Option<(u32, u32, u32)>,
    /// NBD_INFO_DESCRIPTION's text, when the server sent one.
    pub description: Option<String>,
}

/// One connection in the transmission phase. Not shared between threads (open one per
/// thread: servers that advertise CAN_MULTI_CONN keep them consistent).
#[derive(Debug)]
pub struct NbdClient {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    info: ExportInfo,
    next_cookie: u64,
    closed: bool,
}

/// The negotiation phase, before an export is chosen.
struct Handshake {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    no_zeroes: bool,
}

impl Handshake {
    fn open(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Handshake> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Io {
                addr: "the given address".to_owned(),
                source,
            })?
            .collect();
        let name = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        let stream = addrs
            .iter()
            .find_map(|a| match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => Some(s),
                Err(e) => {
                    last = e;
                    None
                }
            });
        let stream = stream.ok_or_else(|| ClientError::Io {
            addr: name.clone(),
            source: last,
        })?;
        let io_err = |source| ClientError::Io {
            addr: name.clone(),
            source,
        };
        stream.set_nodelay(true).map_err(io_err)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        let writer = stream.try_clone().map_err(io_err)?;
        let mut h = Handshake {
            addr: name,
            reader: BufReader::new(stream),
            writer,
            no_zeroes: false,
        };
        let mut greeting = [0u8; 18];
        h.reader.read_exact(&mut greeting).map_err(|e| h.io(e))?;
        let magic = u64::from_be_bytes(greeting[0..8].try_into().expect("8 bytes"));
        let newstyle = u64::from_be_bytes(greeting[8..16].try_into().expect("8 bytes"));
        if magic != proto::NBDMAGIC || newstyle != proto::IHAVEOPT {
            return Err(h.protocol("not a newstyle NBD server (bad greeting magic)"));
        }
        let flags = u16::from_be_bytes([greeting[16], greeting[17]]);
        if flags & proto::FLAG_FIXED_NEWSTYLE == 0 {
            return Err(h.protocol("the server does not speak fixed newstyle negotiation"));
        }
        h.no_zeroes = flags & proto::FLAG_NO_ZEROES != 0;
        let mut client_flags = proto::FLAG_C_FIXED_NEWSTYLE;
        if h.no_zeroes {
            client_flags |= proto::FLAG_C_NO_ZEROES;
        }
        h.writer
            .write_all(&client_flags.to_be_bytes())
            .map_err(|e| h.io(e))?;
        Ok(h)
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    fn send_option(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let mut frame = OptionHeader {
            option,
            len: data.len() as u32,
        }
        .encode()
        .to_vec();
        frame.extend_from_slice(data);
        self.writer.write_all(&frame).map_err(|e| self.io(e))
    }

    /// One option reply: (type, data).
    fn reply(&mut self, option: u32) -> Result<(u32, Vec<u8>)> {
        let mut head = [0u8; OptionReplyHeader::SIZE];
        self.reader.read_exact(&mut head).map_err(|e| self.io(e))?;
        let h = OptionReplyHeader::decode(&head)
            .ok_or_else(|| self.protocol("bad option reply magic"))?;
        if h.option != option {
            return Err(self.protocol(format!(
                "a reply to option {} while {} was asked",
                h.option, option
            )));
        }
        if h.len > MAX_REPLY_LEN {
            return Err(self.protocol(format!("an option reply of {} bytes", h.len)));
        }
        let mut data = vec![0u8; h.len as usize];
        self.reader.read_exact(&mut data).map_err(|e| self.io(e))?;
        Ok((h.reply, data))
    }

    fn refused(&self, export: &str, option: u32, reply: u32, data: &[u8]) -> ClientError {
        ClientError::Refused {
            addr: self.addr.clone(),
            export: export.to_owned(),
            option,
            reply,
            message: String::from_utf8_lossy(data).into_owned(),
        }
    }

    /// NBD_OPT_GO; `Ok(None)` when the server does not know it (NBD_REP_ERR_UNSUP).
    fn go(&mut self, export: &str) -> Result<Option<ExportInfo>> {
        let req = InfoRequest {
            name: export.to_owned(),
            requests: vec![proto::INFO_BLOCK_SIZE, proto::INFO_DESCRIPTION],
        };
        self.send_option(proto::OPT_GO, &req.encode())?;
        let mut export_info: Option<(u64, u16)> = None;
        let mut block_sizes = None;
        let mut description = None;
        loop {
            let (reply, data) = self.reply(proto::OPT_GO)?;
            match reply {
                proto::REP_INFO => {
                    let kind = data.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    match (kind, data.len()) {
                        (Some(proto::INFO_EXPORT), 12) => {
                            let size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                            let flags = u16::from_be_bytes([data[10], data[11]]);
                            export_info = Some((size, flags));
                        }
                        (Some(proto::INFO_BLOCK_SIZE), 14) => {
                            let word = |i: usize| {
                                u32::from_be_bytes(data[i..i + 4].try_into().expect("4 bytes"))
                            };
                            block_sizes = Some((word(2), word(6), word(10)));
                        }
                        (Some(proto::INFO_DESCRIPTION), _) => {
                            description = Some(String::from_utf8_lossy(&data[2..]).into_owned());
                        }
                        (Some(proto::INFO_EXPORT | proto::INFO_BLOCK_SIZE), n) => {
                            return Err(self.protocol(format!("an NBD_REP_INFO of {n} bytes")));
                        }
                        // Information the client did not ask for or does not know.
                        _ => {}
                    }
                }
                proto::REP_ACK => {
                    let (size, flags) = export_info.ok_or_else(|| {
                        self.protocol("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
                    })?;
                    return Ok(Some(ExportInfo {
                        size,
                        flags,
                        block_sizes,
                        description,
                    }));
                }
                proto::REP_ERR_UNSUP => return Ok(None),
                r if proto::is_rep_err(r) => {
                    return Err(self.refused(export, proto::OPT_GO, r, &data))
                }
                r => return Err(self.protocol(format!("reply type {r} to NBD_OPT_GO"))),
            }
        }
    }

    /// NBD_OPT_EXPORT_NAME, for servers without NBD_OPT_GO (a refusal is a closed
    /// connection).
    fn export_name(&mut self, export: &str) -> Result<ExportInfo> {
        self.send_option(proto::OPT_EXPORT_NAME, export.as_bytes())?;
        let mut b = [0u8; 10];
        self.reader.read_exact(&mut b).map_err(|e| self.io(e))?;
        if !self.no_zeroes {
            proto::skip(&mut self.reader, 124).map_err(|e| self.io(e))?;
        }
        Ok(ExportInfo {
            size: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            flags: u16::from_be_bytes([b[8], b[9]]),
            block_sizes: None,
            description: None,
        })
    }
}

/// The export names a server lists (NBD_OPT_LIST), then a soft disconnect.
pub fn list_exports(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Vec<String>> {
    let mut h = Handshake::open(addr, timeout)?;
    h.send_option(proto::OPT_LIST, &[])?;
    let mut names = Vec::new();
    loop {
        let (reply, data) = h.reply(proto::OPT_LIST)?;
        match reply {
            proto::REP_SERVER => {
                let len = data
                    .get(0..4)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
                let name = len.and_then(|len| data.get(4..4 + len)).ok_or_else(|| {
                    h.protocol("an NBD_REP_SERVER whose name length exceeds the reply")
                })?;
                names.push(String::from_utf8_lossy(name).into_owned());
            }
            proto::REP_ACK => break,
            r if proto::is_rep_err(r) => return Err(h.refused("", proto::OPT_LIST, r, &data)),
            r => return Err(h.protocol(format!("reply type {r} to NBD_OPT_LIST"))),
        }
    }
    // Soft disconnect; the server's ACK to it is optional by the spec.
    if h.send_option(proto::OPT_ABORT, &[]).is_ok() {
        let _ = h.reply(proto::OPT_ABORT);
    }
    Ok(names)
}

impl NbdClient {
    /// Connects and enters the transmission phase on `export` ("" is the default export),
    /// with a 30 s timeout on every read and write.
    pub fn connect(addr: impl ToSocketAddrs, export: &str) -> Result<NbdClient> {
        NbdClient::connect_timeout(addr, export, Duration::from_secs(30))
    }

    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        export: &str,
        timeout: Duration,
    ) -> Result<NbdClient> {
        let mut h = Handshake::open(addr, timeout)?;
        let info = match h.go(export)? {
            Some(info) => info,
            None => h.export_name(export)?,
        };
        Ok(NbdClient {
            addr: h.addr,
            reader: h.reader,
            writer: h.writer,
            info,
            next_cookie: 1,
            closed: false,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads `buf.len()` bytes (at most 4 GiB - 1; the server refuses more than its
    /// maximum payload, 32 MiB for Haven's).
    pub fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = self.len32(buf.len())?;
        self.call(proto::CMD_READ, 0, offset, len, None, Some(buf))
    }

    /// Writes `data`; `fua`: durable before the reply.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let len = self.len32(data.len())?;
        self.call(
            proto::CMD_WRITE,
            fua_flag(fua),
            offset,
            len,
            Some(data),
            None,
        )
    }

    /// Zeroes `len` bytes, fully provisioned (NBD_CMD_FLAG_NO_HOLE).
    pub fn write_zeroes(&mut self, offset: u64, len: u32, fua: bool) -> Result<()> {
        self.call(
            proto::CMD_WRITE_ZEROES,
            fua_flag(fua) | proto::CMD_FLAG_NO_HOLE,
            offset,
            len,
            None,
            None,
        )
    }

    pub fn trim(&mut self, offset: u64, len: u32, fua: bool) -> Result<()> {
        self.call(proto::CMD_TRIM, fua_flag(fua), offset, len, None, None)
    }

    /// Every write acknowledged before it durable when it returns.
    pub fn flush(&mut self) -> Result<()> {
        self.call(proto::CMD_FLUSH, 0, 0, 0, None, None)
    }

    /// Sends a raw request header without payload (for tests of the server's refusals:
    /// unknown commands and flags). The reply's error value is returned as an error.
    pub fn raw_request(&mut self, command: u16, flags: u16, offset: u64, len: u32) -> Result<()> {
        self.call(command, flags, offset, len, None, None)
    }

    /// Soft disconnect (NBD_CMD_DISC), then waits for the server to close.
    pub fn disconnect(mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let req = Request {
            flags: 0,
            command: proto::CMD_DISC,
            cookie: self.cookie(),
            offset: 0,
            len: 0,
        };
        self.writer
            .write_all(&req.encode())
            .map_err(|e| self.io(e))?;
        let _ = self.writer.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(n) => Err(self.protocol(format!("{n} bytes after NBD_CMD_DISC"))),
            Err(e) => Err(self.io(e)),
        }
    }

    fn len32(&self, len: usize) -> Result<u32> {
        u32::try_from(len).map_err(|_| ClientError::Command {
            command: "request",
            offset: 0,
            len: len as u64,
            code: proto::EINVAL,
        })
    }

    fn cookie(&mut self) -> u64 {
        let c = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        c
    }

    fn io(&mut self, source: io::Error) -> ClientError {
        self.closed = true;
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&mut self, detail: impl Into<String>) -> ClientError {
        self.closed = true;
        ClientError::Protocol {
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    fn call(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<&[u8]>,
        into: Option<&mut [u8]>,
    ) -> Result<()> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let cookie = self.cookie();
        let head = Request {
            flags,
            command,
            cookie,
            offset,
            len,
        }
        .encode();
        let sent = match payload {
            Some(data) if data.len() <= COALESCE => {
                let mut frame = Vec::with_capacity(head.len() + data.len());
                frame.extend_from_slice(&head);
                frame.extend_from_slice(data);
                self.writer.write_all(&frame)
            }
            Some(data) => self
                .writer
                .write_all(&head)
                .and_then(|()| self.writer.write_all(data)),
            None => self.writer.write_all(&head),
        };
        sent.map_err(|e| self.io(e))?;
        let mut rh = [0u8; SimpleReply::SIZE];
        self.reader.read_exact(&mut rh).map_err(|e| self.io(e))?;
        let Some(reply) = SimpleReply::decode(&rh) else {
            return Err(self.protocol("bad reply magic (structured replies are not negotiated)"));
        };
        if reply.cookie != cookie {
            return Err(self.protocol(format!(
                "a reply for cookie {} while {} was awaited",
                reply.cookie, cookie
            )));
        }
        if reply.error != 0 {
            if reply.error == proto::ESHUTDOWN {
                // The spec: a client receiving ESHUTDOWN initiates a soft disconnect.
                let disc = Request {
                    flags: 0,
                    command: proto::CMD_DISC,
                    cookie: self.cookie(),
                    offset: 0,
                    len: 0,
                };
                let _ = self.writer.write_all(&disc.encode());
                let _ = self.writer.shutdown(Shutdown::Both);
                self.closed = true;
            }
            return Err(ClientError::Command {
                command: proto::command_name(command),
                offset,
                len: u64::from(len),
                code: reply.error,
            });
        }
        if let Some(buf) = into {
            self.reader.read_exact(buf).map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

fn fua_flag(fua: bool) -> u16 {
    if fua {
        proto::CMD_FLAG_FUA
    } else {
        0
    }
}
