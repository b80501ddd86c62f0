//! Coordination against real etcd (one member, or three): volumes created once, one
//! controller at a time with strictly growing epochs, the in-sync record guarded on the
//! epoch, the replica registry, a member lost, etcd unreachable.

#[path = "support/etcd.rs"]
mod etcd_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_support::{dead_endpoint, EtcdCluster};
use haven_volume::coord::{Coord, CoordError, ReplicaRecord, SyncState, VolumeSpec, CALL_TIMEOUT};

const GIB: u64 = 1 << 30;

fn spec(name: &str) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        size: 20 * GIB,
        replicas: 2,
        min_in_sync: 1,
        distinct_sites: false,
        placement: vec!["a/n1".into(), "b/n2".into()],
    }
}

fn initial() -> SyncState {
    SyncState {
        epoch: 0,
        gen: 1,
        in_sync: vec!["a/n1".into(), "b/n2".into()],
        out: vec![],
        instances: BTreeMap::from([("a/n1".into(), "01".into()), ("b/n2".into(), "02".into())]),
    }
}

fn coord(cluster: &EtcdCluster) -> Coord {
    Coord::connect(&cluster.endpoints()).unwrap()
}

/// Poll `f` until it returns true; panics after `within`.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_volume_is_created_once_listed_and_deleted() {
    let etcd = EtcdCluster::single();
    let coord = coord(&etcd);
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    coord.create_volume(&spec("data10"), &initial()).unwrap();
    let err = coord.create_volume(&spec("data1"), &initial()).unwrap_err();
    assert!(
        matches!(err, CoordError::Exists(ref n) if n == "data1"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");

    assert_eq!(coord.volume("data1").unwrap(), Some(spec("data1")));
    assert_eq!(coord.volume("nope").unwrap(), None);
    let names: Vec<String> = coord
        .volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["data1", "data10"]);
    assert_eq!(coord.sync_state("data1").unwrap(), initial());

    // Deleting data1 leaves data10 (a key prefix of it) alone.
    coord.delete_volume("data1").unwrap();
    assert_eq!(coord.volume("data1").unwrap(), None);
    assert!(matches!(
        coord.sync_state("data1"),
        Err(CoordError::NoVolume(_))
    ));
    assert!(matches!(
        coord.delete_volume("data1"),
        Err(CoordError::NoVolume(_))
    ));
    assert_eq!(coord.volumes().unwrap().len(), 1);
    coord.create_volume(&spec("data1"), &initial()).unwrap();

    for bad in ["", "a/b", "..", "-x", &"x".repeat(65)] {
        let err = coord.create_volume(&spec(bad), &initial()).unwrap_err();
        assert!(matches!(err, CoordError::BadName(_)), "{bad:?}: {err}");
    }
}

#[test]
fn one_controller_at_a_time_and_epochs_grow() {
    let etcd = EtcdCluster::single();
    let coord = coord(&etcd);
    let ttl = Duration::from_secs(10);
    assert!(matches!(
        coord.campaign("data1", "site-a", ttl),
        Err(CoordError::NoVolume(_))
    ));
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    assert_eq!(coord.leader("data1").unwrap(), None);

    let first = coord
        .campaign("data1", "site-a", ttl)
        .unwrap()
        .expect("first wins");
    assert_eq!(coord.campaign("data1", "site-b", ttl).unwrap(), None);
    assert_eq!(
        coord.leader("data1").unwrap(),
        Some(("site-a".to_string(), first.epoch))
    );
    coord.keep_alive(&first).unwrap();
    assert_eq!(coord.keep_alive_ttl(&first).unwrap(), ttl);
    let mut state = initial();
    state.gen = 2;
    coord.update_sync_state(&first, &state).unwrap();
    let stored = coord.sync_state("data1").unwrap();
    assert_eq!((stored.epoch, stored.gen), (first.epoch, 2));

    coord.resign(&first).unwrap();
    coord.resign(&first).unwrap();
    assert_eq!(coord.leader("data1").unwrap(), None);
    let second = coord
        .campaign("data1", "site-b", ttl)
        .unwrap()
        .expect("second wins");
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
    assert_eq!(
        coord.leader("data1").unwrap(),
        Some(("site-b".to_string(), second.epoch))
    );

    // The old leadership can neither change the record nor refresh its lease.
    state.gen = 3;
    let err = coord.update_sync_state(&first, &state).unwrap_err();
    assert!(
        matches!(err, CoordError::Superseded { epoch, .. } if epoch == first.epoch),
        "{err}"
    );
    assert!(matches!(
        coord.keep_alive(&first),
        Err(CoordError::Superseded { .. })
    ));
    assert_eq!(coord.sync_state("data1").unwrap().gen, 2);
    coord.update_sync_state(&second, &state).unwrap();
    assert_eq!(coord.sync_state("data1").unwrap().epoch, second.epoch);

    // Deleting the volume supersedes its controller.
    coord.delete_volume("data1").unwrap();
    assert!(matches!(
        coord.update_sync_state(&second, &state),
        Err(CoordError::Superseded { .. })
    ));
}

#[test]
fn an_expired_lease_hands_the_volume_over_and_fences_the_old_leader() {
    let etcd = EtcdCluster::single();
    let coord = coord(&etcd);
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    let ttl = Duration::from_secs(2);
    let old = coord.campaign("data1", "site-a", ttl).unwrap().unwrap();

    // Kept alive, the lease outlives its TTL.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        coord.keep_alive(&old).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(coord.leader("data1").unwrap().map(|l| l.1), Some(old.epoch));

    // Left alone (the old controller paused), it expires: not before its TTL.
    coord.keep_alive(&old).unwrap();
    let started = Instant::now();
    wait_until("the lease expires", Duration::from_secs(15), || {
        coord.leader("data1").unwrap().is_none()
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let new = coord.campaign("data1", "site-b", ttl).unwrap().unwrap();
    assert!(new.epoch > old.epoch);

    // The old controller wakes up: fenced at etcd.
    assert!(matches!(
        coord.keep_alive(&old),
        Err(CoordError::Superseded { .. })
    ));
    let err = coord.update_sync_state(&old, &initial()).unwrap_err();
    assert!(matches!(err, CoordError::Superseded { .. }), "{err}");
    assert!(
        err.to_string().contains("no longer the serving controller"),
        "{err}"
    );
    coord.update_sync_state(&new, &initial()).unwrap();
    assert_eq!(coord.sync_state("data1").unwrap().epoch, new.epoch);
}

fn record(id: &str, free: u64) -> ReplicaRecord {
    let (site, node) = id.split_once('/').unwrap();
    ReplicaRecord {
        id: id.into(),
        site: site.into(),
        node: node.into(),
        addr: format!("127.0.0.1:{}", 7400 + free),
        free_bytes: free * GIB,
        alive: false,
    }
}

#[test]
fn replicas_register_stay_alive_and_are_placed() {
    let etcd = EtcdCluster::single();
    let coord = coord(&etcd);
    let ttl = Duration::from_secs(5);
    let mut a = coord.register_replica(&record("a/n1", 50), ttl).unwrap();
    let b = coord.register_replica(&record("b/n2", 30), ttl).unwrap();
    let _c = coord.register_replica(&record("a/n3", 80), ttl).unwrap();
    let all = coord.replicas().unwrap();
    let ids: Vec<(&str, bool)> = all.iter().map(|r| (r.id.as_str(), r.alive)).collect();
    assert_eq!(ids, [("a/n1", true), ("a/n3", true), ("b/n2", true)]);

    // Two sites: one copy on each, the roomiest of site a.
    assert_eq!(coord.place(&spec("data1")).unwrap(), ["a/n3", "b/n2"]);

    // b leaves: its record stays, not alive; placement then has one site only.
    coord.deregister_replica(&b).unwrap();
    let b_now = coord
        .replicas()
        .unwrap()
        .into_iter()
        .find(|r| r.id == "b/n2")
        .unwrap();
    assert!(!b_now.alive);
    let mut asked = spec("data1");
    asked.distinct_sites = true;
    let err = coord.place(&asked).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot place volume \"data1\": 2 replicas on distinct sites asked, only 1 site (a) \
         has live replicas"
    );
    assert_eq!(coord.place(&spec("data1")).unwrap(), ["a/n3", "a/n1"]);

    // A replica whose lease was lost (paused past its TTL) comes back on the next refresh.
    coord.deregister_replica(&a).unwrap();
    let lost = a.lease;
    coord.keep_replica_alive(&mut a).unwrap();
    assert_ne!(a.lease, lost);
    coord.update_replica_free(&mut a, 10 * GIB).unwrap();
    let a_now = coord
        .replicas()
        .unwrap()
        .into_iter()
        .find(|r| r.id == "a/n1")
        .unwrap();
    assert!(a_now.alive);
    assert_eq!(a_now.free_bytes, 10 * GIB);
    let mut big = spec("data1");
    big.size = 100 * GIB;
    assert_eq!(
        coord.place(&big).unwrap_err().to_string(),
        "cannot place volume \"data1\": no replica has 100 GiB free (largest: a/n3 with 80 GiB)"
    );

    // The keep-alive loop, as `haven replica serve` runs it in a thread, keeps a 2 s
    // registration alive past its TTL; stopped, the replica is no longer alive.
    let mut d = coord
        .register_replica(&record("c/n4", 10), Duration::from_secs(2))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let alive = |coord: &Coord| {
        let replicas = coord.replicas().unwrap();
        replicas.into_iter().any(|r| r.id == "c/n4" && r.alive)
    };
    std::thread::scope(|s| {
        let (coord, d, stop) = (&coord, &mut d, &stop);
        s.spawn(move || coord.run_replica_keep_alive(d, stop, |e| panic!("{e}")));
        std::thread::sleep(Duration::from_secs(3));
        assert!(alive(coord));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    wait_until(
        "the stopped replica's lease expires",
        Duration::from_secs(10),
        || !alive(&coord),
    );
}

#[test]
fn losing_one_of_three_members_is_survived() {
    let mut etcd = EtcdCluster::start(3);
    // The client talks to the raft leader first: the worst member to lose.
    let leader = etcd.leader().expect("a raft leader");
    let mut endpoints = vec![etcd.endpoint(leader)];
    endpoints.extend((0..3).filter(|&i| i != leader).map(|i| etcd.endpoint(i)));
    let coord = Coord::connect(&endpoints).unwrap();
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    let leadership = coord
        .campaign("data1", "site-a", Duration::from_secs(5))
        .unwrap()
        .unwrap();

    // It dies; the other two elect a leader, then every call goes to them.
    etcd.kill(leader);
    let started = Instant::now();
    wait_until("the cluster serves again", Duration::from_secs(10), || {
        coord.keep_alive(&leadership).is_ok()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lease of a 5 s controller survives: {:?}",
        started.elapsed()
    );
    assert_ne!(etcd.leader(), Some(leader));
    let started = Instant::now();
    coord.update_sync_state(&leadership, &initial()).unwrap();
    assert_eq!(coord.sync_state("data1").unwrap().epoch, leadership.epoch);
    assert_eq!(
        coord.leader("data1").unwrap(),
        Some(("site-a".to_string(), leadership.epoch))
    );
    coord.create_volume(&spec("data2"), &initial()).unwrap();
    // The dead member is not tried again on every call.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A new client given the dead member first connects through the others.
    let other = Coord::connect(&endpoints).unwrap();
    assert_eq!(other.volumes().unwrap().len(), 2);
    assert!(other.endpoints().starts_with(&endpoints[0]));
}

#[test]
fn a_member_that_hangs_costs_one_timeout_once() {
    let etcd = EtcdCluster::start(3);
    let coord = coord(&etcd);
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    let leadership = coord
        .campaign("data1", "site-a", Duration::from_secs(5))
        .unwrap()
        .unwrap();

    // The member the client uses accepts connections but never answers.
    etcd.pause(0);
    let started = Instant::now();
    wait_until("the cluster serves again", Duration::from_secs(10), || {
        coord.keep_alive(&leadership).is_ok()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lease of a 5 s controller survives: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    for gen in 2..12 {
        let mut state = initial();
        state.gen = gen;
        coord.update_sync_state(&leadership, &state).unwrap();
        coord.keep_alive(&leadership).unwrap();
    }
    assert_eq!(coord.sync_state("data1").unwrap().gen, 11);
    // 20 calls that each went to the hung member first would take 20 call timeouts; the
    // bound leaves room for a loaded machine, not for a timeout per call.
    assert!(
        started.elapsed() < CALL_TIMEOUT * 3,
        "20 calls after the switch took {:?}: they go to the hung member again",
        started.elapsed()
    );
    etcd.resume(0);
}

#[test]
fn concurrent_candidates_one_winner_per_round_and_epochs_grow() {
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let coord = coord(&etcd);
    coord.create_volume(&spec("data1"), &initial()).unwrap();
    let mut last_epoch = 0;
    for round in 0..5 {
        // Six candidates, two per member, campaign at once.
        let winners: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let mut mine = endpoints.clone();
                    mine.rotate_left(i % 3);
                    s.spawn(move || {
                        let coord = Coord::connect(&mine).unwrap();
                        coord
                            .campaign("data1", &format!("c{i}"), Duration::from_secs(10))
                            .unwrap()
                            .map(|l| (i, l))
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (i, leadership) = &winners[0];
        assert!(leadership.epoch > last_epoch, "round {round}");
        last_epoch = leadership.epoch;
        assert_eq!(
            coord.leader("data1").unwrap(),
            Some((format!("c{i}"), leadership.epoch))
        );
        coord.update_sync_state(leadership, &initial()).unwrap();
        coord.resign(leadership).unwrap();
    }
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let endpoint = dead_endpoint();
    let err = Coord::connect(std::slice::from_ref(&endpoint)).unwrap_err();
    assert!(matches!(err, CoordError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.contains("start etcd or pass --etcd"), "{text}");

    let err = Coord::connect(&[]).unwrap_err();
    assert!(matches!(err, CoordError::Unreachable { .. }), "{err}");
}
