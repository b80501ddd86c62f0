//! Replicated block volumes (issue 12; `docs/VOLUMES.md` is the spec).
//!
//! ```text
//! NBD client (qemu-io, nbdcopy, fio)
//!    │  nbd::server (fixed newstyle, one thread per connection)
//!    ▼
//! controller::Volume: BlockDevice ── every write to every in-sync replica, in parallel
//!    │  wire frames (versioned, checksummed), epoch on every request
//!    ▼
//! replica::server ── replica::store (data file, epoch, dirty maps, unsettled regions)
//!
//! coord (etcd): volume specs, replica registry, the controller lease (epoch =
//! the lease key's create revision), the in-sync record (changed only by a
//! transaction guarded on that epoch), placement.
//! ```
//! Main types: [`nbd::BlockDevice`], [`wire::Request`]/[`wire::Response`],
//! [`replica::ReplicaClient`], [`coord::Coord`], [`controller::Controller`].

pub mod controller;
pub mod coord;
pub mod nbd;
pub mod region;
pub mod replica;
pub mod wire;
