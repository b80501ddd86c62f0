//! The NBD server: an accept loop that runs one scoped thread per connection. Each does
//! the fixed newstyle handshake, then reads requests and hands them to the connection's
//! workers (`ServerConfig::max_in_flight` threads) that call the device and write the
//! replies as requests complete (matched by cookie, as the protocol allows).
//! [`Stopper::stop`] wakes the accept loop and half-closes every open connection, so
//! [`NbdServer::run`] returns once every connection thread has ended: requests already
//! being served finish and get their replies, later ones get ESHUTDOWN.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::proto::{self, InfoRequest, OptionHeader, Request, SimpleReply};
use super::{BlockDevice, Exports, IoFailure};

/// Transmission flags of every export: flush, FUA, trim and write-zeroes are passed to the
/// device; CAN_MULTI_CONN because devices have no per-connection cache (a FLUSH on one
/// connection covers writes acknowledged on every other).
pub const TRANSMISSION_FLAGS: u16 = proto::FLAG_HAS_FLAGS
    | proto::FLAG_SEND_FLUSH
    | proto::FLAG_SEND_FUA
    | proto::FLAG_SEND_TRIM
    | proto::FLAG_SEND_WRITE_ZEROES
    | proto::FLAG_CAN_MULTI_CONN;

/// Timeouts and size constraints of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Each read and write of the handshake; a client silent this long is dropped.
    pub handshake_timeout: Duration,
    /// Reading a request's payload once its header arrived, and writing a reply.
    pub io_timeout: Duration,
    /// Waiting for the next request; `None` (the default): an idle client stays connected
    /// (qemu keeps its connection open for as long as the disk is attached).
    pub idle_timeout: Option<Duration>,
    /// Minimum block size advertised in NBD_INFO_BLOCK_SIZE: 1 (no alignment needed) or
    /// a power of two up to 64 KiB; requests not aligned to it get EINVAL.
    pub min_block: u32,
    /// Requests of one connection served at once (each by its own worker thread); 1
    /// serves them one by one. Replies go out as requests complete, matched by cookie.
    pub max_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            handshake_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
            idle_timeout: None,
            min_block: 1,
            max_in_flight: 8,
        }
    }
}

/// Errors that stop a server (one connection's failure never does).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen for NBD clients on {addr}: {source} (is the address in use or not local?)"
    )]
    Bind { addr: String, source: io::Error },
    #[error("the NBD listener on {addr} failed: {source}")]
    Accept { addr: SocketAddr, source: io::Error },
    #[error("invalid NBD server configuration: {0}")]
    Config(String),
}

/// Counters of a server, for status pages and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Connections that entered the transmission phase.
    pub sessions: u64,
    pub requests: u64,
    /// Requests answered with an error.
    pub request_errors: u64,
    /// Connections dropped for breaking the protocol (bad magic, unknown client flags).
    pub protocol_errors: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    sessions: AtomicU64,
    requests: AtomicU64,
    request_errors: AtomicU64,
    protocol_errors: AtomicU64,
}

struct Shared {
    stopping: AtomicBool,
    /// Where `Stopper::stop` connects to wake a blocked `accept`.
    wake_addr: SocketAddr,
    /// A handle on every open connection, to half-close them on stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    counters: Counters,
}

/// An NBD server bound to a TCP address. `run` serves until a [`Stopper`] stops it.
pub struct NbdServer {
    listener: TcpListener,
    addr: SocketAddr,
    exports: Arc<dyn Exports>,
    config: ServerConfig,
    shared: Arc<Shared>,
}

/// Stops an [`NbdServer`]: cheap to clone, usable from any thread, idempotent.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl NbdServer {
    /// Binds `addr` (port 0: any free port, see [`NbdServer::local_addr`]) with the
    /// default configuration.
    pub fn bind(
        addr: impl ToSocketAddrs,
        exports: Arc<dyn Exports>,
    ) -> Result<NbdServer, ServerError> {
        NbdServer::bind_with(addr, exports, ServerConfig::default())
    }

    pub fn bind_with(
        addr: impl ToSocketAddrs,
        exports: Arc<dyn Exports>,
        config: ServerConfig,
    ) -> Result<NbdServer, ServerError> {
        if !config.min_block.is_power_of_two() || config.min_block > 65536 {
            return Err(ServerError::Config(format!(
                "min_block {} is not a power of two up to 65536",
                config.min_block
            )));
        }
        if config.max_in_flight == 0 {
            return Err(ServerError::Config(
                "max_in_flight must be at least 1".to_owned(),
            ));
        }
        if config.io_timeout.is_zero()
            || config.handshake_timeout.is_zero()
            || config.idle_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(ServerError::Config(
                "timeouts must be above zero".to_owned(),
            ));
        }
        let listener = TcpListener::bind(&addr).map_err(|source| ServerError::Bind {
            addr: match addr.to_socket_addrs() {
                Ok(addrs) => addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
                Err(_) => "an address that does not resolve".to_owned(),
            },
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: "the bound socket".to_owned(),
            source,
        })?;
        let wake_ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            wake_addr: SocketAddr::new(wake_ip, addr.port()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            counters: Counters::default(),
        });
        Ok(NbdServer {
            listener,
            addr,
            exports,
            config,
            shared,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: self.shared.clone(),
        }
    }

    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            connections_accepted: c.accepted.load(Ordering::SeqCst),
            connections_open: c.open.load(Ordering::SeqCst),
            sessions: c.sessions.load(Ordering::SeqCst),
            requests: c.requests.load(Ordering::SeqCst),
            request_errors: c.request_errors.load(Ordering::SeqCst),
            protocol_errors: c.protocol_errors.load(Ordering::SeqCst),
        }
    }

    /// Accepts and serves connections until stopped; returns after every connection
    /// thread has ended. Transient accept failures (a client gone before it was accepted,
    /// out of file descriptors) are waited out; others end the server with an error.
    pub fn run(&self) -> Result<(), ServerError> {
        std::thread::scope(|scope| {
            let mut backoff = Duration::from_millis(10);
            loop {
                if self.shared.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let stream = match self.listener.accept() {
                    Ok((stream, _)) => {
                        backoff = Duration::from_millis(10);
                        stream
                    }
                    Err(e) if accept_error_is_transient(&e) => {
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                        ) {
                            // Out of descriptors or memory: wait for connections to end.
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        continue;
                    }
                    Err(source) => {
                        return Err(ServerError::Accept {
                            addr: self.addr,
                            source,
                        })
                    }
                };
                if self.shared.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let Some(id) = self.register(&stream) else {
                    continue;
                };
                let conn = Conn {
                    exports: &*self.exports,
                    config: &self.config,
                    shared: &self.shared,
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("nbd-conn-{id}"))
                    .spawn_scoped(scope, move || {
                        conn.serve(stream);
                        self.unregister(id);
                    });
                if spawned.is_err() {
                    self.unregister(id);
                }
            }
        })
    }

    /// Records a new connection (a handle to half-close it on stop); `None` when the
    /// server is stopping (the connection is dropped).
    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let id = self.shared.next_conn.fetch_add(1, Ordering::SeqCst);
        self.shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
        self.shared.counters.open.fetch_add(1, Ordering::SeqCst);
        self.shared
            .conns
            .lock()
            .expect("nbd conns lock")
            .insert(id, handle);
        // Checked after inserting: a stop that ran before the insert found no handle.
        if self.shared.stopping.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Read);
        }
        Some(id)
    }

    fn unregister(&self, id: u64) {
        self.shared
            .conns
            .lock()
            .expect("nbd conns lock")
            .remove(&id);
        self.shared.counters.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

impl Stopper {
    /// Stops accepting, half-closes every open connection (a request in progress still
    /// gets its reply; the client then sees the connection close) and makes
    /// [`NbdServer::run`] return once every connection thread has ended.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop; failing is fine (then it was not blocked in accept).
        let _ = TcpStream::connect_timeout(&self.shared.wake_addr, Duration::from_secs(1));
        for stream in self.shared.conns.lock().expect("nbd conns lock").values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

/// Why a connection ended other than by the client's choice.
#[derive(Debug)]
enum ConnEnd {
    /// The socket failed or the peer went away mid-frame.
    Io,
    /// The client broke the protocol; the connection is dropped without a reply.
    Protocol,
    /// The device answered Shutdown (or the server is stopping): ESHUTDOWN was sent.
    Shutdown,
}

impl From<io::Error> for ConnEnd {
    fn from(_: io::Error) -> ConnEnd {
        ConnEnd::Io
    }
}

/// One connection's view of the server.
struct Conn<'a> {
    exports: &'a dyn Exports,
    config: &'a ServerConfig,
    shared: &'a Shared,
}

/// A request read from the socket, waiting for a worker.
struct Job {
    req: Request,
    /// A WRITE's data (shared with the device: [`BlockDevice::write_shared`]).
    payload: Arc<Vec<u8>>,
    /// Refused while reading (an oversized WRITE whose payload was skipped).
    refused: Option<IoFailure>,
}

/// The socket's writing half, shared by a connection's workers.
struct ReplyWriter {
    stream: TcpStream,
    /// No more replies: the socket is shut down (a reply failed, or ESHUTDOWN was sent).
    closed: bool,
    /// ESHUTDOWN was sent.
    shutdown: bool,
}

impl ReplyWriter {
    fn close(&mut self) {
        self.closed = true;
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The export a handshake selected.
struct Session {
    device: Arc<dyn BlockDevice>,
    size: u64,
}

impl Conn<'_> {
    fn serve(&self, stream: TcpStream) {
        let ended = self.serve_inner(&stream);
        // Counted before `stream`, the last handle on the socket, closes it: a client
        // that saw the close sees the count.
        if let Err(ConnEnd::Protocol) = ended {
            self.shared
                .counters
                .protocol_errors
                .fetch_add(1, Ordering::SeqCst);
        }
    }

    fn serve_inner(&self, stream: &TcpStream) -> Result<(), ConnEnd> {
        // Replies are small and latency matters (4 KiB sync writes): no Nagle delay.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.config.handshake_timeout))?;
        stream.set_write_timeout(Some(self.config.handshake_timeout))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::with_capacity(64 << 10, stream.try_clone()?);
        let Some(session) = self.handshake(&mut reader, &mut writer)? else {
            return Ok(());
        };
        self.shared.counters.sessions.fetch_add(1, Ordering::SeqCst);
        writer.set_write_timeout(Some(self.config.io_timeout))?;
        self.transmission(&mut reader, &mut writer, &session)
    }

    /// Option haggling; `Some` when the client entered the transmission phase, `None`
    /// when it aborted.
    fn handshake(
        &self,
        r: &mut BufReader<TcpStream>,
        w: &mut TcpStream,
    ) -> Result<Option<Session>, ConnEnd> {
        let mut greeting = Vec::with_capacity(18);
        greeting.extend_from_slice(&proto::NBDMAGIC.to_be_bytes());
        greeting.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
        greeting
            .extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
        w.write_all(&greeting)?;
        let client_flags = proto::read_u32(r)?;
        if client_flags & !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES) != 0 {
            return Err(ConnEnd::Protocol);
        }
        let no_zeroes = client_flags & proto::FLAG_C_NO_ZEROES != 0;
        loop {
            let mut head = [0u8; OptionHeader::SIZE];
            r.read_exact(&mut head)?;
            let OptionHeader { option, len } =
                OptionHeader::decode(&head).ok_or(ConnEnd::Protocol)?;
            if len > proto::MAX_OPTION_LEN {
                proto::skip(r, u64::from(len))?;
                if option == proto::OPT_EXPORT_NAME {
                    return Err(ConnEnd::Protocol);
                }
                let msg = format!(
                    "{} bytes of option data; at most {}",
                    len,
                    proto::MAX_OPTION_LEN
                );
                proto::write_option_reply(w, option, proto::REP_ERR_TOO_BIG, msg.as_bytes())?;
                continue;
            }
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data)?;
            if self.shared.stopping.load(Ordering::SeqCst) && option != proto::OPT_ABORT {
                if option == proto::OPT_EXPORT_NAME {
                    return Err(ConnEnd::Shutdown);
                }
                proto::write_option_reply(
                    w,
                    option,
                    proto::REP_ERR_SHUTDOWN,
                    b"the server is shutting down",
                )?;
                continue;
            }
            match option {
                proto::OPT_EXPORT_NAME => {
                    // No way to answer an error here: the spec says drop the connection.
                    let name = String::from_utf8(data).map_err(|_| ConnEnd::Protocol)?;
                    let device = self.exports.lookup(&name).ok_or(ConnEnd::Protocol)?;
                    let size = device.size();
                    let mut reply = Vec::with_capacity(134);
                    reply.extend_from_slice(&size.to_be_bytes());
                    reply.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                    if !no_zeroes {
                        reply.extend_from_slice(&[0u8; 124]);
                    }
                    w.write_all(&reply)?;
                    return Ok(Some(Session { device, size }));
                }
                proto::OPT_ABORT => {
                    // The client may already have closed: a failed write is fine.
                    let _ = proto::write_option_reply(w, option, proto::REP_ACK, &[]);
                    return Ok(None);
                }
                proto::OPT_LIST => {
                    if !data.is_empty() {
                        proto::write_option_reply(
                            w,
                            option,
                            proto::REP_ERR_INVALID,
                            b"NBD_OPT_LIST takes no data",
                        )?;
                        continue;
                    }
                    for name in self.exports.names() {
                        proto::write_option_reply(
                            w,
                            option,
                            proto::REP_SERVER,
                            &proto::rep_server(&name),
                        )?;
                    }
                    proto::write_option_reply(w, option, proto::REP_ACK, &[])?;
                }
                proto::OPT_INFO | proto::OPT_GO => {
                    if let Some(session) = self.info_or_go(w, option, &data)? {
                        return Ok(Some(session));
                    }
                }
                proto::OPT_STARTTLS => {
                    proto::write_option_reply(
                        w,
                        option,
                        proto::REP_ERR_POLICY,
                        b"TLS is not configured on this server",
                    )?;
                }
                _ => {
                    let msg = format!("{} ({option}) is not supported", proto::option_name(option));
                    proto::write_option_reply(w, option, proto::REP_ERR_UNSUP, msg.as_bytes())?;
                }
            }
        }
    }

    /// NBD_OPT_INFO and NBD_OPT_GO; `Some` when a GO succeeded.
    fn info_or_go(
        &self,
        w: &mut TcpStream,
        option: u32,
        data: &[u8],
    ) -> Result<Option<Session>, ConnEnd> {
        let Some(req) = InfoRequest::decode(data) else {
            let msg = format!("malformed {} data", proto::option_name(option));
            proto::write_option_reply(w, option, proto::REP_ERR_INVALID, msg.as_bytes())?;
            return Ok(None);
        };
        let Some(device) = self.exports.lookup(&req.name) else {
            let msg = if req.name.is_empty() {
                "this server has no default export; name one (NBD_OPT_LIST lists them)".to_owned()
            } else {
                format!("no export named {:?} (NBD_OPT_LIST lists them)", req.name)
            };
            proto::write_option_reply(w, option, proto::REP_ERR_UNKNOWN, msg.as_bytes())?;
            return Ok(None);
        };
        let size = device.size();
        proto::write_option_reply(
            w,
            option,
            proto::REP_INFO,
            &proto::info_export(size, TRANSMISSION_FLAGS),
        )?;
        // Sent whether asked for or not, as nbd-server does: a client ignores what it did
        // not ask for, and it tells those that do ask the 32 MiB limit.
        let block = proto::info_block_size(
            self.config.min_block,
            proto::PREFERRED_BLOCK.max(self.config.min_block),
            proto::MAX_PAYLOAD,
        );
        proto::write_option_reply(w, option, proto::REP_INFO, &block)?;
        if req.requests.contains(&proto::INFO_NAME) {
            proto::write_option_reply(w, option, proto::REP_INFO, &proto::info_name(&req.name))?;
        }
        if req.requests.contains(&proto::INFO_DESCRIPTION) {
            if let Some(text) = device.description() {
                let info = proto::info_description(&text);
                proto::write_option_reply(w, option, proto::REP_INFO, &info)?;
            }
        }
        proto::write_option_reply(w, option, proto::REP_ACK, &[])?;
        Ok((option == proto::OPT_GO).then_some(Session { device, size }))
    }

    /// Reads requests on this thread and hands them to `max_in_flight` workers that call
    /// the device and write the replies (in completion order, each reply whole under
    /// the writer's lock). DISC, EOF or a stop: the requests already read are still
    /// served and answered, then the connection closes.
    fn transmission(
        &self,
        r: &mut BufReader<TcpStream>,
        w: &mut TcpStream,
        session: &Session,
    ) -> Result<(), ConnEnd> {
        let writer = Mutex::new(ReplyWriter {
            stream: w.try_clone()?,
            closed: false,
            shutdown: false,
        });
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(0);
        let queue = Mutex::new(queue);
        std::thread::scope(|scope| {
            for _ in 0..self.config.max_in_flight {
                scope.spawn(|| self.work(&queue, &writer, session));
            }
            let read = self.read_requests(r, &jobs, &writer);
            drop(jobs);
            read
        })?;
        // Workers are done (the scope joined them).
        if writer.lock().expect("nbd writer lock").shutdown {
            return Err(ConnEnd::Shutdown);
        }
        Ok(())
    }

    /// The reading half: headers, WRITE payloads, into the queue.
    fn read_requests(
        &self,
        r: &mut BufReader<TcpStream>,
        jobs: &std::sync::mpsc::SyncSender<Job>,
        writer: &Mutex<ReplyWriter>,
    ) -> Result<(), ConnEnd> {
        // Only a WRITE's payload is read under io_timeout; headers wait idle_timeout.
        r.get_ref().set_read_timeout(self.config.idle_timeout)?;
        loop {
            let mut head = [0u8; Request::SIZE];
            match r.read_exact(&mut head) {
                Ok(()) => {}
                // A client that drops the connection between requests (or a stop that
                // half-closed it) ends the session quietly.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                // A worker closed the socket (ESHUTDOWN, a failed reply).
                Err(_) if writer.lock().expect("nbd writer lock").closed => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let req = Request::decode(&head).ok_or(ConnEnd::Protocol)?;
            if req.command == proto::CMD_DISC {
                return Ok(());
            }
            self.shared.counters.requests.fetch_add(1, Ordering::SeqCst);
            let mut payload = Vec::new();
            let mut refused = None;
            if req.command == proto::CMD_WRITE {
                // The payload is on the wire whatever the verdict: consume it first so
                // the next request header is found (oversized ones are skipped unread).
                self.read_payload(r, req.len, &mut payload)?;
                if req.len > proto::MAX_PAYLOAD {
                    refused = Some(IoFailure::Invalid(format!(
                        "write of {} bytes; at most {}",
                        req.len,
                        proto::MAX_PAYLOAD
                    )));
                }
            }
            if jobs
                .send(Job {
                    req,
                    payload: Arc::new(payload),
                    refused,
                })
                .is_err()
            {
                return Ok(());
            }
        }
    }

    /// A worker: serves queued requests until the queue is closed and empty.
    fn work(
        &self,
        queue: &Mutex<std::sync::mpsc::Receiver<Job>>,
        writer: &Mutex<ReplyWriter>,
        session: &Session,
    ) {
        loop {
            let job = match queue.lock().expect("nbd queue lock").recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            if writer.lock().expect("nbd writer lock").closed {
                // The connection is going away: nothing more is served.
                continue;
            }
            let (outcome, data) = self.serve_request(&job, session);
            let error = match &outcome {
                Ok(()) => 0,
                Err(f) => {
                    self.shared
                        .counters
                        .request_errors
                        .fetch_add(1, Ordering::SeqCst);
                    f.nbd_error()
                }
            };
            let mut reply = data.unwrap_or_default();
            if reply.is_empty() {
                reply.resize(SimpleReply::SIZE, 0);
            }
            reply[..SimpleReply::SIZE].copy_from_slice(
                &SimpleReply {
                    error,
                    cookie: job.req.cookie,
                }
                .encode(),
            );
            let mut w = writer.lock().expect("nbd writer lock");
            if w.closed {
                continue;
            }
            if w.stream.write_all(&reply).is_err() {
                w.close();
            } else if let Err(IoFailure::Shutdown(_)) = outcome {
                // This server no longer serves the export: the client reconnects, maybe
                // elsewhere. Nothing is sent after this reply.
                w.shutdown = true;
                w.close();
            }
        }
    }

    /// Runs one request; a successful READ also returns its reply frame (a header's
    /// room, then the data).
    fn serve_request(
        &self,
        job: &Job,
        session: &Session,
    ) -> (Result<(), IoFailure>, Option<Vec<u8>>) {
        let req = &job.req;
        if let Some(f) = &job.refused {
            return (Err(f.clone()), None);
        }
        if let Err(f) = self.check(req, session).and_then(|()| self.not_stopping()) {
            return (Err(f), None);
        }
        let fua = req.flags & proto::CMD_FLAG_FUA != 0;
        match req.command {
            proto::CMD_WRITE => {
                let data = Arc::clone(&job.payload);
                (session.device.write_shared(req.offset, data, fua), None)
            }
            proto::CMD_READ => {
                let mut frame = vec![0u8; SimpleReply::SIZE + req.len as usize];
                match session
                    .device
                    .read(req.offset, &mut frame[SimpleReply::SIZE..])
                {
                    Ok(()) => (Ok(()), Some(frame)),
                    Err(f) => (Err(f), None),
                }
            }
            _ => (self.execute(req, session), None),
        }
    }

    /// Reads a WRITE's payload into `buf` under `io_timeout`, or skips it unread when it
    /// is over the maximum payload.
    fn read_payload(
        &self,
        r: &mut BufReader<TcpStream>,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        r.get_ref().set_read_timeout(Some(self.config.io_timeout))?;
        if len > proto::MAX_PAYLOAD {
            proto::skip(r, u64::from(len))?;
        } else {
            // Into spare capacity: no zero-filling of what the socket overwrites.
            buf.clear();
            buf.reserve_exact(len as usize);
            r.by_ref().take(u64::from(len)).read_to_end(buf)?;
            if buf.len() != len as usize {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        r.get_ref().set_read_timeout(self.config.idle_timeout)
    }

    /// Requests read after a stop are refused (the spec's ESHUTDOWN for a server going
    /// down); the one being served when the stop came completes.
    fn not_stopping(&self) -> Result<(), IoFailure> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(IoFailure::Shutdown("the NBD server is stopping".to_owned()));
        }
        Ok(())
    }

    /// Flags, length and range checks common to every command (the spec's EINVAL cases;
    /// writes past the end are ENOSPC as the spec asks).
    fn check(&self, req: &Request, session: &Session) -> Result<(), IoFailure> {
        let name = proto::command_name(req.command);
        let allowed = match req.command {
            proto::CMD_READ | proto::CMD_WRITE | proto::CMD_FLUSH | proto::CMD_TRIM => {
                proto::CMD_FLAG_FUA
            }
            proto::CMD_WRITE_ZEROES => proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE,
            command => {
                return Err(IoFailure::Invalid(format!(
                    "{name} ({command}) is not supported"
                )))
            }
        };
        if req.flags & !allowed != 0 {
            return Err(IoFailure::Invalid(format!(
                "{name} with flags {:#x}",
                req.flags
            )));
        }
        if req.command == proto::CMD_FLUSH {
            return Ok(());
        }
        if req.command == proto::CMD_READ && req.len > proto::MAX_PAYLOAD {
            return Err(IoFailure::Invalid(format!(
                "read of {} bytes; at most {}",
                req.len,
                proto::MAX_PAYLOAD
            )));
        }
        let min = u64::from(self.config.min_block);
        if req.offset % min != 0 || u64::from(req.len) % min != 0 {
            return Err(IoFailure::Invalid(format!(
                "{name} at {} of {} bytes is not aligned to {min}",
                req.offset, req.len
            )));
        }
        match req.offset.checked_add(u64::from(req.len)) {
            Some(end) if end <= session.size => Ok(()),
            _ => {
                let msg = format!(
                    "{name} of {} bytes at {} beyond the export's {} bytes",
                    req.len, req.offset, session.size
                );
                if matches!(req.command, proto::CMD_WRITE | proto::CMD_WRITE_ZEROES) {
                    Err(IoFailure::NoSpace(msg))
                } else {
                    Err(IoFailure::Invalid(msg))
                }
            }
        }
    }

    /// FLUSH, TRIM and WRITE_ZEROES (checked already).
    fn execute(&self, req: &Request, session: &Session) -> Result<(), IoFailure> {
        let fua = req.flags & proto::CMD_FLAG_FUA != 0;
        let len = u64::from(req.len);
        match req.command {
            proto::CMD_FLUSH => session.device.flush(),
            // Nothing to do for an empty range; the device is not asked.
            proto::CMD_TRIM | proto::CMD_WRITE_ZEROES if len == 0 => Ok(()),
            proto::CMD_TRIM => session.device.trim(req.offset, len, fua),
            proto::CMD_WRITE_ZEROES => session.device.write_zeroes(req.offset, len, fua),
            command => Err(IoFailure::Invalid(format!(
                "{} ({command}) is not supported",
                proto::command_name(command)
            ))),
        }
    }
}
