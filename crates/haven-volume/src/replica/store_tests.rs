//! Tests of `store.rs` (kept apart: the module is long enough on its own).
use super::*;

fn seal(epoch: u64) -> Seal {
    Seal { epoch, session: 0 }
}

fn stamp(epoch: u64, gen: u64, seq: u64, settled: u64) -> WriteStamp {
    WriteStamp {
        epoch,
        gen,
        seq,
        settled,
    }
}

#[test]
fn meta_round_trips_and_rejects_damage() {
    let meta = Meta {
        size: 1 << 30,
        instance: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
        epoch: 9,
        dirty_floor: 3,
        settle_gen: 4,
    };
    let bytes = meta.encode();
    assert_eq!(Meta::decode(&bytes), Some(meta));
    let mut bad = bytes.clone();
    bad[30] ^= 1;
    assert_eq!(Meta::decode(&bad), None);
}

#[test]
fn old_generations_are_pruned_and_then_unanswerable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create("v", 1 << 20).unwrap();
    let v = store.volume("v").unwrap();
    for gen in 1..=KEPT_GENERATIONS + 2 {
        v.write(
            0,
            &stamp(1, gen, gen, gen - 1),
            0,
            WriteOp::Data(&[1]),
            false,
        )
        .unwrap();
    }
    // Generations 1 and 2 were dropped: the floor is 3.
    assert_eq!(v.dirty_since(seal(1), 2).unwrap(), None);
    assert_eq!(v.dirty_since(seal(1), 3).unwrap().unwrap().len(), 1);
    drop(v);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let v = store.volume("v").unwrap();
    assert_eq!(v.dirty_since(seal(1), 2).unwrap(), None);
    assert_eq!(v.dirty_since(seal(1), 3).unwrap().unwrap().len(), 1);
    let maps = fs::read_dir(dir.path().join("volumes/v/dirty"))
        .unwrap()
        .count();
    assert_eq!(maps as u64, KEPT_GENERATIONS);
    // Never settled since generation 0, whose map is gone: unsettled unknown.
    assert_eq!(v.hello(seal(1)).unwrap().unsettled, None);
}

#[test]
fn sequential_writers_mark_ahead_and_random_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create("v", 1000 * REGION_SIZE).unwrap();
    let v = store.volume("v").unwrap();
    let dirty = |v: &Volume| v.dirty_since(seal(1), 1).unwrap().unwrap();
    v.write(
        0,
        &stamp(1, 1, 1, 0),
        500 * REGION_SIZE,
        WriteOp::Data(&[1]),
        false,
    )
    .unwrap();
    v.write(
        0,
        &stamp(1, 1, 2, 1),
        502 * REGION_SIZE,
        WriteOp::Data(&[1]),
        false,
    )
    .unwrap();
    assert_eq!(dirty(&v).iter().collect::<Vec<_>>(), vec![500, 502]);
    // Region 502 marked: a write to 503 marks 503 ..= 503 + LOOKAHEAD.
    v.write(
        0,
        &stamp(1, 1, 3, 2),
        503 * REGION_SIZE,
        WriteOp::Data(&[1]),
        false,
    )
    .unwrap();
    let map = dirty(&v);
    assert_eq!(map.len(), 2 + 1 + LOOKAHEAD);
    assert!(map.contains(503 + LOOKAHEAD) && !map.contains(504 + LOOKAHEAD));
    // Never past the last region.
    v.write(
        0,
        &stamp(1, 1, 4, 3),
        998 * REGION_SIZE,
        WriteOp::Data(&[1]),
        false,
    )
    .unwrap();
    v.write(
        0,
        &stamp(1, 1, 5, 4),
        999 * REGION_SIZE,
        WriteOp::Data(&[1]),
        false,
    )
    .unwrap();
    assert_eq!(dirty(&v).len(), 2 + 1 + LOOKAHEAD + 2);
}

#[test]
fn a_seal_waits_for_the_writes_that_passed_their_epoch_check() {
    use std::sync::mpsc::channel;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create("v", 1 << 20).unwrap();
    let v = store.volume("v").unwrap();
    v.hello(seal(1)).unwrap();
    let (entered_tx, entered) = channel();
    let (resume, resume_rx) = channel();
    *v.pause.lock().unwrap() = Some((entered_tx, resume_rx));
    std::thread::scope(|s| {
        // Dropped when an assertion fails, so the paused write ends and the scope joins.
        let resume = resume;
        let old = s.spawn(|| v.write(0, &stamp(1, 1, 1, 0), 0, WriteOp::Data(b"old"), false));
        entered.recv().unwrap();
        let (sealed_tx, sealed) = channel();
        let v = &v;
        s.spawn(move || sealed_tx.send(v.hello(seal(2))).unwrap());
        // A HELLO answered while the old write is still on its way is the bug.
        assert!(
            sealed.recv_timeout(Duration::from_millis(300)).is_err(),
            "HELLO of epoch 2 answered while a write of epoch 1 was in flight"
        );
        resume.send(()).unwrap();
        old.join().unwrap().unwrap();
        assert_eq!(sealed.recv().unwrap().unwrap().epoch, 2);
    });
    assert_eq!(v.read(seal(2), 0, 3).unwrap(), b"old");
    assert!(matches!(
        v.write(0, &stamp(1, 1, 2, 1), 0, WriteOp::Data(b"new"), false),
        Err(StoreError::Fenced { seen: 2, sent: 1 })
    ));
}

#[test]
fn a_newer_session_waits_for_the_old_one_and_then_refuses_it() {
    use std::sync::mpsc::channel;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create("v", 1 << 20).unwrap();
    let v = store.volume("v").unwrap();
    let (old_link, new_link) = (
        Seal {
            epoch: 3,
            session: 1,
        },
        Seal {
            epoch: 3,
            session: 2,
        },
    );
    v.hello(old_link).unwrap();
    let (entered_tx, entered) = channel();
    let (resume, resume_rx) = channel();
    *v.pause.lock().unwrap() = Some((entered_tx, resume_rx));
    std::thread::scope(|s| {
        let resume = resume;
        let old = s.spawn(|| v.write(1, &stamp(3, 1, 1, 0), 0, WriteOp::Data(b"old"), false));
        entered.recv().unwrap();
        let (sealed_tx, sealed) = channel();
        let v = &v;
        s.spawn(move || sealed_tx.send(v.hello(new_link)).unwrap());
        assert!(
            sealed.recv_timeout(Duration::from_millis(300)).is_err(),
            "HELLO of session 2 answered while a write of session 1 was in flight"
        );
        resume.send(()).unwrap();
        old.join().unwrap().unwrap();
        assert_eq!(sealed.recv().unwrap().unwrap().epoch, 3);
    });
    // What the old link still had on its way (a write TCP delivers after a partition
    // healed) is refused, and so is the old link sealing itself again.
    assert_eq!(
        v.write(1, &stamp(3, 1, 2, 1), 0, WriteOp::Data(b"late"), false),
        Err(StoreError::Superseded { seen: 2, sent: 1 })
    );
    assert_eq!(
        v.hello(old_link).unwrap_err(),
        StoreError::Superseded { seen: 2, sent: 1 }
    );
    assert_eq!(v.read(new_link, 0, 3).unwrap(), b"old");
    // A new epoch starts its sessions afresh; the old epoch is fenced, whatever its session.
    v.hello(Seal {
        epoch: 4,
        session: 1,
    })
    .unwrap();
    assert_eq!(
        v.flush(Seal {
            epoch: 3,
            session: 9
        }),
        Err(StoreError::Fenced { seen: 4, sent: 3 })
    );
}

#[test]
fn a_damaged_map_raises_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create("v", 1 << 20).unwrap();
    let v = store.volume("v").unwrap();
    for gen in [1, 2, 5] {
        v.write(0, &stamp(1, gen, 1, 0), 0, WriteOp::Data(&[1]), false)
            .unwrap();
    }
    drop((v, store));
    fs::write(map_path(&dir.path().join("volumes/v"), 2), b"torn").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = store.volume("v").unwrap();
    assert_eq!(v.dirty_since(seal(1), 2).unwrap(), None);
    assert_eq!(v.dirty_since(seal(1), 3).unwrap().unwrap().len(), 1);
}

#[test]
fn names_are_path_components() {
    for bad in ["", ".x", "a/b", "..", &"x".repeat(65), "a b"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    check_name("data-1.v_2").unwrap();
}
