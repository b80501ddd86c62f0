//! A repository on a full disk: the backup that does not fit fails with a clear
//! message, and what was stored before stays intact and restorable.
//!
//! Needs root (it mounts a small tmpfs); without it the test fails and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs root and `mount`: running mount failed: {e}")
            });
        assert!(
            out.status.success(),
            "this test needs root to mount a tmpfs (run the suite as root): mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a process still inside): detach it so the mount does not leak.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn backup_onto_a_full_disk_fails_cleanly_and_keeps_the_repository_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "24m");
    let repo = Repo::init(&mnt.dir.join("repo"), &["--pack-size-mib", "1"]);

    let small = tmp.path().join("small");
    make_tree(
        &small,
        51,
        TreeSpec {
            files: 100,
            max_file: 64 << 10,
            big_random: 3 << 20,
            big_text: 2 << 20,
            specials: true,
            sparse_size: 4 << 20,
        },
    );
    let (first, _) = repo.backup(&[&small], &[]);
    let free = mnt.free_bytes();
    assert!(
        free > 8 << 20,
        "the first backup should leave room: {free} bytes free"
    );

    // More incompressible data than there is room for.
    let big = tmp.path().join("big");
    let mut rng = Rng::new(52);
    for i in 0..10 {
        let data = rng.random_bytes(4 << 20);
        write_file(&big.join(format!("f{i}.bin")), &data, 0o644, fixed_mtime(i));
    }
    let snapshots_before = repo.snapshot_ids();
    let out = repo.run(&["backup", big.to_str().unwrap()]);
    let line = out.assert_error_after_warnings(1, &["no space", "free space"]);
    eprintln!("the failed backup said: {line}");
    assert_eq!(
        repo.snapshot_ids(),
        snapshots_before,
        "a failed backup wrote a snapshot"
    );
    eprintln!("{} bytes free after the failed backup", mnt.free_bytes());

    // Without freeing anything: the repository checks clean and restores.
    repo.check_ok(true);
    repo.assert_restores(&first, &small, &small);
}

/// Fill the device to the last byte, then read: snapshots, check, restore. Read-only
/// commands cannot write their lock file there; they must warn and still work (a
/// regression test: they used to fail with "no space").
#[test]
fn reading_a_repository_on_a_completely_full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "16m");
    let repo = Repo::init(&mnt.dir.join("repo"), &[]);
    let src = tmp.path().join("src");
    make_tree(&src, 53, TreeSpec::SMALL);
    let (id, _) = repo.backup(&[&src], &[]);
    // A filler file takes every free byte.
    let filler = mnt.dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x55u8; 64 << 10];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
    }
    let mut small = vec![0x55u8; 512];
    while !small.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&filler)
            .unwrap();
        if f.write_all(&small).is_err() {
            small.truncate(small.len() / 2);
        }
    }
    assert_eq!(mnt.free_bytes(), 0, "the disk is not full");
    let out = repo.run(&["snapshots"]);
    out.ok("snapshots on a full disk");
    repo.check_ok(true);
    repo.assert_restores(&id, &src, &src);
}
