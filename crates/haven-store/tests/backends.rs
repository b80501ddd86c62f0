//! The shared backend suite, run against every backend in this crate.

use haven_store::{suite, LocalBackend, MemoryBackend};

#[test]
fn memory_backend_meets_the_contract() {
    suite::run_all(&MemoryBackend::new());
}

#[test]
fn local_backend_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    suite::run_all(&LocalBackend::new(dir.path().join("repo")));
}

#[test]
fn local_backend_ignores_and_cleans_temporaries() {
    use haven_store::{FileKind, ReadBackend, WriteBackend};
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("repo"));
    b.create().unwrap();
    std::fs::write(dir.path().join("repo/index/.tmp-deadbeef"), b"partial").unwrap();
    assert!(
        b.list(FileKind::Index).unwrap().is_empty(),
        "a crashed writer's temporary is never listed"
    );
    assert_eq!(
        b.remove_stale_temporaries(std::time::Duration::ZERO)
            .unwrap(),
        1
    );
}
