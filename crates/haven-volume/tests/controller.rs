//! The controller end to end on loopback: a real etcd, replica servers in threads, the
//! controller and its NBD server, Haven's NBD client. Acknowledged writes are on every
//! in-sync replica; a replica that dies leaves the in-sync set before the write that found
//! it dead is acknowledged, comes back through its dirty map (or in full when its disk was
//! lost) and rejoins; a second candidate takes over with a higher epoch and serves the
//! same data; an old controller is fenced by the replicas; min-in-sync refuses writes.

#[path = "support/etcd.rs"]
mod etcd_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_support::EtcdCluster;
use haven_volume::controller::admin::{create_volume, delete_volume, volume_report, NewVolume};
use haven_volume::controller::{take_over, Controller, ControllerConfig, TakeoverOptions};
use haven_volume::coord::{Coord, ReplicaRecord};
use haven_volume::nbd::{BlockDevice, IoFailure, NbdClient, NbdServer, Stopper};
use haven_volume::replica::ReplicaServer;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A replica server in a thread, restartable on the same address.
struct Replica {
    id: String,
    dir: PathBuf,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Replica {
    fn start(dir: &Path, id: &str, addr: &str) -> Replica {
        let (site, node) = id.split_once('/').unwrap();
        let mut server = ReplicaServer::new(dir, site, node).unwrap();
        server.bind(addr).unwrap();
        let addr = server.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || server.run(&flag).unwrap());
        Replica {
            id: id.into(),
            dir: dir.into(),
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and closes its connections (the controller sees them fail).
    fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn restart(&mut self) {
        self.kill();
        *self = Replica::start(&self.dir.clone(), &self.id.clone(), &self.addr.to_string());
    }

    fn data(&self, volume: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("volumes").join(volume).join("data")).unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Rig {
    coord: Coord,
    replicas: Vec<Replica>,
    _dirs: tempfile::TempDir,
    _etcd: EtcdCluster,
}

impl Rig {
    fn new(n: usize) -> Rig {
        let etcd = EtcdCluster::single();
        let coord = Coord::connect(&etcd.endpoints()).unwrap();
        let dirs = tempfile::tempdir().unwrap();
        let replicas = (0..n)
            .map(|i| {
                let id = format!("s{i}/n{i}");
                let dir = dirs.path().join(format!("r{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let r = Replica::start(&dir, &id, "127.0.0.1:0");
                let (site, node) = id.split_once('/').unwrap();
                let record = ReplicaRecord {
                    id: id.clone(),
                    site: site.into(),
                    node: node.into(),
                    addr: r.addr.to_string(),
                    free_bytes: 1 << 40,
                    alive: false,
                };
                // Long enough for the test: liveness is not what is tested here.
                coord
                    .register_replica(&record, Duration::from_secs(120))
                    .unwrap();
                r
            })
            .collect();
        Rig {
            coord,
            replicas,
            _dirs: dirs,
            _etcd: etcd,
        }
    }

    fn create(&self, name: &str, replicas: u32, min_in_sync: u32) {
        self.create_sized(name, SIZE, replicas, min_in_sync)
    }

    fn create_sized(&self, name: &str, size: u64, replicas: u32, min_in_sync: u32) {
        let new = NewVolume {
            name: name.into(),
            size,
            replicas,
            min_in_sync,
            distinct_sites: false,
        };
        create_volume(&self.coord, &new, TIMEOUT).unwrap();
    }

    fn in_sync(&self, name: &str) -> Vec<String> {
        let mut v = self.coord.sync_state(name).unwrap().in_sync;
        v.sort();
        v
    }

    fn replica(&self, id: &str) -> &Replica {
        self.replicas.iter().find(|r| r.id == id).unwrap()
    }
}

/// A candidate with its NBD server.
struct Served {
    controller: Option<Controller>,
    addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    fn start(coord: &Coord, volume: &str, candidate: &str) -> Served {
        let mut config = ControllerConfig::new(volume, candidate);
        config.lease_ttl = Duration::from_secs(2);
        config.takeover = TakeoverOptions {
            replica_timeout: TIMEOUT,
            conns_per_replica: 2,
        };
        let controller = Controller::start(coord.clone(), config).unwrap();
        let server = NbdServer::bind("127.0.0.1:0", Arc::new(controller.exports())).unwrap();
        let (addr, stopper) = (server.local_addr(), server.stopper());
        let thread = std::thread::spawn(move || server.run().unwrap());
        Served {
            controller: Some(controller),
            addr,
            stopper,
            thread: Some(thread),
        }
    }

    fn controller(&self) -> &Controller {
        self.controller.as_ref().unwrap()
    }

    fn wait_serving(&self) -> Arc<haven_volume::controller::Volume> {
        self.controller()
            .wait_serving(Instant::now() + Duration::from_secs(30))
            .unwrap_or_else(|| panic!("not serving: {:?}", self.controller().status()))
    }

    fn client(&self, volume: &str) -> NbdClient {
        NbdClient::connect(self.addr, volume).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.controller.take());
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn writes_reach_every_replica_a_dead_one_leaves_before_the_ack_and_resyncs_its_dirty_regions() {
    let mut rig = Rig::new(2);
    rig.create("vol1", 2, 1);
    let served = Served::start(&rig.coord, "vol1", "ctl-a");
    let volume = served.wait_serving();
    let mut client = served.client("vol1");
    assert_eq!(client.size(), SIZE);
    let first = pattern(1, 256 << 10);
    client.write(0, &first, false).unwrap();
    client
        .write(5 * MIB + 512, &pattern(2, 4096), true)
        .unwrap();
    client.flush().unwrap();
    let (a, b) = (rig.replicas[0].data("vol1"), rig.replicas[1].data("vol1"));
    assert!(a == b, "the replicas differ after acknowledged writes");
    assert_eq!(&a[..first.len()], &first[..]);

    // A dead replica leaves the in-sync set before the write that found it is acknowledged.
    let gone = rig.replicas[1].id.clone();
    rig.replicas[1].kill();
    let during = pattern(3, 128 << 10);
    client.write(9 * MIB, &during, false).unwrap();
    assert_eq!(
        rig.in_sync("vol1"),
        vec![rig.replicas[0].id.clone()],
        "the write was acknowledged while {gone} was still in the in-sync set"
    );
    let out = rig.coord.sync_state("vol1").unwrap().out;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].replica, gone);
    client.write(12 * MIB, &pattern(4, 64 << 10), true).unwrap();
    assert_eq!(client.read(9 * MIB, during.len() as u32).unwrap(), during);

    // Back: resynced from the dirty map (only what was written since), then in sync.
    rig.replicas[1].restart();
    wait_until("the replica rejoins", Duration::from_secs(30), || {
        rig.in_sync("vol1").len() == 2
    });
    let status = volume.status();
    let resync = status.resynced.last().expect("a finished resync");
    assert_eq!(resync.replica, gone);
    assert_eq!(resync.mode, "dirty", "{resync:?}");
    let all = SIZE / haven_volume::region::REGION_SIZE;
    assert!(
        resync.regions_total >= 3 && resync.regions_total < all / 2,
        "only the regions written while it was away: {resync:?}"
    );
    // Writes after the rejoin reach both again.
    client.write(15 * MIB, &pattern(5, 4096), false).unwrap();
    client.flush().unwrap();
    let (a, b) = (rig.replicas[0].data("vol1"), rig.replicas[1].data("vol1"));
    assert!(a == b, "the replicas differ after the resync");
    assert_eq!(&b[9 * MIB as usize..][..during.len()], &during[..]);
}

#[test]
fn a_bulk_load_that_was_flushed_is_not_copied_again_by_a_resync() {
    let mut rig = Rig::new(2);
    rig.create("bulk", 2, 1);
    let served = Served::start(&rig.coord, "bulk", "ctl-a");
    let volume = served.wait_serving();
    let mut client = served.client("bulk");
    // The whole volume written, then one FLUSH, well within the generation's period.
    let mib = pattern(7, MIB as usize);
    for i in 0..SIZE / MIB {
        client.write(i * MIB, &mib, false).unwrap();
    }
    client.flush().unwrap();
    rig.replicas[1].kill();
    client.write(3 * MIB, &pattern(8, 4096), true).unwrap();
    client.write(11 * MIB, &pattern(9, 4096), true).unwrap();
    rig.replicas[1].restart();
    wait_until("the replica rejoins", Duration::from_secs(30), || {
        rig.in_sync("bulk").len() == 2
    });
    let resync = volume
        .status()
        .resynced
        .last()
        .cloned()
        .expect("a finished resync");
    assert_eq!(resync.mode, "dirty", "{resync:?}");
    let all = SIZE / haven_volume::region::REGION_SIZE;
    assert!(
        resync.regions_total >= 2 && resync.regions_total <= 2 + all / 32,
        "the flushed bulk load was resynced again: {resync:?} of {all} regions"
    );
    client.flush().unwrap();
    assert!(
        rig.replicas[0].data("bulk") == rig.replicas[1].data("bulk"),
        "the replicas differ after the resync"
    );
}

#[test]
fn a_replica_that_lost_its_disk_is_rebuilt_in_full() {
    let mut rig = Rig::new(2);
    rig.create("vol2", 2, 1);
    let served = Served::start(&rig.coord, "vol2", "ctl-a");
    let volume = served.wait_serving();
    let mut client = served.client("vol2");
    client.write(MIB, &pattern(7, 1 << 20), false).unwrap();
    client.flush().unwrap();
    let lost = rig.replicas[1].id.clone();
    rig.replicas[1].kill();
    std::fs::remove_dir_all(rig.replicas[1].dir.join("volumes")).unwrap();
    client.write(3 * MIB, &pattern(8, 4096), false).unwrap();
    assert_eq!(rig.in_sync("vol2").len(), 1);
    rig.replicas[1].restart();
    wait_until(
        "the rebuilt replica rejoins",
        Duration::from_secs(60),
        || rig.in_sync("vol2").len() == 2,
    );
    let resync = volume.status().resynced.last().cloned().unwrap();
    assert_eq!(
        (resync.replica.as_str(), resync.mode.as_str()),
        (lost.as_str(), "full")
    );
    client.flush().unwrap();
    assert!(rig.replicas[0].data("vol2") == rig.replicas[1].data("vol2"));
    // The record holds the new copy's instance.
    let state = rig.coord.sync_state("vol2").unwrap();
    assert_eq!(state.instances.len(), 2);
    drop(client);
    drop(served);
    let report = volume_report(&rig.coord, "vol2").unwrap();
    assert_eq!(report.in_sync.len(), 2);
    let undeleted = delete_volume(&rig.coord, "vol2", TIMEOUT).unwrap();
    assert!(undeleted.is_empty(), "{undeleted:?}");
    assert!(rig.coord.volume("vol2").unwrap().is_none());
    assert!(!rig.replica(&lost).dir.join("volumes/vol2").exists());
}

#[test]
fn volume_status_shows_a_resync_in_progress_from_the_serving_controller() {
    let mut rig = Rig::new(2);
    // Big enough that a full rebuild outlasts the once-a-second publication.
    let size = 8 << 30;
    rig.create_sized("big", size, 2, 1);
    let served = Served::start(&rig.coord, "big", "ctl-a");
    served.wait_serving();
    let mut client = served.client("big");
    client.write(MIB, &pattern(3, 4096), true).unwrap();
    rig.replicas[1].kill();
    std::fs::remove_dir_all(rig.replicas[1].dir.join("volumes")).unwrap();
    client.write(2 * MIB, &pattern(4, 4096), true).unwrap();
    rig.replicas[1].restart();
    let all = size / haven_volume::region::REGION_SIZE;
    let mut seen = None;
    wait_until(
        "the report shows the resync",
        Duration::from_secs(60),
        || {
            let report = volume_report(&rig.coord, "big").unwrap();
            seen = report.resyncing.first().cloned();
            seen.is_some() || report.in_sync.len() == 2
        },
    );
    let seen = seen.expect("the rebuild ended before the report showed it");
    assert_eq!(seen.replica, rig.replicas[1].id);
    assert_eq!((seen.mode.as_str(), seen.regions_total), ("full", all));
    assert!(seen.regions_done <= all);
    wait_until(
        "the rebuilt replica rejoins",
        Duration::from_secs(120),
        || rig.in_sync("big").len() == 2,
    );
    wait_until(
        "the report shows no resync",
        Duration::from_secs(10),
        || {
            volume_report(&rig.coord, "big")
                .unwrap()
                .resyncing
                .is_empty()
        },
    );
}

#[test]
fn another_candidate_takes_over_with_a_higher_epoch_and_serves_the_same_data() {
    let rig = Rig::new(2);
    rig.create("vol3", 2, 1);
    let a = Served::start(&rig.coord, "vol3", "ctl-a");
    let epoch_a = a.wait_serving().epoch();
    let b = Served::start(&rig.coord, "vol3", "ctl-b");
    let data = pattern(9, 512 << 10);
    let mut client_a = a.client("vol3");
    client_a.write(2 * MIB, &data, false).unwrap();
    client_a.flush().unwrap();
    assert!(b.controller().serving().is_none(), "one serves at a time");

    // A stops cleanly (resigns): B takes over at once, with a higher epoch.
    let mut a = a;
    a.controller.take().unwrap().stop();
    assert!(
        client_a.write(0, &[1; 512], false).is_err(),
        "the stopped controller answers nothing"
    );
    let vb = b.wait_serving();
    assert!(vb.epoch() > epoch_a, "{} > {epoch_a}", vb.epoch());
    let mut client_b = b.client("vol3");
    assert_eq!(
        client_b.info().description,
        Some(format!("haven volume vol3 epoch {}", vb.epoch())),
        "NBD_INFO_DESCRIPTION names the serving epoch"
    );
    assert_eq!(client_b.read(2 * MIB, data.len() as u32).unwrap(), data);
    client_b.write(4 * MIB, &pattern(10, 4096), true).unwrap();

    // B dies without resigning: a candidate takes over once the lease expired.
    let c = Served::start(&rig.coord, "vol3", "ctl-c");
    let mut b = b;
    let died = Instant::now();
    b.controller.take().unwrap().abandon();
    let vc = c.wait_serving();
    let took = died.elapsed();
    assert!(vc.epoch() > vb.epoch());
    assert!(took < Duration::from_secs(5), "took over after {took:?}");
    let mut client_c = c.client("vol3");
    assert_eq!(client_c.read(2 * MIB, data.len() as u32).unwrap(), data);
    assert_eq!(client_c.read(4 * MIB, 4096).unwrap(), pattern(10, 4096));
    let report = volume_report(&rig.coord, "vol3").unwrap();
    assert_eq!(report.controller.map(|c| c.name), Some("ctl-c".to_string()));
}

#[test]
fn an_old_controller_is_fenced_by_the_replicas_once_a_new_one_said_hello() {
    let rig = Rig::new(2);
    rig.create("vol4", 2, 1);
    let ttl = Duration::from_secs(2);
    let lead = rig.coord.campaign("vol4", "old", ttl).unwrap().unwrap();
    // A controller that believes its lease lasts (as one paused past it does).
    let old = take_over(
        &rig.coord,
        lead.clone(),
        &TakeoverOptions::default(),
        Instant::now() + Duration::from_secs(3600),
    )
    .unwrap();
    old.write(0, &[1; 4096], false).unwrap();
    rig.coord.resign(&lead).unwrap();

    let new = Served::start(&rig.coord, "vol4", "new");
    let vn = new.wait_serving();
    assert!(vn.epoch() > lead.epoch);
    let err = old.write(0, &[2; 4096], false).unwrap_err();
    assert!(matches!(err, IoFailure::Shutdown(_)), "{err:?}");
    assert!(old.is_stopped());
    assert!(
        old.stop_reason().unwrap().contains("fenced"),
        "{:?}",
        old.stop_reason()
    );
    let mut buf = vec![0; 4096];
    assert!(matches!(old.read(0, &mut buf), Err(IoFailure::Shutdown(_))));
    let mut client = new.client("vol4");
    assert_eq!(client.read(0, 4096).unwrap(), vec![1; 4096]);
    for r in &rig.replicas {
        assert_eq!(
            &r.data("vol4")[..4096],
            &[1; 4096][..],
            "{} holds the fenced write",
            r.id
        );
    }
}

#[test]
fn min_in_sync_two_refuses_writes_and_keeps_the_replica_until_it_is_back() {
    let mut rig = Rig::new(2);
    rig.create("vol5", 2, 2);
    let served = Served::start(&rig.coord, "vol5", "ctl-a");
    let first = served.wait_serving();
    first.write(0, &pattern(11, 8192), false).unwrap();
    rig.replicas[1].kill();
    let err = first.write(MIB, &pattern(12, 8192), false).unwrap_err();
    assert!(matches!(err, IoFailure::Io(_)), "{err:?}");
    assert_eq!(
        rig.in_sync("vol5").len(),
        2,
        "the failed replica stays in the set"
    );
    let mut buf = vec![0; 8192];
    first.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(11, 8192), "reads go on from the live replica");

    // Back: a new takeover reconciles it, and writes are taken again.
    rig.replicas[1].restart();
    wait_until(
        "served again after the replica is back",
        Duration::from_secs(30),
        || {
            served
                .controller()
                .serving()
                .is_some_and(|v| !Arc::ptr_eq(&v, &first) && !v.is_stopped())
        },
    );
    let again = served.wait_serving();
    again.write(2 * MIB, &pattern(13, 8192), true).unwrap();
    again.flush().unwrap();
    assert!(rig.replicas[0].data("vol5") == rig.replicas[1].data("vol5"));
}

#[test]
fn writes_go_on_during_a_resync_and_the_replicas_end_identical() {
    const BIG: u64 = 64 * MIB;
    const BLOCK: u64 = 4096;
    let mut rig = Rig::new(2);
    rig.create_sized("vol6", BIG, 2, 1);
    let served = Served::start(&rig.coord, "vol6", "ctl-a");
    let volume = served.wait_serving();
    // Both copies took writes (a copy's dirty maps vouch only from its first write on).
    volume.write(60 * MIB, &pattern(99, 8192), true).unwrap();
    rig.replicas[1].kill();
    // Away while a quarter of the volume is written: the resync has work to do.
    for i in 0..16u64 {
        volume
            .write(i * 4 * MIB, &pattern(i as u8, MIB as usize), false)
            .unwrap();
    }
    assert_eq!(rig.in_sync("vol6").len(), 1);
    let stop = AtomicBool::new(false);
    let blocks = BIG / BLOCK;
    // Two writers on disjoint blocks (even / odd), each remembering what it had acknowledged.
    let last: Vec<Vec<(u64, u8)>> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..2u64)
            .map(|k| {
                let (volume, stop) = (&volume, &stop);
                s.spawn(move || {
                    let mut acked = vec![];
                    let mut x = 0x9e3779b97f4a7c15u64 ^ k;
                    let mut n = 0u8;
                    while !stop.load(Ordering::SeqCst) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let block = (x % (blocks / 2)) * 2 + k;
                        n = n.wrapping_add(1);
                        volume
                            .write(block * BLOCK, &[n; BLOCK as usize], false)
                            .unwrap();
                        acked.push((block, n));
                    }
                    acked
                })
            })
            .collect();
        rig.replicas[1].restart();
        wait_until(
            "the replica rejoins under writes",
            Duration::from_secs(60),
            || rig.in_sync("vol6").len() == 2,
        );
        // Some more writes with both in sync again.
        let more = Instant::now() + Duration::from_millis(300);
        while Instant::now() < more {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    volume.flush().unwrap();
    let resync = volume.status().resynced.last().cloned().unwrap();
    assert_eq!(resync.mode, "dirty", "{resync:?}");
    let (a, b) = (rig.replicas[0].data("vol6"), rig.replicas[1].data("vol6"));
    let differing: Vec<u64> = (0..blocks)
        .filter(|i| {
            let r = (*i * BLOCK) as usize..((*i + 1) * BLOCK) as usize;
            a[r.clone()] != b[r]
        })
        .take(10)
        .collect();
    assert!(
        differing.is_empty(),
        "blocks differ between the replicas: {differing:?}"
    );
    let mut expected = std::collections::BTreeMap::new();
    for (block, n) in last.iter().flatten() {
        expected.insert(*block, *n);
    }
    let writes: usize = last.iter().map(Vec::len).sum();
    assert!(writes > 100, "only {writes} writes went on");
    for (block, n) in expected {
        let at = (block * BLOCK) as usize;
        assert_eq!(a[at], n, "block {block} lost its last acknowledged write");
        assert_eq!(&a[at..at + BLOCK as usize], &[n; BLOCK as usize][..]);
    }
}
