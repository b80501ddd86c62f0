//! The controller's side of the replica protocol: one TCP connection, one request at a
//! time. A transport or frame failure poisons the connection: that call and every later
//! one answer [`ReplicaError::Unreachable`], so the controller treats the replica as failed
//! (and connects anew when it wants it back).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{ReplicaError, ReplicaInfo, Result, VolumeState};
use crate::region::RegionMap;
use crate::wire::{
    read_frame, write_write, ErrorCode, Request, Response, WireError, WriteStamp,
    MAX_CHECKSUM_REGIONS,
};

/// One connection to one replica. Not shared between threads.
#[derive(Debug)]
pub struct ReplicaClient {
    replica: String,
    stream: Option<(TcpStream, BufReader<TcpStream>)>,
    next_id: u64,
}

impl ReplicaClient {
    /// Connects within `timeout`; every later read and write waits at most `timeout` too.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<ReplicaClient> {
        let replica = addr.to_string();
        let unreachable = |e: std::io::Error| ReplicaError::Unreachable {
            replica: replica.clone(),
            detail: e.to_string(),
        };
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(unreachable)?;
        let reader = BufReader::with_capacity(256 << 10, stream.try_clone().map_err(unreachable)?);
        Ok(ReplicaClient {
            replica,
            stream: Some((stream, reader)),
            next_id: 1,
        })
    }

    /// The replica's address, as errors name it.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn unreachable(&mut self, detail: String) -> ReplicaError {
        self.stream = None;
        ReplicaError::Unreachable {
            replica: self.replica.clone(),
            detail,
        }
    }

    /// Sends `request` and reads its response; an ERROR response becomes the matching
    /// [`ReplicaError`].
    fn call(&mut self, request: &Request) -> Result<Response> {
        self.call_with(|id, w| w.write_all(&request.encode(id)), request)
    }

    /// Like `call`, with the frame sent by `send` (`about` names the request in errors).
    fn call_with(
        &mut self,
        send: impl FnOnce(u64, &mut TcpStream) -> std::io::Result<()>,
        about: &Request,
    ) -> Result<Response> {
        let request = about;
        let id = self.next_id;
        self.next_id += 1;
        let Some((stream, reader)) = self.stream.as_mut() else {
            return Err(self.unreachable("connection closed after an earlier failure".into()));
        };
        let sent = send(id, stream);
        let frame = match sent.map_err(Into::into).and_then(|()| read_frame(reader)) {
            Ok(frame) => frame,
            Err(e) => return Err(self.unreachable(e.to_string())),
        };
        let response = match Response::decode(&frame) {
            Ok(response) => response,
            Err(e) => return Err(self.unreachable(format!("bad response: {e}"))),
        };
        if frame.id != id {
            // The server answers a bad frame with id 0 before it closes.
            let detail = match response {
                Response::Error(e) => e.message,
                _ => format!("response to request {} while waiting for {id}", frame.id),
            };
            return Err(self.unreachable(detail));
        }
        match response {
            Response::Error(e) => Err(self.error(e, request.epoch().unwrap_or(0), request)),
            response => Ok(response),
        }
    }

    fn error(&mut self, e: WireError, sent: u64, request: &Request) -> ReplicaError {
        let replica = self.replica.clone();
        let volume = match request {
            Request::CreateVolume { name, .. }
            | Request::DeleteVolume { name }
            | Request::Hello { volume: name, .. } => name.clone(),
            _ => String::new(),
        };
        match e.code {
            ErrorCode::Fenced => ReplicaError::Fenced {
                replica,
                seen: e.seen,
                sent,
            },
            ErrorCode::NoSpace => ReplicaError::NoSpace {
                replica,
                detail: e.message,
            },
            ErrorCode::NoVolume => ReplicaError::NoVolume { replica, volume },
            ErrorCode::Exists => ReplicaError::Exists { replica, volume },
            // The replica closed this link: to the controller it is a link that broke.
            ErrorCode::Superseded => ReplicaError::Unreachable {
                replica,
                detail: e.message,
            },
            ErrorCode::Invalid | ErrorCode::Io => ReplicaError::Failed {
                replica,
                detail: e.message,
            },
        }
    }

    fn unexpected(&mut self, response: Response) -> ReplicaError {
        self.unreachable(format!("unexpected response kind {:#04x}", response.kind()))
    }

    fn done(&mut self, request: &Request) -> Result<()> {
        match self.call(request)? {
            Response::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    fn volume_state(&mut self, request: &Request) -> Result<VolumeState> {
        match self.call(request)? {
            Response::Volume(state) => Ok(state),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn info(&mut self) -> Result<ReplicaInfo> {
        match self.call(&Request::Info)? {
            Response::Info(info) => Ok(info),
            other => Err(self.unexpected(other)),
        }
    }

    /// Allocates the volume's data file (refused when larger than the free space).
    pub fn create_volume(&mut self, volume: &str, size: u64) -> Result<VolumeState> {
        self.volume_state(&Request::CreateVolume {
            name: volume.to_string(),
            size,
        })
    }

    pub fn delete_volume(&mut self, volume: &str) -> Result<()> {
        self.done(&Request::DeleteVolume {
            name: volume.to_string(),
        })
    }

    /// Seals the replica's copy with `epoch` (persisted before answering) and `session`,
    /// and binds this connection to `volume`: the data calls below act on it. Links of
    /// this epoch sealed with a lower session are refused from then on (Unreachable).
    pub fn hello(&mut self, volume: &str, epoch: u64, session: u64) -> Result<VolumeState> {
        self.volume_state(&Request::Hello {
            volume: volume.to_string(),
            epoch,
            session,
        })
    }

    pub fn read(&mut self, epoch: u64, offset: u64, len: u32) -> Result<Vec<u8>> {
        match self.call(&Request::Read { epoch, offset, len })? {
            Response::Data(data) if data.len() == len as usize => Ok(data),
            Response::Data(data) => {
                Err(self.unreachable(format!("read of {len} bytes answered with {}", data.len())))
            }
            other => Err(self.unexpected(other)),
        }
    }

    /// `gen` marks the dirty map; `seq`/`settled` track unsettled regions. At most
    /// [`crate::wire::MAX_DATA`] bytes.
    pub fn write(&mut self, stamp: &WriteStamp, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        // Errors name the request by its epoch only: no copy of the data for that.
        let about = Request::Flush { epoch: stamp.epoch };
        match self.call_with(|id, w| write_write(w, id, stamp, offset, data, fua), &about)? {
            Response::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn write_zeroes(
        &mut self,
        stamp: &WriteStamp,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> Result<()> {
        let stamp = *stamp;
        self.done(&Request::WriteZeroes {
            stamp,
            offset,
            len,
            fua,
        })
    }

    /// Like [`Self::write_zeroes`] (a trimmed range reads back as zeroes on every replica,
    /// so replicas stay identical).
    pub fn trim(&mut self, stamp: &WriteStamp, offset: u64, len: u64, fua: bool) -> Result<()> {
        let stamp = *stamp;
        self.done(&Request::Trim {
            stamp,
            offset,
            len,
            fua,
        })
    }

    pub fn flush(&mut self, epoch: u64) -> Result<()> {
        self.done(&Request::Flush { epoch })
    }

    /// Regions written in generations `>= gen`; None when this replica no longer holds the
    /// maps back to `gen` (full rebuild).
    pub fn dirty_since(&mut self, epoch: u64, gen: u64) -> Result<Option<RegionMap>> {
        match self.call(&Request::DirtySince { epoch, gen })? {
            Response::Dirty(map) => Ok(map),
            other => Err(self.unexpected(other)),
        }
    }

    /// BLAKE3 of each region in `first .. first + count` (asked in batches of at most
    /// [`MAX_CHECKSUM_REGIONS`]).
    pub fn region_checksums(
        &mut self,
        epoch: u64,
        first: u64,
        count: u32,
    ) -> Result<Vec<[u8; 32]>> {
        let mut sums = Vec::with_capacity(count as usize);
        let mut at = 0u32;
        while at < count {
            let n = (count - at).min(MAX_CHECKSUM_REGIONS);
            let request = Request::RegionChecksums {
                epoch,
                first: first + u64::from(at),
                count: n,
            };
            match self.call(&request)? {
                Response::Checksums(batch) if batch.len() == n as usize => sums.extend(batch),
                other => return Err(self.unexpected(other)),
            }
            at += n;
        }
        Ok(sums)
    }

    /// Marks every unsettled region settled (after a reconcile).
    pub fn settle_all(&mut self, epoch: u64) -> Result<()> {
        self.done(&Request::SettleAll { epoch })
    }
}
