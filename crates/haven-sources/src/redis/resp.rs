//! A small RESP2 client over a blocking [`TcpStream`]: what Haven needs from Redis and
//! nothing more (no `redis` crate).
//!
//! - [`RedisUrl`]: `redis://[[user]:password@]host[:port]`, percent-decoded; its
//!   [`RedisUrl::describe`] never shows the password.
//! - [`Connection`]: connects with a timeout, sends `AUTH` from the URL, and exchanges
//!   binary-safe commands and [`Reply`]s. Commands can be queued with
//!   [`Connection::send`] and flushed together (pipelining) for bulk work; replies are then
//!   read in order with [`Connection::read`]. [`Connection::call`] is one round trip that
//!   turns an error reply into a [`SourceError`].
//!
//! Error classes: no connection (refused, timeout, unknown host) is
//! [`SourceError::Unreachable`]; `NOAUTH`, `WRONGPASS`, `NOPERM` and refused `AUTH` are
//! [`SourceError::AccessDenied`]; other error replies are [`SourceError::Failed`].

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{Result, SourceError};

/// How long a connection attempt to one address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read or write may block. Long enough for a big reply or for a `FLUSHALL`;
/// during `SYNC` the server sends a keep-alive newline every second.
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);

const DEFAULT_PORT: u16 = 6379;

/// Where a Redis server is and how to log in. `Debug` and [`describe`](Self::describe)
/// leave the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    /// An ACL user (`AUTH user password`); without it `AUTH password` logs in as `default`.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl RedisUrl {
    /// Parse `redis://[[user]:password@]host[:port][/]`. User and password may be
    /// percent-encoded. TLS (`rediss://`), Unix sockets and a database number in the path
    /// are refused with a message saying why.
    pub fn parse(url: &str) -> Result<RedisUrl> {
        let bad = |why: &str| {
            SourceError::Unsupported(format!("invalid redis url `{}`: {why}", redact(url)))
        };
        let rest = if let Some(rest) = url.strip_prefix("redis://") {
            rest
        } else if url.starts_with("rediss://") {
            return Err(bad(
                "TLS (rediss://) is not supported; reach the server over plain TCP on a trusted network or through a local TLS tunnel",
            ));
        } else {
            return Err(bad("expected redis://[[user]:password@]host[:port]"));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad(
                "a database number, path or query is not accepted: a backup covers every database of the server",
            ));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user =
                    percent_decode(user).ok_or_else(|| bad("bad percent-encoding in the user"))?;
                let pass = pass
                    .map(|p| {
                        percent_decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))
                    })
                    .transpose()?;
                ((!user.is_empty()).then_some(user), pass)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
        };
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            username,
            password,
        })
    }

    fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `redis://[user@]host:port`, without the password: for messages.
    pub fn describe(&self) -> String {
        match &self.username {
            Some(user) => format!("redis://{}@{}", percent_encode(user), self.host_port()),
            None => format!("redis://{}", self.host_port()),
        }
    }

    /// The full URL, password included (percent-encoded): for configs, never for messages.
    pub fn to_url(&self) -> String {
        let user = self
            .username
            .as_deref()
            .map(percent_encode)
            .unwrap_or_default();
        match &self.password {
            Some(pass) => format!(
                "redis://{user}:{}@{}",
                percent_encode(pass),
                self.host_port()
            ),
            None if !user.is_empty() => format!("redis://{user}@{}", self.host_port()),
            None => format!("redis://{}", self.host_port()),
        }
    }
}

/// The URL with any password replaced, for error messages about the URL itself.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[scheme_end + 3..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    match after[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &after[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') {
                ":<hidden>"
            } else {
                ""
            };
            format!("{}{user}{hidden}{}", &url[..scheme_end + 3], &after[at..])
        }
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    /// A null bulk string or null array (`$-1`, `*-1`).
    Nil,
}

impl Reply {
    /// The bytes of a bulk or status reply.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Status(s) => Some(s.into_bytes()),
            _ => None,
        }
    }

    /// A bulk or status reply as text (lossy).
    pub fn into_text(self) -> Option<String> {
        self.into_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is the `+OK` status.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Status(s) if s == "OK")
    }
}

/// Read one line ending in `\r\n`, returned without it.
pub(crate) fn read_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol_error("a reply line does not end with CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

pub(crate) fn protocol_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("RESP protocol error: {what}"),
    )
}

fn parse_int(digits: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("a length or integer is not a number"))
}

/// Read one reply. A bulk string is read incrementally, so a bogus length cannot make us
/// allocate more than what actually arrives.
pub fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let line = read_line(r)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(protocol_error("an empty reply line"));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(rest)?),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let len = len as u64;
            let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
            r.by_ref().take(len).read_to_end(&mut buf)?;
            if (buf.len() as u64) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection in the middle of a reply",
                ));
            }
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(protocol_error("a bulk string does not end with CRLF"));
            }
            Reply::Bulk(buf)
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut items = Vec::with_capacity((len as usize).min(1024));
            for _ in 0..len {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(protocol_error("an unknown reply type")),
    })
}

/// Append one command in RESP form (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Classify an error reply: refused credentials or permissions are
/// [`SourceError::AccessDenied`], everything else [`SourceError::Failed`].
pub fn reply_error(target: &str, what: &str, message: &str) -> SourceError {
    let code = message.split_whitespace().next().unwrap_or("");
    let denied = matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
        || message.starts_with("ERR invalid password")
        || message.starts_with("ERR AUTH")
        || message.starts_with("ERR Client sent AUTH");
    if denied {
        let hint = match code {
            "NOAUTH" => "; put the password in the url: redis://:password@host:port",
            "NOPERM" => "; grant this ACL user the commands Haven needs (SYNC, REPLCONF, SCAN, DUMP, RESTORE, ...)",
            _ => "",
        };
        SourceError::AccessDenied {
            target: target.to_string(),
            detail: format!("{what}: {message}{hint}"),
        }
    } else if code == "LOADING" {
        SourceError::failed(
            format!("{what} on {target}"),
            format!("{message}; try again once the server has loaded its data"),
        )
    } else {
        SourceError::failed(format!("{what} on {target}"), message.to_string())
    }
}

/// One connection to a Redis server.
pub struct Connection {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    target: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .finish()
    }
}

impl Connection {
    /// Connect (trying each address of the host) and log in with the URL's credentials.
    pub fn connect(url: &RedisUrl) -> Result<Connection> {
        let target = url.describe();
        let unreachable = |detail: String| SourceError::Unreachable {
            target: target.clone(),
            detail,
        };
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", url.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            unreachable(match last {
                Some(e) => format!(
                    "cannot connect to {}: {e}; is the server running?",
                    url.host_port()
                ),
                None => format!("{} has no address", url.host),
            })
        })?;
        let io = |e| SourceError::io(format!("setting up the connection to {target}"), e);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut conn = Connection {
            reader: BufReader::with_capacity(64 * 1024, stream),
            out: Vec::new(),
            target: target.clone(),
        };
        match (&url.username, &url.password) {
            (None, None) => {}
            (None, Some(pass)) => {
                conn.call(&[b"AUTH", pass.as_bytes()])?;
            }
            (Some(user), pass) => {
                let pass = pass.as_deref().unwrap_or("");
                conn.call(&[b"AUTH", user.as_bytes(), pass.as_bytes()])?;
            }
        }
        Ok(conn)
    }

    /// The server as named in messages (`redis://host:port`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Queue a command; it is sent by the next [`flush`](Self::flush).
    pub fn send(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.out, args);
    }

    /// How many bytes of queued commands wait for a flush.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Send the queued commands.
    pub fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.reader.get_mut();
        let res = stream.write_all(&self.out).and_then(|_| stream.flush());
        self.out.clear();
        res.map_err(|e| SourceError::io(format!("sending commands to {}", self.target), e))
    }

    /// Read the next reply, error replies included (as [`Reply::Error`]).
    pub fn read(&mut self) -> Result<Reply> {
        read_reply(&mut self.reader).map_err(|e| self.io_error(e))
    }

    /// Read the next reply; an error reply becomes an error naming `what`.
    pub fn read_ok(&mut self, what: &str) -> Result<Reply> {
        match self.read()? {
            Reply::Error(message) => Err(reply_error(&self.target, what, &message)),
            reply => Ok(reply),
        }
    }

    /// One command, one reply; an error reply becomes an error naming the command.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args);
        self.flush()?;
        let what = args
            .first()
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .unwrap_or_default();
        self.read_ok(&what)
    }

    /// Like [`call`](Self::call) with text arguments.
    pub fn call_str(&mut self, args: &[&str]) -> Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// The buffered reader of the connection, for reading a raw stream (the RDB of `SYNC`).
    pub(crate) fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    pub(crate) fn io_error(&self, e: io::Error) -> SourceError {
        let what = if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            format!(
                "no answer from {} within {} s",
                self.target,
                IO_TIMEOUT.as_secs()
            )
        } else {
            format!("reading from {}", self.target)
        };
        SourceError::io(what, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, &u.username, &u.password),
            ("127.0.0.1", 6380, &None, &None)
        );
        let u = RedisUrl::parse("redis://db.example").unwrap();
        assert_eq!(u.port, 6379);
        let u = RedisUrl::parse("redis://:s%40cret:x@host:1/").unwrap();
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("s@cret:x"));
        let u = RedisUrl::parse("redis://alice:pw@host:2").unwrap();
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        let u = RedisUrl::parse("redis://[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.describe(), "redis://[::1]:7000");
    }

    #[test]
    fn describe_and_errors_never_show_the_password() {
        let u = RedisUrl::parse("redis://alice:topsecret@host:2").unwrap();
        assert_eq!(u.describe(), "redis://alice@host:2");
        assert!(!format!("{u:?}").contains("topsecret"));
        assert_eq!(RedisUrl::parse(&u.to_url()).unwrap(), u);
        for bad in [
            "rediss://:topsecret@host",
            "redis://:topsecret@host/3",
            "redis://:topsecret@host:99999",
            "http://:topsecret@host",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("topsecret"), "{err}");
            assert!(err.contains("invalid redis url"), "{err}");
        }
    }

    #[test]
    fn replies_of_every_type_parse() {
        let wire =
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$0\r\n\r\n*1\r\n:1\r\n*-1\r\n";
        let mut r = &wire[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Int(42));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(b"a\r\n".to_vec()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Nil);
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(vec![Reply::Bulk(vec![]), Reply::Array(vec![Reply::Int(1)])])
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Nil);
        assert!(read_reply(&mut r).is_err());
    }

    #[test]
    fn a_truncated_bulk_is_an_error_not_a_short_value() {
        let mut r = &b"$1000\r\nabc"[..];
        assert_eq!(
            read_reply(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn commands_are_binary_safe() {
        let mut out = vec![];
        encode_command(&mut out, &[b"SET", b"k\r\n", &[0, 255]]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n\x00\xff\r\n");
    }

    #[test]
    fn credential_errors_are_access_denied() {
        for msg in [
            "NOAUTH Authentication required.",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOPERM this user has no permissions to run the 'sync' command",
        ] {
            assert!(
                matches!(
                    reply_error("t", "AUTH", msg),
                    SourceError::AccessDenied { .. }
                ),
                "{msg}"
            );
        }
        assert!(matches!(
            reply_error("t", "GET", "ERR wrong"),
            SourceError::Failed { .. }
        ));
    }
}
