//! `haven replica serve`: a replica server (`haven_volume::replica::ReplicaServer`)
//! registered in etcd: its record, and a liveness key bound to a lease refreshed every
//! third of its TTL (with the free space, which placement reads). SIGINT/SIGTERM stop it
//! and take it out of the live set at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use haven_volume::coord::ReplicaRecord;
use haven_volume::replica::{store, ReplicaServer};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{ReplicaCommand, ReplicaServeArgs};

/// The liveness lease: a dead server leaves the live set within this long.
const LIVENESS_TTL: Duration = Duration::from_secs(5);
/// How often the advertised free space is refreshed.
const FREE_EVERY: Duration = Duration::from_secs(30);

pub fn run(command: ReplicaCommand) -> Result<i32> {
    match command {
        ReplicaCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ReplicaServeArgs) -> Result<i32> {
    let advertise = match &a.advertise {
        Some(addr) => addr.clone(),
        None if a.listen.ip().is_unspecified() => anyhow::bail!(
            "--listen {} is every address: pass --advertise HOST:PORT, the address controllers connect to",
            a.listen
        ),
        None => a.listen.to_string(),
    };
    std::fs::create_dir_all(&a.data)
        .with_context(|| format!("creating the data folder {}", a.data.display()))?;
    let mut server = ReplicaServer::new(&a.data, &a.site, &a.node)?;
    server
        .bind(a.listen)
        .with_context(|| format!("listening on {}", a.listen))?;
    let coord = super::volume::connect(&a.etcd)?;
    let free = store::free_bytes(&a.data)
        .with_context(|| format!("reading the free space of {}", a.data.display()))?;
    let record = ReplicaRecord {
        id: format!("{}/{}", a.site, a.node),
        site: a.site.clone(),
        node: a.node.clone(),
        addr: advertise.clone(),
        free_bytes: free,
        alive: false,
    };
    let mut registration = coord.register_replica(&record, LIVENESS_TTL)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    eprintln!(
        "haven: replica {} serving {} on {} (advertised as {advertise}), {} free",
        record.id,
        a.data.display(),
        server.local_addr()?,
        haven_volume::coord::format_bytes(free)
    );
    let served = std::thread::scope(|s| {
        let keeper = s.spawn(|| {
            let period = LIVENESS_TTL / 3;
            let mut free_at = Instant::now() + FREE_EVERY;
            let mut failing = false;
            while !stop.load(Ordering::SeqCst) {
                let next = Instant::now() + period;
                let refreshed = if Instant::now() >= free_at {
                    free_at = Instant::now() + FREE_EVERY;
                    match store::free_bytes(&a.data) {
                        Ok(free) => coord.update_replica_free(&mut registration, free),
                        Err(_) => coord.keep_replica_alive(&mut registration),
                    }
                } else {
                    coord.keep_replica_alive(&mut registration)
                };
                match refreshed {
                    Err(e) if !failing => {
                        eprintln!("haven: replica {}: liveness not refreshed: {e}", record.id);
                        failing = true;
                    }
                    Ok(()) if failing => {
                        eprintln!("haven: replica {}: liveness refreshed again", record.id);
                        failing = false;
                    }
                    _ => {}
                }
                while !stop.load(Ordering::SeqCst) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = coord.deregister_replica(&registration);
        });
        let served = server.run(&stop);
        stop.store(true, Ordering::SeqCst);
        let _ = keeper.join();
        served
    });
    served?;
    Ok(0)
}
