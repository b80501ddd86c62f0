//! The one backend test suite. Every backend (memory, local folder, and the object
//! stores that come later) runs these same checks of the contract in the crate doc.
//! Each function panics with a message naming the broken rule.

use crate::{ErrorClass, FileKind, SharedBytes, WriteBackend};

/// Run every check against a backend whose `create` has not been called yet.
pub fn run_all(b: &dyn WriteBackend) {
    assert!(b
        .list(FileKind::Marker)
        .expect("listing an empty location finds nothing, not an error")
        .is_empty());
    b.create()
        .expect("create on an empty location must succeed");
    assert!(
        b.create().is_err(),
        "create twice must fail: it would hide an existing repository"
    );
    write_read_roundtrip(b);
    write_is_idempotent(b);
    shared_write(b);
    missing_files(b);
    ranges(b);
    listing(b);
    remove_is_idempotent(b);
}

fn write_read_roundtrip(b: &dyn WriteBackend) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.write(FileKind::Pack, "ab01", &data).unwrap();
    assert_eq!(
        b.read(FileKind::Pack, "ab01").unwrap(),
        data,
        "read returns what was written"
    );
    b.write(FileKind::Config, "", b"cfg").unwrap();
    assert_eq!(b.read(FileKind::Config, "").unwrap(), b"cfg");
}

fn write_is_idempotent(b: &dyn WriteBackend) {
    b.write(FileKind::Index, "11", b"same").unwrap();
    b.write(FileKind::Index, "11", b"same").unwrap();
    assert_eq!(b.read(FileKind::Index, "11").unwrap(), b"same");
}

fn shared_write(b: &dyn WriteBackend) {
    let buf: Vec<u8> = (0..70_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let shared = SharedBytes::new(buf.clone(), 4096);
    b.write_shared(FileKind::Pack, "ab02", shared.clone())
        .unwrap();
    b.write_shared(FileKind::Pack, "ab02", shared.clone())
        .expect("a shared write of the same content again is a no-op success");
    assert_eq!(
        b.read(FileKind::Pack, "ab02").unwrap(),
        &buf[4096..],
        "a shared write stores the bytes from its start on"
    );
    assert!(
        shared.into_vec().is_some(),
        "the backend kept a hold on a shared buffer after the write returned"
    );
    b.remove(FileKind::Pack, "ab02").unwrap();
}

fn missing_files(b: &dyn WriteBackend) {
    let err = b.read(FileKind::Snapshot, "missing").unwrap_err();
    assert_eq!(
        err.class,
        ErrorClass::NotFound,
        "a missing file is NotFound: {err}"
    );
    let err = b
        .read_range(FileKind::Snapshot, "missing", 0, 1)
        .unwrap_err();
    assert_eq!(
        err.class,
        ErrorClass::NotFound,
        "a missing file is NotFound: {err}"
    );
}

fn ranges(b: &dyn WriteBackend) {
    b.write(FileKind::Pack, "cd02", b"0123456789").unwrap();
    assert_eq!(b.read_range(FileKind::Pack, "cd02", 3, 4).unwrap(), b"3456");
    assert_eq!(
        b.read_range(FileKind::Pack, "cd02", 0, 10).unwrap(),
        b"0123456789"
    );
    let err = b.read_range(FileKind::Pack, "cd02", 8, 5).unwrap_err();
    assert_eq!(
        err.class,
        ErrorClass::Permanent,
        "reading past the end is a truncation: {err}"
    );
}

fn listing(b: &dyn WriteBackend) {
    b.write(FileKind::Snapshot, "s1", b"a").unwrap();
    b.write(FileKind::Snapshot, "s2", b"bb").unwrap();
    let names: Vec<_> = b
        .list(FileKind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    assert_eq!(names, vec![("s1".to_string(), 1), ("s2".to_string(), 2)]);
    let packs: Vec<_> = b
        .list(FileKind::Pack)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        packs,
        vec!["ab01".to_string(), "cd02".to_string()],
        "packs list across sub-folders"
    );
    assert!(b.list(FileKind::Lock).unwrap().is_empty());
}

fn remove_is_idempotent(b: &dyn WriteBackend) {
    b.remove(FileKind::Snapshot, "s1").unwrap();
    b.remove(FileKind::Snapshot, "s1").unwrap();
    assert_eq!(b.list(FileKind::Snapshot).unwrap().len(), 1);
    assert!(b.read(FileKind::Snapshot, "s1").unwrap_err().is_not_found());
}
