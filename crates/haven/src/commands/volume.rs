//! `haven volume create | serve | status | list | delete`: replicated block volumes
//! (docs/VOLUMES.md). The work is in `haven_volume::controller`; this parses and prints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use haven_volume::controller::admin::{self, NewVolume, VolumeReport};
use haven_volume::controller::{Controller, ControllerConfig};
use haven_volume::coord::{format_bytes, Coord};
use haven_volume::nbd::NbdServer;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{EtcdArg, Global, VolumeCommand, VolumeCreateArgs, VolumeServeArgs};

/// Connect and call timeout of the replica calls the administrative verbs make.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(g: &Global, command: VolumeCommand) -> Result<i32> {
    match command {
        VolumeCommand::Create(a) => create(g, a),
        VolumeCommand::Serve(a) => serve(a),
        VolumeCommand::Status { name, etcd } => status(g, name.as_deref(), &etcd),
        VolumeCommand::List { etcd } => list(g, &etcd),
        VolumeCommand::Delete { name, etcd } => delete(g, &name, &etcd),
    }
}

pub fn connect(etcd: &EtcdArg) -> Result<Coord> {
    Ok(Coord::connect(&etcd.etcd)?)
}

fn create(g: &Global, a: VolumeCreateArgs) -> Result<i32> {
    let coord = connect(&a.etcd)?;
    let new = NewVolume {
        name: a.name,
        size: a.size,
        replicas: a.replicas,
        min_in_sync: a.min_in_sync,
        distinct_sites: a.distinct_sites,
    };
    let spec = admin::create_volume(&coord, &new, REPLICA_TIMEOUT)?;
    super::report(
        g,
        format!(
            "created volume {} ({}, {} replica(s) on {}, min in sync {}); serve it with `haven volume serve {} --listen ADDR`",
            spec.name,
            format_bytes(spec.size),
            spec.replicas,
            spec.placement.join(", "),
            spec.min_in_sync,
            spec.name
        ),
        serde_json::to_value(&spec)?,
    );
    Ok(0)
}

fn default_candidate(listen: &std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}/{listen}")
}

fn serve(a: VolumeServeArgs) -> Result<i32> {
    anyhow::ensure!(
        a.lease >= Duration::from_secs(1),
        "--lease must be at least 1s"
    );
    let coord = connect(&a.etcd)?;
    let candidate = a.candidate.unwrap_or_else(|| default_candidate(&a.listen));
    let mut config = ControllerConfig::new(&a.name, &candidate);
    config.lease_ttl = a.lease;
    let controller = Controller::start(coord, config)?;
    let server = NbdServer::bind(a.listen, Arc::new(controller.exports()))
        .with_context(|| format!("serving NBD on {}", a.listen))?;
    let stopper = server.stopper();
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let signalled = Arc::clone(&signalled);
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                signalled.store(true, Ordering::SeqCst);
                stopper.stop();
            }
        });
    }
    eprintln!(
        "haven: volume {}: candidate {candidate}, NBD on {} (export {:?}); standing by until it holds the lease",
        a.name,
        server.local_addr(),
        a.name
    );
    let served = server.run();
    // Resign at once, so that another candidate takes over without waiting for the TTL.
    controller.stop();
    served?;
    Ok(0)
}

fn status(g: &Global, name: Option<&str>, etcd: &EtcdArg) -> Result<i32> {
    let coord = connect(etcd)?;
    let reports = match name {
        Some(name) => vec![admin::volume_report(&coord, name)?],
        None => admin::volume_reports(&coord)?,
    };
    if g.json {
        match name {
            Some(_) => crate::output::json(&reports[0]),
            None => crate::output::json(&reports),
        }
        return Ok(0);
    }
    if reports.is_empty() {
        super::say(g, "no volumes; create one with `haven volume create`");
    }
    for r in &reports {
        print_report(r);
    }
    Ok(0)
}

fn print_report(r: &VolumeReport) {
    println!(
        "volume {}: {}, {} replica(s), min in sync {}{}",
        r.name,
        format_bytes(r.size),
        r.replicas,
        r.min_in_sync,
        if r.distinct_sites {
            ", distinct sites"
        } else {
            ""
        }
    );
    match &r.controller {
        Some(c) => println!("  controller: {} (epoch {})", c.name, c.epoch),
        None => println!(
            "  controller: none holds the lease (start `haven volume serve {}`)",
            r.name
        ),
    }
    println!("  generation: {}", r.gen);
    println!(
        "  in sync:    {}",
        if r.in_sync.is_empty() {
            "none".to_string()
        } else {
            r.in_sync.join(", ")
        }
    );
    for o in &r.out {
        let doing = match r.resyncing.iter().find(|p| p.replica == o.replica) {
            Some(p) => format!(
                "resyncing ({}): {} of {} regions",
                p.mode, p.regions_done, p.regions_total
            ),
            None if o.alive => "alive: resync due".to_string(),
            None => "down".to_string(),
        };
        println!(
            "  out:        {} since gen {} ({} gen(s) behind; {doing})",
            o.replica, o.left_gen, o.lag_gens
        );
    }
    for h in &r.holders {
        println!(
            "  replica:    {} at {} ({})",
            h.replica,
            if h.addr.is_empty() { "?" } else { &h.addr },
            if h.alive { "alive" } else { "not alive" }
        );
    }
    println!("  placement:  {}", r.placement.join(", "));
}

fn list(g: &Global, etcd: &EtcdArg) -> Result<i32> {
    let coord = connect(etcd)?;
    let reports = admin::volume_reports(&coord)?;
    if g.json {
        crate::output::json(&reports);
        return Ok(0);
    }
    if reports.is_empty() {
        super::say(g, "no volumes");
    }
    for r in &reports {
        println!(
            "{}\t{}\t{}/{} in sync\t{}",
            r.name,
            format_bytes(r.size),
            r.in_sync.len(),
            r.replicas,
            r.controller
                .as_ref()
                .map(|c| format!("served by {} (epoch {})", c.name, c.epoch))
                .unwrap_or_else(|| "not served".into())
        );
    }
    Ok(0)
}

fn delete(g: &Global, name: &str, etcd: &EtcdArg) -> Result<i32> {
    let coord = connect(etcd)?;
    let left = admin::delete_volume(&coord, name, REPLICA_TIMEOUT)?;
    for (replica, why) in &left {
        eprintln!(
            "haven: warning: the copy of {name} on replica {replica} was not deleted ({why}); delete it when the replica is back"
        );
    }
    super::report(
        g,
        format!("deleted volume {name}"),
        serde_json::json!({ "deleted": name, "copies_left": left }),
    );
    Ok(if left.is_empty() { 0 } else { 3 })
}
