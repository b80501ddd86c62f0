//! Regression tests for issue 10's backup-path and small user-facing defects, one per
//! defect, each named after what it guards. They run the real `haven` binary.
//!
//! Some need root (as the rest of the suite does): they mount a small tmpfs or a
//! read-only bind mount, create device nodes, or run `haven` as the `nobody` user.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// Run `haven args` for `repo` in the working directory `cwd`.
fn run_in(repo: &Repo, cwd: &Path, args: &[&str]) -> Out {
    let mut cmd = repo.command(args);
    cmd.current_dir(cwd);
    run_to_end(cmd, None, RUN_LIMIT)
}

/// A mount point, unmounted on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn run(args: &[&str]) {
        let out = Command::new("mount")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("this test needs root and `mount`: {e}"));
        assert!(
            out.status.success(),
            "this test needs root (mount {args:?} failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    fn tmpfs(dir: &Path, size: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        Self::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            s(dir),
        ]);
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    /// `src` visible read-only at `dir`.
    fn read_only_bind(src: &Path, dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        Self::run(&["--bind", s(src), s(dir)]);
        let m = Mount {
            dir: dir.to_path_buf(),
        };
        Self::run(&["-o", "remount,bind,ro", s(dir)]);
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// `<tmp>/data/d1` with three files, and an empty `<tmp>/x/y` to run from.
fn dotdot_layout(tmp: &Path) -> PathBuf {
    let d1 = tmp.join("data/d1");
    fs::create_dir_all(d1.join("sub")).unwrap();
    fs::write(d1.join("a.txt"), b"alpha\n").unwrap();
    fs::write(d1.join("b.txt"), b"bravo bravo\n").unwrap();
    fs::write(d1.join("sub/c.txt"), b"charlie\n").unwrap();
    fs::create_dir_all(tmp.join("x/y")).unwrap();
    d1
}

fn summary_of(out: &Out) -> Value {
    out.json()["snapshot"]["summary"].clone()
}

fn paths_of(out: &Out) -> Value {
    out.json()["snapshot"]["paths"].clone()
}

// ---------------------------------------------------------------------------------
// Item 1: backup paths with `..`

#[test]
fn backup_relative_path_with_dotdot_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = fs::canonicalize(tmp.path()).unwrap();
    let d1 = dotdot_layout(&tmp);
    let repo = Repo::init(&tmp.join("repo"), &[]);
    let out = run_in(
        &repo,
        &tmp.join("x/y"),
        &["backup", "--json", "../../data/d1"],
    );
    out.ok("backup ../../data/d1");
    assert_eq!(summary_of(&out)["files"], 3, "{}", out.stdout);
    assert_eq!(paths_of(&out), serde_json::json!([s(&d1)]));
    repo.assert_restores("latest", &d1, &d1);
}

#[test]
fn backup_absolute_path_with_dotdot_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = fs::canonicalize(tmp.path()).unwrap();
    let d1 = dotdot_layout(&tmp);
    let repo = Repo::init(&tmp.join("repo"), &[]);
    let given = tmp.join("x/y/../../data/./d1");
    let out = repo.run(&["backup", "--json", s(&given)]);
    out.ok("backup /abs/x/y/../../data/d1");
    assert_eq!(summary_of(&out)["files"], 3, "{}", out.stdout);
    assert_eq!(paths_of(&out), serde_json::json!([s(&d1)]));
    repo.assert_restores("latest", &d1, &d1);
}

#[test]
fn backup_single_file_path_with_dotdot_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = fs::canonicalize(tmp.path()).unwrap();
    let d1 = dotdot_layout(&tmp);
    let repo = Repo::init(&tmp.join("repo"), &[]);
    let out = run_in(
        &repo,
        &tmp.join("x/y"),
        &["backup", "--json", "../../data/d1/sub/../b.txt"],
    );
    out.ok("backup ../../data/d1/sub/../b.txt");
    assert_eq!(summary_of(&out)["files"], 1, "{}", out.stdout);
    let file = d1.join("b.txt");
    assert_eq!(paths_of(&out), serde_json::json!([s(&file)]));
    let t = tempfile::tempdir().unwrap();
    repo.run(&["restore", "latest", "--target", s(t.path())])
        .ok("restore");
    assert_eq!(
        fs::read(restored_path(t.path(), &file)).unwrap(),
        b"bravo bravo\n"
    );
}

/// `..` after a symlinked folder means the link target's parent, as for every other
/// program (the kernel resolves it), not the lexical parent.
#[test]
fn backup_path_with_dotdot_after_a_symlink_follows_the_link_like_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = fs::canonicalize(tmp.path()).unwrap();
    let d1 = dotdot_layout(&tmp);
    fs::create_dir_all(tmp.join("elsewhere/deep")).unwrap();
    // `<tmp>/link/../d1` is `<tmp>/data/d1` for the kernel; lexically `<tmp>/d1`,
    // which holds something else.
    std::os::unix::fs::symlink(tmp.join("data/sub-of-data"), tmp.join("link")).unwrap();
    fs::create_dir_all(tmp.join("data/sub-of-data")).unwrap();
    fs::create_dir_all(tmp.join("d1")).unwrap();
    fs::write(tmp.join("d1/decoy.txt"), b"not this one").unwrap();
    let repo = Repo::init(&tmp.join("repo"), &[]);
    let out = repo.run(&["backup", "--json", s(&tmp.join("link/../d1"))]);
    out.ok("backup link/../d1");
    assert_eq!(paths_of(&out), serde_json::json!([s(&d1)]));
    assert_eq!(summary_of(&out)["files"], 3, "{}", out.stdout);
}

// ---------------------------------------------------------------------------------
// Item 18a: the summary counts only files saved

#[test]
fn backup_summary_does_not_count_skipped_files_as_saved() {
    let tmp = tempfile::tempdir().unwrap();
    // `nobody` runs haven here: it must reach the folder, the repository and the files.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for (name, mode) in [("ok-1", 0o644), ("ok-2", 0o644), ("secret", 0o000)] {
        fs::write(src.join(name), name.repeat(100)).unwrap();
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let repo = Repo::at(&tmp.path().join("repo"));
    let as_nobody = |args: &[&str]| {
        let mut cmd = repo.command(args);
        cmd.uid(65534).gid(65534);
        run_to_end(cmd, None, RUN_LIMIT)
    };
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    as_nobody(&init).ok("init as nobody");
    let out = as_nobody(&["backup", "--json", s(&src)]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("secret"), "{}", out.stderr);
    let summary = summary_of(&out);
    assert_eq!(
        summary["files"], 2,
        "the unreadable file counted: {summary}"
    );
    assert_eq!(summary["bytes_total"], 800, "{summary}");
    assert_eq!(summary["warnings"], 1, "{summary}");
}

// ---------------------------------------------------------------------------------
// Item 18b: a restore onto a full disk says so

#[test]
fn restore_to_a_full_disk_says_the_disk_is_full_and_counts_only_restored_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(18);
    for i in 0..4 {
        fs::write(src.join(format!("big-{i}")), rng.random_bytes(3 << 20)).unwrap();
    }
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let mnt = Mount::tmpfs(&tmp.path().join("mnt"), "5m");
    let out = repo.run(&["restore", "latest", "--target", s(&mnt.dir)]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("full") && lower.contains("free space"),
        "the restore does not say the target disk is full: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("check --read-data"),
        "a full target disk is no reason to check the repository: {}",
        out.stderr
    );
    // The byte count is what was restored, not what was read from the repository.
    for entry in fs::read_dir(&mnt.dir).unwrap() {
        fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let json = repo.run(&["restore", "latest", "--json", "--target", s(&mnt.dir)]);
    assert_eq!(json.code, 3, "{}", json.stderr);
    let report = &json.json()["report"];
    let on_disk: u64 = walk(&mnt.dir)
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert_eq!(report["bytes"], on_disk, "{report}");
    assert!(on_disk < 12 << 20);
}

// ---------------------------------------------------------------------------------
// Item 18c: a read-only repository

#[test]
fn read_only_repository_error_mentions_no_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    repo.backup(&[&src], &[]);
    let ro = Mount::read_only_bind(&repo.path, &tmp.path().join("ro"));
    let ro_repo = Repo::at(&ro.dir);
    let out = ro_repo.run(&["snapshots"]);
    out.assert_one_line_error(1, &["read-only", "--no-lock"]);
    let out = ro_repo.run(&["snapshots", "--no-lock", "--json"]);
    out.ok("snapshots --no-lock on a read-only repository");
    assert_eq!(out.json().as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------
// Item 18d: OS errors printed once

#[test]
fn os_error_is_printed_once_in_an_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a-file"), b"").unwrap();
    let repo = Repo::at(&tmp.path().join("a-file/repo"));
    let out = repo.run(&["snapshots"]);
    let line = out.assert_one_line_error(1, &["not a directory"]);
    assert_eq!(
        line.matches("os error 20").count(),
        1,
        "the OS error is repeated: {line}"
    );
}

// ---------------------------------------------------------------------------------
// Item 18e: --stdin-name must be a restorable file name

#[test]
fn stdin_name_that_cannot_be_restored_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    for name in [".", "..", "", "a/b", "/etc"] {
        let out = repo.run_stdin(&["backup", "--stdin", "--stdin-name", name], b"payload");
        out.assert_one_line_error(1, &["--stdin-name"]);
    }
    assert!(repo.snapshots().is_empty(), "a snapshot was written");
}

// ---------------------------------------------------------------------------------
// Item 18f: special files on restore

#[test]
fn restore_recreates_fifos_and_devices_and_names_sockets_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("plain"), b"x").unwrap();
    let st = Command::new("mkfifo")
        .args(["-m", "0640"])
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("mknod")
        .args(["-m", "0600"])
        .arg(src.join("null-dev"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "this test needs root to create a device node");
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (without_socket, _) = repo.backup(&[&src], &[]);

    let t = tempfile::tempdir().unwrap();
    let out = repo.run(&["restore", &without_socket, "--target", s(t.path())]);
    out.ok("restore of a fifo and a device");
    let back = restored_path(t.path(), &src);
    let fifo = fs::symlink_metadata(back.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{:?}", fifo.file_type());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    let dev = fs::symlink_metadata(back.join("null-dev")).unwrap();
    assert!(dev.file_type().is_char_device(), "{:?}", dev.file_type());
    assert_eq!(
        dev.rdev(),
        fs::metadata(src.join("null-dev")).unwrap().rdev()
    );
    assert_eq!(dev.mode() & 0o7777, 0o600);

    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let (with_socket, _) = repo.backup(&[&src], &[]);
    let t = tempfile::tempdir().unwrap();
    let out = repo.run(&["restore", &with_socket, "--target", s(t.path())]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let sock = restored_path(t.path(), &src.join("sock"));
    assert!(
        out.stderr.contains(s(&sock)) && out.stderr.to_lowercase().contains("socket"),
        "the skipped socket is not named: {}",
        out.stderr
    );
    assert!(restored_path(t.path(), &src.join("plain")).is_file());
}

// ---------------------------------------------------------------------------------
// Item 18g: a damaged lock file

#[test]
fn damaged_lock_file_is_noted_by_check_not_blocking_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    repo.backup(&[&src], &[]);
    let name = "ab".repeat(32);
    fs::write(repo.path.join("locks").join(&name), b"garbage, not a lock").unwrap();
    let out = repo.run(&["check"]);
    out.ok("check beside a damaged lock file");
    assert!(
        out.stdout.contains(&name[..8]) && out.stdout.contains("no problems found"),
        "check does not note the damaged lock: {}\n{}",
        out.stdout,
        out.stderr
    );
    // Writers still treat it as a conflict (FORMAT.md 16.4).
    let out = repo.run(&["backup", s(&src)]);
    out.assert_error_after_warnings(1, &[&name[..8]]);
}

// ---------------------------------------------------------------------------------
// Item 18h: the marker file deleted

#[test]
fn missing_marker_is_reported_as_such_not_as_no_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let marker = repo.path.join("haven-repository");
    let text = fs::read(&marker).unwrap();
    fs::remove_file(&marker).unwrap();
    let line = repo
        .run(&["snapshots"])
        .assert_one_line_error(1, &["marker", "haven-repository"]);
    assert!(!line.contains("haven init"), "advises init: {line}");
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    let line = repo
        .run(&init)
        .assert_one_line_error(1, &["marker", "haven-repository"]);
    assert!(!line.contains("not empty"), "{line}");
    // The advice works: the marker as the error describes it restores access.
    assert!(line.contains("format-version 1"), "{line}");
    fs::write(&marker, &text).unwrap();
    repo.run(&["snapshots"])
        .ok("snapshots with the marker back");
}

// ---------------------------------------------------------------------------------
// Item 18i: forget with a policy that keeps nothing

#[test]
fn forget_policy_keeping_nothing_needs_keep_none() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    repo.backup(&[&src], &[]);
    repo.backup(&[&src], &[]);
    for policy in [
        &["--keep-last", "0"][..],
        &["--keep-daily", "0", "--keep-last", "0"],
        &["--keep-within", "0d"],
    ] {
        let mut args = vec!["forget"];
        args.extend_from_slice(policy);
        repo.run(&args)
            .assert_one_line_error(1, &["keeps no snapshot", "--keep-none"]);
        assert_eq!(repo.snapshots().len(), 2, "{policy:?} removed snapshots");
    }
    repo.run(&["forget", "--keep-none", "--keep-last", "1"])
        .assert_one_line_error(1, &["--keep-none"]);
    assert_eq!(repo.snapshots().len(), 2);
    repo.run(&["forget", "--keep-last", "1"])
        .ok("forget --keep-last 1");
    assert_eq!(repo.snapshots().len(), 1);
    repo.run(&["forget", "--keep-none"])
        .ok("forget --keep-none");
    assert!(repo.snapshots().is_empty());
}
