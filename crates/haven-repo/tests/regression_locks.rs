//! Regression tests for locks, read ordering, the write pipeline's shutdown and key
//! slots (issue 10, items 2, 3, 4, 7 and 17), through the engine's library API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_repo::backup::{backup_paths, BackupOptions};
use haven_repo::codec::ObjectKind;
use haven_repo::lock::{list_locks, remove_locks, LockInfo, LockTiming, RepoLock};
use haven_repo::progress::Progress;
use haven_repo::{RepoError, Repository};
use haven_store::{DynBackend, FileKind, FlakyBackend, MemoryBackend, ReadBackend};

#[allow(dead_code)] // not every fixture is used here
mod common;
use common::{fast_opts, noise, pass};

fn new_repo(backend: DynBackend) -> Repository {
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    Repository::open(backend, &pass()).unwrap()
}

fn source_tree() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.bin"), noise(200_000, 7)).unwrap();
    std::fs::write(src.path().join("b.txt"), "tenant data\n".repeat(5_000)).unwrap();
    src
}

fn backup(repo: &Repository, src: &std::path::Path) -> haven_repo::Result<()> {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..Default::default()
    };
    backup_paths(
        repo.clone().indexed()?,
        &opts,
        Arc::new(Progress::default()),
    )
    .map(|_| ())
}

/// Poll `cond` until it holds, failing the test after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item 2: a lock taken after waiting for another holder carries the time it was
/// written, not the time the wait began.
#[test]
fn lock_taken_after_a_wait_is_stamped_when_written() {
    let repo = new_repo(Arc::new(MemoryBackend::new()));
    let start = chrono::Utc::now().timestamp();
    // An exclusive lock of another host that turns stale three seconds from now.
    let age = haven_repo::lock::STALE_AFTER.as_secs() as i64 - 2;
    let other = LockInfo {
        exclusive: true,
        host: "another-host".into(),
        pid: 1,
        user: "someone".into(),
        purpose: "prune".into(),
        time_unix: start - age,
    };
    let planted = hex::encode(
        repo.save_object(FileKind::Lock, ObjectKind::Lock, &other)
            .unwrap(),
    );
    let lock = RepoLock::acquire(&repo, false, "backup", Duration::from_secs(30)).unwrap();
    let taken = chrono::Utc::now().timestamp();
    assert!(taken >= start + 2, "the planted lock was ignored too early");
    let ours: Vec<LockInfo> = list_locks(&repo)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| *name != planted)
        .map(|(_, info)| info.expect("our lock is readable"))
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(
        ours[0].time_unix >= taken - 1,
        "the lock file written at {taken} says it was written at {} (when the wait began)",
        ours[0].time_unix
    );
    drop(lock);
}

const FAST: LockTiming = LockTiming {
    refresh_interval: Duration::from_millis(100),
    stale_after: Duration::from_millis(600),
};

/// Item 3: once refreshes failed for long enough that others may judge the lock
/// stale, the holder stays unable to commit even after the store recovers.
#[test]
fn lock_lost_during_an_outage_stays_lost_after_refreshes_recover() {
    let flaky = Arc::new(FlakyBackend::new());
    let repo = new_repo(flaky.clone());
    let lock = RepoLock::acquire_with(&repo, false, "backup", Duration::ZERO, FAST).unwrap();
    flaky.set_down(true);
    wait_until(Duration::from_secs(10), "the lock is lost", || {
        lock.ensure_held().is_err()
    });
    flaky.set_down(false);
    // Several refresh intervals on a healthy store: a refresh that succeeded now must
    // not make the lock held again (another haven may have pruned meanwhile).
    std::thread::sleep(FAST.refresh_interval * 4);
    assert!(
        matches!(lock.ensure_held(), Err(RepoError::LockLost { .. })),
        "a lost lock must stay lost"
    );
    let src = source_tree();
    let err = backup(&repo, src.path()).unwrap_err();
    assert!(matches!(err, RepoError::LockLost { .. }), "{err}");
    assert!(flaky.inner().list(FileKind::Snapshot).unwrap().is_empty());
    drop(lock);
}

/// Item 3: a holder notices that its own lock file was removed (by `unlock` or a prune
/// on another host) and does not commit.
#[test]
fn lock_whose_file_was_removed_by_another_haven_is_lost() {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    let repo = new_repo(backend.clone());
    let lock = RepoLock::acquire_with(&repo, false, "backup", Duration::ZERO, FAST).unwrap();
    // Another haven runs `unlock --all`.
    let other = Repository::open(backend.clone(), &pass()).unwrap();
    assert_eq!(remove_locks(&other, true).unwrap(), 1);
    wait_until(Duration::from_secs(10), "the removal is noticed", || {
        lock.ensure_held().is_err()
    });
    let src = source_tree();
    let err = backup(&repo, src.path()).unwrap_err();
    assert!(matches!(err, RepoError::LockLost { .. }), "{err}");
    assert!(backend.list(FileKind::Snapshot).unwrap().is_empty());
    drop(lock);
}

/// Item 3: a lost lock stops only the work done under it, not another job of the same
/// process on another repository (the daemon runs several).
#[test]
fn lost_lock_does_not_stop_another_repository_in_the_same_process() {
    let flaky = Arc::new(FlakyBackend::new());
    let sick = new_repo(flaky.clone());
    let sick_lock = RepoLock::acquire_with(&sick, false, "backup", Duration::ZERO, FAST).unwrap();
    flaky.set_down(true);
    wait_until(Duration::from_secs(10), "the lock is lost", || {
        sick_lock.ensure_held().is_err()
    });

    let healthy_backend: DynBackend = Arc::new(MemoryBackend::new());
    let healthy = new_repo(healthy_backend.clone());
    // Production timing: on a busy machine a 100 ms refresher could miss its own
    // deadline, and this test is about the other lock's loss only.
    let healthy_lock = RepoLock::acquire(&healthy, false, "backup", Duration::ZERO).unwrap();
    let src = source_tree();
    backup(&healthy, src.path()).expect("a healthy repository's backup commits");
    assert_eq!(healthy_backend.list(FileKind::Snapshot).unwrap().len(), 1);
    drop(healthy_lock);
    flaky.set_down(false);
    drop(sick_lock);
}

/// Item 17: an emptied, truncated or damaged key slot is reported as damaged, naming
/// the slot, not as a wrong passphrase.
#[test]
fn damaged_key_slot_is_named_not_blamed_on_the_passphrase() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("emptied", |d| d.clear()),
        ("truncated", |d| d.truncate(d.len() / 2)),
        ("cut short by one byte", |d| {
            d.pop();
        }),
        ("magic overwritten", |d| d[..4].copy_from_slice(b"XXXX")),
    ];
    for (what, damage) in damages {
        let backend: DynBackend = Arc::new(MemoryBackend::new());
        new_repo(backend.clone());
        let slot = backend.list(FileKind::Key).unwrap().remove(0).name;
        let mut data = backend.read(FileKind::Key, &slot).unwrap();
        damage(&mut data);
        backend.write(FileKind::Key, &slot, &data).unwrap();
        let err = Repository::open(backend.clone(), &pass()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, RepoError::KeySlotsDamaged { .. }),
            "{what}: {msg}"
        );
        assert!(
            msg.contains(&slot[..8]),
            "{what}: the slot is not named: {msg}"
        );
        assert!(!msg.contains("wrong passphrase"), "{what}: {msg}");
    }
}

/// Item 17: with intact slots, a wrong passphrase is still a wrong passphrase.
#[test]
fn wrong_passphrase_on_intact_slots_still_says_wrong_passphrase() {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    let repo = new_repo(backend.clone());
    repo.add_key(
        &haven_repo::keys::Secret::Passphrase("second".into()),
        fast_opts().kdf,
    )
    .unwrap();
    let wrong = haven_repo::keys::Secret::Passphrase("not it".into());
    let err = Repository::open(backend, &wrong).unwrap_err();
    assert!(matches!(err, RepoError::WrongPassword(_)), "{err}");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
}

/// A reader that yields `good` bytes of noise, then fails.
struct FailingSource {
    data: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for FailingSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(std::io::Error::other("the source broke midway")),
            n => Ok(n),
        }
    }
}

/// Run a stream backup into a new repository on `flaky` (after `arm` prepared the
/// store) and check that nothing touches the store after it returned: every pipeline
/// thread was joined (they hold the backend, so the backend's reference count falls
/// back once they are gone) and the operation count is unchanged.
fn stream_backup_then_count(
    flaky: &Arc<FlakyBackend>,
    arm: impl FnOnce(&FlakyBackend),
    source: impl std::io::Read,
) -> RepoError {
    let refs_without_repo = Arc::strong_count(flaky);
    let indexed = new_repo(flaky.clone()).indexed().unwrap();
    arm(flaky);
    let err = haven_repo::backup::backup_stream(
        indexed,
        source,
        "dump.sql",
        vec![],
        None,
        Arc::new(Progress::default()),
    )
    .unwrap_err();
    let calls_at_return = flaky.calls();
    // Threads still running after the return hold the backend: wait until they let go.
    wait_until(Duration::from_secs(30), "the pipeline lets go", || {
        Arc::strong_count(flaky) <= refs_without_repo
    });
    assert_eq!(
        flaky.calls(),
        calls_at_return,
        "the store was used after the failed backup returned"
    );
    err
}

/// Item 7: a backup whose source fails midway stops its writer threads before it
/// returns; no pack or index reaches the store afterwards.
#[test]
fn failed_backup_leaves_no_writer_running() {
    let flaky = Arc::new(FlakyBackend::new());
    let source = FailingSource {
        data: std::io::Cursor::new(noise(3_500_000, 11)),
    };
    // Slow writes, so packs are still queued when the source fails.
    let slow = |f: &FlakyBackend| f.set_delay(Duration::from_millis(30));
    let err = stream_backup_then_count(&flaky, slow, source);
    assert!(matches!(err, RepoError::Io { .. }), "{err}");
}

/// Item 7: when the store fails, the backup returns the store's error with its class
/// (here: a full disk), and its threads are stopped before it returns.
#[test]
fn backup_failed_by_the_store_keeps_the_error_class() {
    let flaky = Arc::new(FlakyBackend::new());
    // The first operation of the backup is its first pack upload.
    let full = |f: &FlakyBackend| f.fail_next_with(1, haven_store::ErrorClass::NoSpace);
    let source = std::io::Cursor::new(noise(20_000_000, 5));
    let err = stream_backup_then_count(&flaky, full, source);
    assert!(
        err.is_no_space(),
        "the full disk is not recognisable: {err:?}"
    );
}

/// A repository with one backup of `src`; a second source whose backup is committed
/// between a reader's two steps.
fn repo_with_one_backup() -> (DynBackend, Repository, tempfile::TempDir, tempfile::TempDir) {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    let repo = new_repo(backend.clone());
    let first = source_tree();
    backup(&repo, first.path()).unwrap();
    let second = tempfile::tempdir().unwrap();
    std::fs::write(second.path().join("new.bin"), noise(300_000, 99)).unwrap();
    (backend, repo, first, second)
}

/// Item 4: a backup that commits while `check` is reading is not reported as damage:
/// the snapshots are listed before the index is loaded.
#[test]
fn check_during_a_committing_backup_reports_no_false_damage() {
    let (backend, repo, _first, second) = repo_with_one_backup();
    let view = haven_repo::read::ReadView::open_with(repo, |r| {
        // Another haven's backup commits between the reader's two steps.
        let other = Repository::open(r.backend().clone(), &pass()).unwrap();
        backup(&other, second.path()).unwrap();
    })
    .unwrap();
    assert_eq!(backend.list(FileKind::Snapshot).unwrap().len(), 2);
    let report = haven_repo::check::check(&view, false, Arc::new(Progress::default())).unwrap();
    assert!(report.ok(), "false damage: {:?}", report.problems);
}

/// Item 4: `restore latest` during a committing backup restores a snapshot whose
/// blobs are all in the loaded index.
#[test]
fn restore_latest_during_a_committing_backup_succeeds() {
    let (_backend, repo, first, second) = repo_with_one_backup();
    let view = haven_repo::read::ReadView::open_with(repo, |r| {
        let other = Repository::open(r.backend().clone(), &pass()).unwrap();
        backup(&other, second.path()).unwrap();
    })
    .unwrap();
    let latest = view.find("latest").unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = haven_repo::restore::restore(
        &view.repo,
        &latest.snapshot,
        &haven_repo::restore::RestoreOptions {
            target: out.path().into(),
            include: vec![],
        },
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let restored = out.path().join(first.path().strip_prefix("/").unwrap());
    assert!(restored.join("a.bin").exists());
}
