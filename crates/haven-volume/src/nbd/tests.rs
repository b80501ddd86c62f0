//! Server and client against an in-memory device: the handshake's options byte by byte
//! (a raw socket), the commands and their refusals through [`NbdClient`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::proto::{self, OptionHeader, OptionReplyHeader, Request, SimpleReply};
use super::*;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(10);

struct Running {
    server: Arc<NbdServer>,
    addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    fn stop(mut self) -> Result<(), ServerError> {
        self.stopper.stop();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stopper.stop();
            let _ = t.join();
        }
    }
}

fn start_with(exports: ExportMap, config: ServerConfig) -> Running {
    let server = Arc::new(NbdServer::bind_with("127.0.0.1:0", Arc::new(exports), config).unwrap());
    let addr = server.local_addr();
    let stopper = server.stopper();
    let s = server.clone();
    let thread = Some(std::thread::spawn(move || s.run()));
    Running {
        server,
        addr,
        stopper,
        thread,
    }
}

/// One export "disk" of `size` bytes (also the default export).
fn start(size: usize) -> (Running, Arc<MemDevice>) {
    let dev = Arc::new(MemDevice::new(size));
    let mut m = ExportMap::new();
    m.insert("disk", dev.clone());
    (start_with(m, ServerConfig::default()), dev)
}

fn code(e: ClientError) -> u32 {
    e.nbd_error()
        .unwrap_or_else(|| panic!("not an NBD error: {e}"))
}

#[test]
fn commands_reach_the_device() {
    let (srv, dev) = start(4 * MIB);
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    assert_eq!(c.size(), 4 * MIB as u64);
    let info = c.info().clone();
    assert_eq!(info.block_sizes, Some((1, 4096, 32 << 20)));
    for f in [
        proto::FLAG_HAS_FLAGS,
        proto::FLAG_SEND_FLUSH,
        proto::FLAG_SEND_FUA,
        proto::FLAG_SEND_TRIM,
        proto::FLAG_SEND_WRITE_ZEROES,
        proto::FLAG_CAN_MULTI_CONN,
    ] {
        assert_ne!(info.flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(info.flags & proto::FLAG_READ_ONLY, 0);

    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
    c.write(4096, &data, false).unwrap();
    c.write(0, b"abc", true).unwrap();
    assert_eq!(dev.fua_writes(), 1);
    assert_eq!(c.read(4096, MIB as u32).unwrap(), data);
    assert_eq!(c.read(0, 3).unwrap(), b"abc");
    c.write_zeroes(8192, 4096, false).unwrap();
    c.trim(3 * MIB as u64, 4096, true).unwrap();
    assert_eq!(dev.fua_writes(), 2);
    c.flush().unwrap();
    assert_eq!(dev.flushes(), 1);
    let mut want = vec![0u8; 4 * MIB];
    want[0..3].copy_from_slice(b"abc");
    want[4096..4096 + MIB].copy_from_slice(&data);
    want[8192..12288].fill(0);
    assert_eq!(dev.contents(), want);
    // Empty read and write at the very end are fine (unspecified by the spec; not an error).
    assert_eq!(c.read(4 * MIB as u64, 0).unwrap(), b"");
    c.disconnect().unwrap();
    let stats = srv.server.stats();
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.request_errors, 0);
    srv.stop().unwrap();
}

#[test]
fn bad_ranges_are_refused_and_the_connection_stays_usable() {
    let (srv, dev) = start(MIB);
    let mut c = NbdClient::connect(srv.addr, "").unwrap();
    assert_eq!(
        code(c.read(MIB as u64 - 512, 1024).unwrap_err()),
        proto::EINVAL
    );
    assert_eq!(code(c.read(u64::MAX - 10, 512).unwrap_err()), proto::EINVAL);
    assert_eq!(
        code(c.trim(MIB as u64, 512, false).unwrap_err()),
        proto::EINVAL
    );
    // Writes past the end: ENOSPC, as the spec asks.
    assert_eq!(
        code(c.write(MIB as u64, &[1; 512], false).unwrap_err()),
        proto::ENOSPC
    );
    assert_eq!(
        code(c.write_zeroes(MIB as u64 - 512, 1024, false).unwrap_err()),
        proto::ENOSPC
    );
    c.write(0, &[9; 512], false).unwrap();
    assert_eq!(c.read(0, 512).unwrap(), vec![9; 512]);
    assert_eq!(dev.contents()[..512], [9; 512]);
    assert_eq!(srv.server.stats().request_errors, 5);
}

#[test]
fn oversized_requests_get_einval_and_the_payload_is_skipped() {
    let (srv, dev) = start(64 * MIB);
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    let big = 32 * MIB as u32 + 512;
    assert_eq!(code(c.read(0, big).unwrap_err()), proto::EINVAL);
    assert_eq!(
        code(c.write(0, &vec![0xee; big as usize], false).unwrap_err()),
        proto::EINVAL
    );
    assert!(
        dev.contents().iter().all(|&b| b == 0),
        "an oversized write must not land"
    );
    // The next request is found right after the skipped payload.
    c.write(0, &[1, 2, 3], false).unwrap();
    assert_eq!(c.read(0, 3).unwrap(), [1, 2, 3]);
    // 32 MiB exactly is allowed; write-zeroes and trim are not limited by it.
    c.write(0, &vec![5; 32 * MIB], false).unwrap();
    c.write_zeroes(0, 48 * MIB as u32, false).unwrap();
    assert!(dev.contents().iter().all(|&b| b == 0));
}

#[test]
fn unknown_commands_and_flags_are_refused() {
    let (srv, _dev) = start(MIB);
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    for (command, flags) in [
        (proto::CMD_CACHE, 0),
        (proto::CMD_BLOCK_STATUS, 0),
        (99, 0),
        (proto::CMD_READ, proto::CMD_FLAG_DF),
        (proto::CMD_READ, 1 << 9),
        (proto::CMD_WRITE_ZEROES, proto::CMD_FLAG_FAST_ZERO),
        (proto::CMD_TRIM, proto::CMD_FLAG_NO_HOLE),
    ] {
        let e = c.raw_request(command, flags, 0, 512).unwrap_err();
        assert_eq!(code(e), proto::EINVAL, "command {command} flags {flags:#x}");
    }
    // FUA on a read or a flush is accepted (clients are known to send it).
    c.raw_request(proto::CMD_FLUSH, proto::CMD_FLAG_FUA, 0, 0)
        .unwrap();
    c.raw_request(
        proto::CMD_WRITE_ZEROES,
        proto::CMD_FLAG_NO_HOLE | proto::CMD_FLAG_FUA,
        0,
        512,
    )
    .unwrap();
    assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
}

#[test]
fn device_failures_map_to_nbd_errors() {
    let (srv, dev) = start(MIB);
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    let cases = [
        (IoFailure::Io("replicas".into()), proto::EIO),
        (IoFailure::NoSpace("full".into()), proto::ENOSPC),
        (IoFailure::Invalid("bad".into()), proto::EINVAL),
        (IoFailure::NotPermitted("ro".into()), proto::EPERM),
    ];
    for (failure, want) in cases {
        dev.fail_with(failure.clone());
        assert_eq!(
            code(c.write(0, &[1; 512], true).unwrap_err()),
            want,
            "{failure:?}"
        );
        assert_eq!(code(c.read(0, 512).unwrap_err()), want, "{failure:?}");
        assert_eq!(code(c.flush().unwrap_err()), want, "{failure:?}");
    }
    dev.clear_failure();
    c.write(0, &[1; 512], true).unwrap();

    dev.fail_with(IoFailure::Shutdown("lease lost".into()));
    assert_eq!(
        code(c.write(0, &[2; 512], false).unwrap_err()),
        proto::ESHUTDOWN
    );
    assert!(matches!(c.read(0, 1).unwrap_err(), ClientError::Closed));
}

#[test]
fn shutdown_closes_the_connection_after_the_reply() {
    let (srv, dev) = start(MIB);
    dev.fail_with(IoFailure::Shutdown("fenced".into()));
    let mut s = raw_go(srv.addr, "disk");
    // Two pipelined requests, served at once: one gets ESHUTDOWN, then nothing more.
    let mut frames = Request {
        flags: 0,
        command: proto::CMD_READ,
        cookie: 1,
        offset: 0,
        len: 512,
    }
    .encode()
    .to_vec();
    frames.extend_from_slice(
        &Request {
            flags: 0,
            command: proto::CMD_FLUSH,
            cookie: 2,
            offset: 0,
            len: 0,
        }
        .encode(),
    );
    s.write_all(&frames).unwrap();
    let mut reply = [0u8; SimpleReply::SIZE];
    s.read_exact(&mut reply).unwrap();
    let reply = SimpleReply::decode(&reply).unwrap();
    assert_eq!(reply.error, proto::ESHUTDOWN);
    assert!(reply.cookie == 1 || reply.cookie == 2, "{reply:?}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after ESHUTDOWN, got {} bytes",
        rest.len()
    );
    // The server itself goes on.
    dev.clear_failure();
    NbdClient::connect(srv.addr, "disk")
        .unwrap()
        .flush()
        .unwrap();
}

#[test]
fn exports_are_found_listed_and_refused_by_name() {
    let a = Arc::new(MemDevice::new(MIB));
    let b = Arc::new(MemDevice::new(2 * MIB));
    let mut m = ExportMap::new();
    m.insert("alpha", a)
        .insert("beta", b)
        .set_default(Some("beta"));
    let srv = start_with(m, ServerConfig::default());
    assert_eq!(list_exports(srv.addr, T).unwrap(), ["alpha", "beta"]);
    assert_eq!(
        NbdClient::connect(srv.addr, "alpha").unwrap().size(),
        MIB as u64
    );
    assert_eq!(
        NbdClient::connect(srv.addr, "").unwrap().size(),
        2 * MIB as u64
    );
    let e = NbdClient::connect(srv.addr, "gamma").unwrap_err();
    assert_eq!(e.option_reply(), Some(proto::REP_ERR_UNKNOWN), "{e}");
    assert!(e.to_string().contains("gamma"), "{e}");

    let mut none = ExportMap::new();
    none.insert("only", Arc::new(MemDevice::new(512)))
        .set_default(None);
    let srv2 = start_with(none, ServerConfig::default());
    let e = NbdClient::connect(srv2.addr, "").unwrap_err();
    assert_eq!(e.option_reply(), Some(proto::REP_ERR_UNKNOWN), "{e}");
}

#[test]
fn min_block_512_is_advertised_and_enforced() {
    let mut m = ExportMap::new();
    m.insert("d", Arc::new(MemDevice::new(MIB)));
    let srv = start_with(
        m,
        ServerConfig {
            min_block: 512,
            ..ServerConfig::default()
        },
    );
    let mut c = NbdClient::connect(srv.addr, "d").unwrap();
    assert_eq!(c.info().block_sizes, Some((512, 4096, 32 << 20)));
    assert_eq!(code(c.read(1, 512).unwrap_err()), proto::EINVAL);
    assert_eq!(
        code(c.write(512, &[1; 100], false).unwrap_err()),
        proto::EINVAL
    );
    c.write(512, &[1; 512], false).unwrap();
    assert!(NbdServer::bind_with(
        "127.0.0.1:0",
        Arc::new(ExportMap::new()),
        ServerConfig {
            min_block: 3,
            ..ServerConfig::default()
        }
    )
    .is_err());
}

// ---- the handshake byte by byte ----

/// Connects, checks the greeting and sends `client_flags`.
fn raw_open(addr: SocketAddr, client_flags: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[0..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(
        u16::from_be_bytes([g[16], g[17]]),
        proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES
    );
    s.write_all(&client_flags.to_be_bytes()).unwrap();
    s
}

fn send_opt(s: &mut TcpStream, option: u32, data: &[u8]) {
    let mut f = OptionHeader {
        option,
        len: data.len() as u32,
    }
    .encode()
    .to_vec();
    f.extend_from_slice(data);
    s.write_all(&f).unwrap();
}

fn read_reply(s: &mut TcpStream, option: u32) -> (u32, Vec<u8>) {
    let mut h = [0u8; OptionReplyHeader::SIZE];
    s.read_exact(&mut h).unwrap();
    let h = OptionReplyHeader::decode(&h).expect("reply magic");
    assert_eq!(h.option, option);
    let mut d = vec![0u8; h.len as usize];
    s.read_exact(&mut d).unwrap();
    (h.reply, d)
}

fn raw_go(addr: SocketAddr, name: &str) -> TcpStream {
    let mut s = raw_open(addr, proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES);
    let req = proto::InfoRequest {
        name: name.into(),
        requests: vec![],
    };
    send_opt(&mut s, proto::OPT_GO, &req.encode());
    loop {
        match read_reply(&mut s, proto::OPT_GO).0 {
            proto::REP_INFO => {}
            proto::REP_ACK => return s,
            r => panic!("GO answered {}", proto::reply_name(r)),
        }
    }
}

fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "expected a closed connection, got {rest:?}"
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn options_get_the_replies_the_spec_names() {
    let (srv, _dev) = start(MIB);
    let mut s = raw_open(srv.addr, proto::FLAG_C_FIXED_NEWSTYLE);
    for (option, data, want) in [
        (proto::OPT_STRUCTURED_REPLY, &b""[..], proto::REP_ERR_UNSUP),
        (proto::OPT_STARTTLS, b"", proto::REP_ERR_POLICY),
        (proto::OPT_LIST_META_CONTEXT, b"", proto::REP_ERR_UNSUP),
        (12345, b"xyz", proto::REP_ERR_UNSUP),
        (proto::OPT_LIST, b"junk", proto::REP_ERR_INVALID),
        (proto::OPT_INFO, b"\0\0\0\x09ab", proto::REP_ERR_INVALID),
    ] {
        send_opt(&mut s, option, data);
        let (reply, _) = read_reply(&mut s, option);
        assert_eq!(
            reply,
            want,
            "{}: {}",
            proto::option_name(option),
            proto::reply_name(reply)
        );
    }
    // Over the option size limit: skipped and refused, negotiation goes on.
    send_opt(
        &mut s,
        proto::OPT_INFO,
        &vec![0u8; proto::MAX_OPTION_LEN as usize + 1],
    );
    assert_eq!(
        read_reply(&mut s, proto::OPT_INFO).0,
        proto::REP_ERR_TOO_BIG
    );
    // INFO answers like GO but stays in negotiation.
    let req = proto::InfoRequest {
        name: "disk".into(),
        requests: vec![proto::INFO_NAME],
    };
    send_opt(&mut s, proto::OPT_INFO, &req.encode());
    let mut infos = Vec::new();
    loop {
        let (reply, data) = read_reply(&mut s, proto::OPT_INFO);
        if reply == proto::REP_ACK {
            break;
        }
        assert_eq!(reply, proto::REP_INFO);
        infos.push(data);
    }
    assert!(infos.contains(&proto::info_export(MIB as u64, server::TRANSMISSION_FLAGS).to_vec()));
    assert!(infos.contains(&proto::info_block_size(1, 4096, 32 << 20).to_vec()));
    assert!(infos.contains(&proto::info_name("disk")));
    send_opt(&mut s, proto::OPT_LIST, b"");
    assert_eq!(
        read_reply(&mut s, proto::OPT_LIST),
        (proto::REP_SERVER, proto::rep_server("disk"))
    );
    assert_eq!(read_reply(&mut s, proto::OPT_LIST).0, proto::REP_ACK);
    send_opt(&mut s, proto::OPT_ABORT, b"");
    assert_eq!(read_reply(&mut s, proto::OPT_ABORT).0, proto::REP_ACK);
    assert_closed(&mut s);
}

#[test]
fn export_name_ends_negotiation_with_or_without_zeroes() {
    let (srv, _dev) = start(MIB);
    for no_zeroes in [false, true] {
        let flags = proto::FLAG_C_FIXED_NEWSTYLE
            | if no_zeroes {
                proto::FLAG_C_NO_ZEROES
            } else {
                0
            };
        let mut s = raw_open(srv.addr, flags);
        send_opt(&mut s, proto::OPT_EXPORT_NAME, b"disk");
        let mut head = [0u8; 10];
        s.read_exact(&mut head).unwrap();
        assert_eq!(
            u64::from_be_bytes(head[0..8].try_into().unwrap()),
            MIB as u64
        );
        assert_eq!(
            u16::from_be_bytes([head[8], head[9]]),
            server::TRANSMISSION_FLAGS
        );
        if !no_zeroes {
            let mut z = [1u8; 124];
            s.read_exact(&mut z).unwrap();
            assert_eq!(z, [0; 124]);
        }
        // The next bytes are a reply to our first request, not padding.
        s.write_all(
            &Request {
                flags: 0,
                command: proto::CMD_FLUSH,
                cookie: 77,
                offset: 0,
                len: 0,
            }
            .encode(),
        )
        .unwrap();
        let mut r = [0u8; SimpleReply::SIZE];
        s.read_exact(&mut r).unwrap();
        assert_eq!(
            SimpleReply::decode(&r),
            Some(SimpleReply {
                error: 0,
                cookie: 77
            })
        );
        s.write_all(
            &Request {
                flags: 0,
                command: proto::CMD_DISC,
                cookie: 78,
                offset: 0,
                len: 0,
            }
            .encode(),
        )
        .unwrap();
        assert_closed(&mut s);
    }
    // An unknown name after EXPORT_NAME cannot be answered: the connection is dropped.
    let mut s = raw_open(srv.addr, proto::FLAG_C_FIXED_NEWSTYLE);
    send_opt(&mut s, proto::OPT_EXPORT_NAME, b"nope");
    assert_closed(&mut s);
}

#[test]
fn protocol_violations_drop_only_that_connection() {
    let (srv, _dev) = start(MIB);
    // Unknown client flags.
    let mut s = raw_open(srv.addr, 1 << 5);
    assert_closed(&mut s);
    // A bad option magic.
    let mut s = raw_open(srv.addr, proto::FLAG_C_FIXED_NEWSTYLE);
    s.write_all(&[0u8; 16]).unwrap();
    assert_closed(&mut s);
    // A bad request magic in transmission.
    let mut s = raw_go(srv.addr, "disk");
    s.write_all(&[0xffu8; Request::SIZE]).unwrap();
    assert_closed(&mut s);
    // A client that vanishes halfway through a write's payload.
    let mut s = raw_go(srv.addr, "disk");
    s.write_all(
        &Request {
            flags: 0,
            command: proto::CMD_WRITE,
            cookie: 1,
            offset: 0,
            len: 4096,
        }
        .encode(),
    )
    .unwrap();
    s.write_all(&[7u8; 100]).unwrap();
    drop(s);
    // ... and one that vanishes before its read reply is sent.
    let mut s = raw_go(srv.addr, "disk");
    s.write_all(
        &Request {
            flags: 0,
            command: proto::CMD_READ,
            cookie: 1,
            offset: 0,
            len: 1 << 20,
        }
        .encode(),
    )
    .unwrap();
    drop(s);
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    assert_eq!(
        c.read(0, 4096).unwrap(),
        vec![0; 4096],
        "the partial write must not land"
    );
    assert!(srv.server.stats().protocol_errors >= 3);
}

#[test]
fn stop_ends_run_with_connections_open() {
    let (srv, _dev) = start(MIB);
    let mut idle = NbdClient::connect(srv.addr, "disk").unwrap();
    let mut negotiating = raw_open(srv.addr, proto::FLAG_C_FIXED_NEWSTYLE);
    let stopper = srv.stopper.clone();
    srv.stop().unwrap();
    assert!(stopper.is_stopped());
    assert!(idle.flush().is_err(), "a stopped server serves nothing");
    assert_closed(&mut negotiating);
}

#[test]
fn stop_before_run_returns_at_once() {
    let server = NbdServer::bind("127.0.0.1:0", Arc::new(ExportMap::new())).unwrap();
    server.stopper().stop();
    server.run().unwrap();
}

/// A device whose writes wait at a gate: tells when one arrived, proceeds when released.
struct GateDevice {
    inner: MemDevice,
    arrived: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl BlockDevice for GateDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure> {
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoFailure> {
        self.arrived.send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        self.inner.write(offset, data, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.inner.write_zeroes(offset, len, fua)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.inner.trim(offset, len, fua)
    }
    fn flush(&self) -> Result<(), IoFailure> {
        self.inner.flush()
    }
}

#[test]
fn stop_lets_the_request_in_progress_finish_with_its_reply() {
    let (arrived_tx, arrived_rx) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let dev = Arc::new(GateDevice {
        inner: MemDevice::new(MIB),
        arrived: arrived_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    let mut m = ExportMap::new();
    m.insert("d", dev.clone());
    let srv = start_with(m, ServerConfig::default());
    let mut c = NbdClient::connect(srv.addr, "d").unwrap();
    let writer = std::thread::spawn(move || {
        let first = c.write(0, b"in flight", false);
        (first, c.flush())
    });
    arrived_rx.recv().unwrap();
    srv.stopper.stop();
    release_tx.send(()).unwrap();
    let (first, second) = writer.join().unwrap();
    first.expect("the write under way when the stop came is answered");
    let e = second.unwrap_err();
    assert!(
        e.nbd_error() == Some(proto::ESHUTDOWN) || matches!(e, ClientError::Io { .. }),
        "{e}"
    );
    srv.stop().unwrap();
    assert_eq!(&dev.inner.contents()[..9], b"in flight");
}

#[test]
fn connections_write_concurrently_and_a_flush_covers_all() {
    let (srv, dev) = start(8 * MIB);
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let addr = srv.addr;
            std::thread::spawn(move || {
                let mut c = NbdClient::connect(addr, "disk").unwrap();
                for block in 0..16u64 {
                    c.write((u64::from(i) * 16 + block) * 65536, &[i + 1; 65536], false)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    NbdClient::connect(srv.addr, "disk")
        .unwrap()
        .flush()
        .unwrap();
    assert_eq!(dev.flushes(), 1);
    let data = dev.contents();
    for (i, chunk) in data.chunks(16 * 65536).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8 + 1),
            "connection {i}'s blocks"
        );
    }
    assert_eq!(srv.server.stats().sessions, 9);
}

#[test]
fn garbage_never_takes_the_server_down() {
    let (srv, dev) = start(MIB);
    // A fixed-seed generator: replayable, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..64 {
        let mut s = if round % 2 == 0 {
            raw_open(srv.addr, proto::FLAG_C_FIXED_NEWSTYLE)
        } else {
            raw_go(srv.addr, "disk")
        };
        let len = (next() % 300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 4 == 1 {
            // A valid magic in front of random fields reaches the command checks.
            junk.splice(0..0, proto::REQUEST_MAGIC.to_be_bytes());
        }
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let mut c = NbdClient::connect(srv.addr, "disk").unwrap();
    c.write(0, b"alive", true).unwrap();
    assert_eq!(&dev.contents()[..5], b"alive");
}

#[test]
fn requests_of_one_connection_are_served_at_once() {
    let (arrived_tx, arrived_rx) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let dev = Arc::new(GateDevice {
        inner: MemDevice::new(MIB),
        arrived: arrived_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    let mut m = ExportMap::new();
    m.insert("d", dev.clone());
    let srv = start_with(m, ServerConfig::default());
    let mut s = raw_go(srv.addr, "d");
    let mut frames = Request {
        flags: 0,
        command: proto::CMD_WRITE,
        cookie: 1,
        offset: 0,
        len: 4,
    }
    .encode()
    .to_vec();
    frames.extend_from_slice(b"slow");
    frames.extend_from_slice(
        &Request {
            flags: 0,
            command: proto::CMD_READ,
            cookie: 2,
            offset: 512,
            len: 4,
        }
        .encode(),
    );
    s.write_all(&frames).unwrap();
    arrived_rx.recv().unwrap();
    // The write waits at the gate; the read behind it is answered meanwhile.
    let mut reply = [0u8; SimpleReply::SIZE + 4];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        SimpleReply::decode(reply[..16].try_into().unwrap()),
        Some(SimpleReply {
            error: 0,
            cookie: 2
        })
    );
    release_tx.send(()).unwrap();
    let mut reply = [0u8; SimpleReply::SIZE];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        SimpleReply::decode(&reply),
        Some(SimpleReply {
            error: 0,
            cookie: 1
        })
    );
    assert_eq!(&dev.inner.contents()[..4], b"slow");
}

#[test]
fn one_request_at_a_time_when_asked() {
    let dev = Arc::new(MemDevice::new(MIB));
    let mut m = ExportMap::new();
    m.insert("d", dev.clone());
    let srv = start_with(
        m,
        ServerConfig {
            max_in_flight: 1,
            ..ServerConfig::default()
        },
    );
    let mut s = raw_go(srv.addr, "d");
    // Pipelined: answered in request order.
    let mut frames = Vec::new();
    for cookie in 1..=20u64 {
        frames.extend_from_slice(
            &Request {
                flags: 0,
                command: proto::CMD_WRITE,
                cookie,
                offset: cookie * 512,
                len: 1,
            }
            .encode(),
        );
        frames.push(cookie as u8);
    }
    s.write_all(&frames).unwrap();
    for cookie in 1..=20u64 {
        let mut reply = [0u8; SimpleReply::SIZE];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(
            SimpleReply::decode(&reply),
            Some(SimpleReply { error: 0, cookie })
        );
    }
    assert_eq!(dev.contents()[20 * 512], 20);
    assert!(NbdServer::bind_with(
        "127.0.0.1:0",
        Arc::new(ExportMap::new()),
        ServerConfig {
            max_in_flight: 0,
            ..ServerConfig::default()
        }
    )
    .is_err());
}
