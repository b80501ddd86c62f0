//! Regression tests for restore's file writing (issue 10).

use std::path::Path;
use std::sync::Arc;

use haven_repo::backup::{backup_paths, BackupOptions};
use haven_repo::progress::Progress;
use haven_repo::restore::{restore, RestoreOptions};
use haven_repo::Repository;
use haven_store::{DynBackend, MemoryBackend};

#[allow(dead_code)] // not every test file uses every fixture
mod common;
use common::{fast_opts, noise, pass};

/// Every entry below `dir`, as paths relative to it (empty for an empty folder).
fn entries(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            for sub in entries(&e.path()) {
                out.push(format!("{}/{sub}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Symlinks planted in the target at a directory's place (the backed-up folder itself
/// and one inside it) and at a file's place point outside: nothing may be written
/// through them, and the restored tree must be the snapshot's.
#[test]
fn restore_never_follows_symlinks_planted_in_the_target() {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    let big = noise(300_000, 7); // several blobs: written under a temporary name
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    std::fs::write(src.path().join("a/small.txt"), b"small\n").unwrap();
    std::fs::write(src.path().join("a/b/big.bin"), &big).unwrap();
    std::fs::write(src.path().join("a/empty"), b"").unwrap();
    std::fs::write(src.path().join("c.txt"), b"top\n").unwrap();
    std::fs::hard_link(src.path().join("c.txt"), src.path().join("a/b/hard")).unwrap();
    std::os::unix::fs::symlink("small.txt", src.path().join("a/link")).unwrap();
    let snap = backup_paths(
        repo.clone(),
        &BackupOptions {
            paths: vec![src.path().to_path_buf()],
            ..Default::default()
        },
        Arc::new(Progress::default()),
    )
    .unwrap()
    .snapshot;
    let repo = Repository::open(backend, &pass())
        .unwrap()
        .indexed()
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("target");
    let outside_dir = out.path().join("outside");
    let outside_src = out.path().join("outside-src");
    let outside_file = out.path().join("outside-file");
    std::fs::create_dir_all(&outside_dir).unwrap();
    std::fs::create_dir_all(&outside_src).unwrap();
    std::fs::write(&outside_file, b"precious\n").unwrap();
    let restored = target.join(src.path().strip_prefix("/").unwrap());
    std::fs::create_dir_all(restored.parent().unwrap()).unwrap();
    // The backed-up folder's own place, then (inside the real folder) `a` and `c.txt`.
    std::os::unix::fs::symlink(&outside_src, &restored).unwrap();
    std::os::unix::fs::symlink(&outside_dir, outside_src.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside_file, outside_src.join("c.txt")).unwrap();
    let before = entries(&outside_src);

    let report = restore(
        &repo,
        &snap,
        &RestoreOptions {
            target: target.clone(),
            include: vec![],
        },
        Arc::new(Progress::default()),
    )
    .unwrap();

    assert!(
        entries(&outside_dir).is_empty(),
        "restore wrote through a planted symlink: {:?}",
        entries(&outside_dir)
    );
    assert_eq!(
        entries(&outside_src),
        before,
        "restore wrote outside the target"
    );
    assert_eq!(std::fs::read(&outside_file).unwrap(), b"precious\n");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for dir in [&restored, &restored.join("a"), &restored.join("a/b")] {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert!(meta.is_dir(), "{} is not a real folder", dir.display());
    }
    assert!(std::fs::symlink_metadata(restored.join("c.txt"))
        .unwrap()
        .is_file());
    assert_eq!(
        std::fs::read(restored.join("a/small.txt")).unwrap(),
        b"small\n"
    );
    assert_eq!(std::fs::read(restored.join("a/b/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(restored.join("a/empty")).unwrap(), b"");
    assert_eq!(std::fs::read(restored.join("c.txt")).unwrap(), b"top\n");
    assert_eq!(std::fs::read(restored.join("a/b/hard")).unwrap(), b"top\n");
    assert_eq!(
        std::fs::read_link(restored.join("a/link")).unwrap(),
        Path::new("small.txt")
    );
}
