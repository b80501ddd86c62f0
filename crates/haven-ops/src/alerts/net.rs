//! The connection under both senders: TCP with one deadline for the whole exchange
//! (every connect, read and write is bounded by what is left of it), optionally TLS
//! (rustls, ring provider, system roots or a given CA file), upgradable in place for
//! STARTTLS, and a line reader with a length cap.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Longest line accepted from a peer (SMTP replies, HTTP status and header lines).
const MAX_LINE: usize = 8 * 1024;

enum Inner {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while upgrading.
    Gone,
}

pub(crate) struct Conn {
    inner: Inner,
    deadline: Instant,
    buf: Vec<u8>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

impl Conn {
    /// Connect to `host:port` (every resolved address in turn) before `deadline`.
    pub fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<Conn> {
        // Name resolution (getaddrinfo) has no timeout of its own; it is the one step
        // the deadline cannot bound.
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(Conn {
                        inner: Inner::Plain(s),
                        deadline,
                        buf: Vec::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn sock(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(t) => &t.sock,
            Inner::Gone => unreachable!("connection used while upgrading"),
        }
    }

    /// Bound the next socket operation by what is left of the deadline.
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.sock().set_read_timeout(Some(left))?;
        self.sock().set_write_timeout(Some(left))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock().local_addr()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// Wrap the connection in TLS for `host` (SNI and certificate check), handshaking now
    /// so that certificate errors surface here. Refuses when the peer already sent bytes
    /// we have not read (they would be plain text injected before the handshake).
    pub fn start_tls(&mut self, host: &str, config: Arc<ClientConfig>) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent data before the TLS handshake",
            ));
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let sock = match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Plain(s) => s,
            other => {
                self.inner = other;
                return Err(io::Error::other("the connection is already TLS"));
            }
        };
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        self.inner = Inner::Tls(Box::new(StreamOwned::new(conn, sock)));
        self.arm()?;
        if let Inner::Tls(t) = &mut self.inner {
            while t.conn.is_handshaking() {
                t.conn.complete_io(&mut t.sock)?;
            }
        }
        Ok(())
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.arm()?;
        match &mut self.inner {
            Inner::Plain(s) => s.write_all(data)?,
            Inner::Tls(t) => {
                t.write_all(data)?;
                t.flush()?;
            }
            Inner::Gone => unreachable!(),
        }
        Ok(())
    }

    /// Read more bytes into the buffer; 0 at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        self.arm()?;
        let mut chunk = [0u8; 4096];
        let n = match &mut self.inner {
            Inner::Plain(s) => s.read(&mut chunk),
            Inner::Tls(t) => match t.read(&mut chunk) {
                // A peer closing without close_notify after it answered is common.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
            Inner::Gone => unreachable!(),
        };
        let n = n.map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => timed_out(),
            _ => e,
        })?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One line without its CR LF; an error at end of stream or past [`MAX_LINE`].
    pub fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the server sent an overlong line",
                ));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    /// Up to `limit` bytes (fewer at end of stream); used for error bodies.
    pub fn read_up_to(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < limit {
            if self.fill()? == 0 {
                break;
            }
        }
        let n = self.buf.len().min(limit);
        Ok(self.buf.drain(..n).collect())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_with(roots: RootCertStore) -> io::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS client settings: the CAs of `ca_file` when given, else the system's roots
/// (loaded once per process).
pub(crate) fn tls_config(ca_file: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    if let Some(path) = ca_file {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                io::Error::other(format!("cannot read CA file {}: {e}", path.display()))
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(io::Error::other(format!(
                "CA file {} holds no usable certificate",
                path.display()
            )));
        }
        return config_with(roots);
    }
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            if roots.is_empty() {
                return Err(format!(
                    "no system CA certificates found ({} errors); install ca-certificates or set ca-file",
                    loaded.errors.len()
                ));
            }
            config_with(roots).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(io::Error::other)
}

/// A readable cause: the I/O error with the usual suspects spelled out.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused (is the server running?)".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Whole-exchange deadline from a timeout.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}
