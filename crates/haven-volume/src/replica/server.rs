//! The replica server: a TCP listener, one thread per connection, each reading
//! [`Request`] frames and answering them in order from the [`Store`].
//!
//! A connection starts unbound; HELLO binds it to one volume, and the data requests that
//! follow (READ, WRITE, …) act on that volume. A frame error (bad magic, version,
//! checksum, size, layout) is answered with an ERROR frame when the stream is still in
//! step, and the connection is closed. A client that vanishes mid-frame ends only its own
//! thread.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::store::{Seal, Store, StoreError, Volume, WriteOp};
use crate::replica::ReplicaInfo;
use crate::wire::{read_frame, ErrorCode, FrameError, Request, Response};

/// How often blocked reads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How often the accept loop looks for a connection (and at the stop flag): a
/// controller reconnecting after a failure waits at most this long.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// A peer that does not take a reply within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `haven replica serve`: a store and a listener.
pub struct ReplicaServer {
    store: Arc<Store>,
    site: String,
    node: String,
    listener: Option<TcpListener>,
}

impl ReplicaServer {
    /// Opens (or creates) the store in `data_dir`.
    pub fn new(data_dir: &Path, site: &str, node: &str) -> io::Result<ReplicaServer> {
        let store = Store::open(data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("replica data directory {}: {e}", data_dir.display()),
            )
        })?;
        Ok(ReplicaServer {
            store: Arc::new(store),
            site: site.to_string(),
            node: node.to_string(),
            listener: None,
        })
    }

    pub fn bind(&mut self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        self.listener = Some(listener);
        Ok(())
    }

    fn listener(&self) -> io::Result<&TcpListener> {
        self.listener.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "replica server: bind first")
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener()?.local_addr()
    }

    /// Serves until `stop` is set; then joins every connection thread and returns.
    pub fn run(&self, stop: &AtomicBool) -> io::Result<()> {
        let listener = self.listener()?;
        let info = Arc::new((self.site.clone(), self.node.clone()));
        thread::scope(|scope| {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let store = Arc::clone(&self.store);
                        let info = Arc::clone(&info);
                        scope.spawn(move || {
                            let mut conn = Connection {
                                store,
                                info,
                                volume: None,
                                session: 0,
                            };
                            // A connection's end, orderly or not, concerns only itself.
                            let _ = conn.serve(stream, stop);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ECONNABORTED, EMFILE: keep serving the others.
                    Err(_) => thread::sleep(POLL),
                }
            }
        });
        Ok(())
    }
}

/// Reads from the stream, waiting out read timeouts until `stop` is set, so a frame that
/// arrives slowly is still read whole.
struct StopReader<'a> {
    stream: &'a TcpStream,
    stop: &'a AtomicBool,
}

impl Read for StopReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.stream).read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.stop.load(Ordering::SeqCst) {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "server stopping",
                        ));
                    }
                }
                other => return other,
            }
        }
    }
}

struct Connection {
    store: Arc<Store>,
    info: Arc<(String, String)>,
    volume: Option<Arc<Volume>>,
    /// The session of this connection's HELLO (its epoch travels in each request).
    session: u64,
}

impl Connection {
    fn serve(&mut self, stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut reader = io::BufReader::with_capacity(
            256 << 10,
            StopReader {
                stream: &stream,
                stop,
            },
        );
        loop {
            let frame = match read_frame(&mut reader) {
                Ok(frame) => frame,
                Err(FrameError::Closed) | Err(FrameError::Io(_)) => return Ok(()),
                Err(e) => {
                    // Out of step with the peer: say why (id 0) and close.
                    let reply = Response::error(ErrorCode::Invalid, format!("bad frame: {e}"));
                    let _ = (&stream).write_all(&reply.encode(0));
                    return Ok(());
                }
            };
            let (reply, close) = match Request::decode(&frame) {
                Ok(request) => {
                    let reply = self.handle(request);
                    // A superseded link stays superseded: nothing more it sends can land.
                    let close =
                        matches!(&reply, Response::Error(e) if e.code == ErrorCode::Superseded);
                    (reply, close)
                }
                Err(e) => (
                    Response::error(ErrorCode::Invalid, format!("bad request: {e}")),
                    true,
                ),
            };
            (&stream).write_all(&reply.encode(frame.id))?;
            if close {
                return Ok(());
            }
        }
    }

    fn bound(&self) -> Result<&Arc<Volume>, StoreError> {
        self.volume.as_ref().ok_or_else(|| {
            StoreError::Invalid("no HELLO on this connection: send HELLO first".into())
        })
    }

    fn seal(&self, epoch: u64) -> Seal {
        Seal {
            epoch,
            session: self.session,
        }
    }

    fn handle(&mut self, request: Request) -> Response {
        match self.answer(request) {
            Ok(response) => response,
            Err(e) => e.to_response(),
        }
    }

    fn answer(&mut self, request: Request) -> Result<Response, StoreError> {
        Ok(match request {
            Request::Info => Response::Info(ReplicaInfo {
                site: self.info.0.clone(),
                node: self.info.1.clone(),
                free_bytes: self.store.free_bytes()?,
                volumes: self.store.names(),
            }),
            Request::CreateVolume { name, size } => {
                Response::Volume(self.store.create(&name, size)?)
            }
            Request::DeleteVolume { name } => {
                self.store.delete(&name)?;
                if self.volume.as_ref().is_some_and(|v| v.name() == name) {
                    self.volume = None;
                }
                Response::Done
            }
            Request::Hello {
                volume,
                epoch,
                session,
            } => {
                let v = self.store.volume(&volume)?;
                let state = v.hello(Seal { epoch, session })?;
                self.volume = Some(v);
                self.session = session;
                Response::Volume(state)
            }
            Request::Read { epoch, offset, len } => {
                Response::Data(self.bound()?.read(self.seal(epoch), offset, len)?)
            }
            Request::Write {
                stamp,
                offset,
                data,
                fua,
            } => {
                self.bound()?
                    .write(self.session, &stamp, offset, WriteOp::Data(&data), fua)?;
                Response::Done
            }
            Request::WriteZeroes {
                stamp,
                offset,
                len,
                fua,
            } => {
                self.bound()?
                    .write(self.session, &stamp, offset, WriteOp::Zeroes(len), fua)?;
                Response::Done
            }
            Request::Trim {
                stamp,
                offset,
                len,
                fua,
            } => {
                self.bound()?
                    .write(self.session, &stamp, offset, WriteOp::Trim(len), fua)?;
                Response::Done
            }
            Request::Flush { epoch } => {
                self.bound()?.flush(self.seal(epoch))?;
                Response::Done
            }
            Request::DirtySince { epoch, gen } => {
                Response::Dirty(self.bound()?.dirty_since(self.seal(epoch), gen)?)
            }
            Request::RegionChecksums {
                epoch,
                first,
                count,
            } => {
                let seal = self.seal(epoch);
                Response::Checksums(self.bound()?.region_checksums(seal, first, count)?)
            }
            Request::SettleAll { epoch } => {
                self.bound()?.settle_all(self.seal(epoch))?;
                Response::Done
            }
        })
    }
}
