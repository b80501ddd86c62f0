//! The WAL receivers of `wal = "stream"` components: one thread per component for the
//! daemon's life, each running [`wal_receiver::receive`] and turning its events into log
//! lines and the `wal:TENANT:COMPONENT` alert (`wal-stream`).
//!
//! ```text
//! Daemon::start ──start──> one thread per (tenant, component) with wal = "stream"
//!     receive(...) events ──> stderr log (not each stored partial)
//!                        ──> raise wal:T:C on: timeline switch, slot lag, slot dropped,
//!                            synchronous not honoured, store failed, 3 failed starts
//!                        ──> resolve it when WAL is stored again
//!     receive(...) error (a config it cannot run with) ──> alert, retried every minute
//! Daemon::stop ──> stop flag; each receiver stores what it received, then ends
//! ```
//! Limits: receivers follow the config the daemon started with; a reload does not add,
//! remove or change them (restart the daemon for that).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use haven_sources::postgres::{PostgresMode, WalMode};

use super::{watch, Shared};
use crate::alerts::AlertKind;
use crate::config::ComponentConfig;
use crate::wal_receiver::{default_spool, pause, receive, ReceiverEvent, ReceiverOptions};

/// Consecutive failed starts of `pg_receivewal` before the alert fires.
const FAILED_STARTS: u32 = 3;

pub(super) struct Receivers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Start a receiver for every streaming component of the config.
pub(super) fn start(shared: &Arc<Shared>) -> Receivers {
    let stop = Arc::new(AtomicBool::new(false));
    let config = shared.config();
    let mut threads = vec![];
    for (tenant, t) in &config.tenants {
        for (component, c) in &t.components {
            let ComponentConfig::Postgres(pg) = c else {
                continue;
            };
            if pg.mode != PostgresMode::Physical || pg.wal != WalMode::Stream {
                continue;
            }
            let (shared, stop) = (Arc::clone(shared), Arc::clone(&stop));
            let (tenant, component) = (tenant.clone(), component.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("wal {tenant}/{component}"))
                .spawn(move || run(&shared, &tenant, &component, &stop));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => eprintln!("haven: cannot start a WAL receiver thread: {e}"),
            }
        }
    }
    Receivers { stop, threads }
}

impl Receivers {
    /// Stop every receiver; each stores what it received first.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, tenant: &str, component: &str, stop: &AtomicBool) {
    let config = shared.config();
    let mut options = ReceiverOptions::new(default_spool(&config, tenant, component));
    options.lock_wait = shared.lock_wait;
    let mut failed_starts = 0u32;
    let mut firing = false;
    while !stop.load(Ordering::SeqCst) {
        let result = receive(&config, tenant, component, &options, stop, &mut |e| {
            let now = shared.clock.now();
            let problem = match e {
                ReceiverEvent::Stored { .. } => {
                    failed_starts = 0;
                    if firing {
                        firing = false;
                        watch::clear(shared, AlertKind::WalStream, tenant, Some(component), now);
                    }
                    return;
                }
                ReceiverEvent::Lag { .. } => return,
                ReceiverEvent::Receiving { .. } | ReceiverEvent::CaughtUp => false,
                ReceiverEvent::ReceiverEnded { .. } => {
                    failed_starts += 1;
                    failed_starts >= FAILED_STARTS
                }
                _ => true,
            };
            eprintln!("haven: wal receive {tenant}/{component}: {e}");
            if problem {
                firing = true;
                watch::raise(
                    shared,
                    AlertKind::WalStream,
                    tenant,
                    Some(component),
                    format!("tenant {tenant}: WAL stream of {component}: {e}"),
                    "WAL is received over the replication slot into the repository \
                     (docs/PITR.md, \"Streaming\"); until this clears, the newest restorable \
                     moment may lag the server."
                        .into(),
                    now,
                );
            }
        });
        if let Err(e) = result {
            let now = shared.clock.now();
            eprintln!("haven: wal receive {tenant}/{component}: {e}");
            firing = true;
            watch::raise(
                shared,
                AlertKind::WalStream,
                tenant,
                Some(component),
                format!("tenant {tenant}: the WAL receiver of {component} cannot run: {e}"),
                "Fix what the message names; the daemon tries again every minute.".into(),
                now,
            );
            pause(Duration::from_secs(60), stop);
        }
    }
}
