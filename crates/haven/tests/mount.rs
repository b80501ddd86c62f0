//! `haven mount`, mounted for real through the kernel's FUSE: every file of two
//! snapshots compared with `cmp` against its source, metadata, symlinks, hard links and
//! extended attributes as recorded, `latest` and the time, host and tag folders, a
//! snapshot made while mounted appearing, writes refused with EROFS, memory bounded by
//! the cache while a file four times the cache is read, and unmounting on a signal
//! while a file is open (the folder is free at once, the open file stays readable, the
//! command ends when it is closed).
//!
//! Needs /dev/fuse and root (as CI runs); scripts/test.sh installs fuse3 and attr.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::*;

const BIG: usize = 24 << 20;
const CACHE: &str = "6MiB";

/// A running `haven mount --json`, killed (and the folder detached) if the test fails.
struct Mounted {
    child: KillOnDrop,
    stdout: BufReader<ChildStdout>,
    at: PathBuf,
}

impl Mounted {
    #[track_caller]
    fn start(repo: &Repo, at: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(at).unwrap();
        let mut args = vec!["mount", "--json", at.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut child = repo.command(&args);
        child.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = child.spawn().expect("spawning haven mount");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Readiness: the command says so once the kernel has the mount.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("haven mount did not report a mount ({e}): {line:?}"));
        assert_eq!(event["event"], "mounted", "{event}");
        assert!(
            is_mounted(at),
            "{} is not in /proc/self/mountinfo",
            at.display()
        );
        Mounted {
            child: KillOnDrop(Some(child)),
            stdout,
            at: at.to_path_buf(),
        }
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.child.child().id().to_string();
        let ok = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// Wait for the command to end; its exit code and its last stdout line.
    fn wait(mut self) -> (i32, Value) {
        let mut child: Child = self.child.take();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let code = exit_code(child.wait().unwrap());
        let last = rest.lines().last().unwrap_or("null");
        (code, serde_json::from_str(last).unwrap_or(Value::Null))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.0.is_some() && is_mounted(&self.at) {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn is_mounted(at: &Path) -> bool {
    let at = std::path::absolute(at).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(at.to_str().unwrap()))
}

fn cmp(a: &Path, b: &Path) {
    let out = Command::new("cmp")
        .arg(a)
        .arg(b)
        .output()
        .expect("running cmp");
    assert!(
        out.status.success(),
        "cmp {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the source path `p` is inside a snapshot's folder.
fn inside(snapshot_folder: &Path, p: &Path) -> PathBuf {
    restored_path(snapshot_folder, p)
}

/// Every entry below `src` is at its place in `folder` with the same kind, mode,
/// owner, size, mtime, symlink target and bytes (`cmp`); hard links share an inode.
#[track_caller]
fn assert_same_tree(src: &Path, folder: &Path) {
    let mut compared = 0;
    let mut inodes = std::collections::HashMap::new();
    for p in walk(src) {
        let m = fs::symlink_metadata(&p).unwrap();
        let q = inside(folder, &p);
        let n = fs::symlink_metadata(&q).unwrap_or_else(|e| panic!("{}: {e}", q.display()));
        assert_eq!(m.file_type(), n.file_type(), "{}", q.display());
        assert_eq!(m.mode() & 0o7777, n.mode() & 0o7777, "{}", q.display());
        assert_eq!((m.uid(), m.gid()), (n.uid(), n.gid()), "{}", q.display());
        if m.is_dir() {
            continue;
        }
        assert_eq!(m.mtime(), n.mtime(), "{}", q.display());
        assert_eq!(m.mtime_nsec(), n.mtime_nsec(), "{}", q.display());
        if m.file_type().is_symlink() {
            assert_eq!(fs::read_link(&p).unwrap(), fs::read_link(&q).unwrap());
        } else if m.is_file() {
            assert_eq!(m.len(), n.len(), "{}", q.display());
            cmp(&p, &q);
            compared += 1;
            if m.nlink() > 1 {
                let seen = inodes.entry(m.ino()).or_insert(n.ino());
                assert_eq!(
                    *seen,
                    n.ino(),
                    "hard links of {} share one inode",
                    p.display()
                );
            }
        }
    }
    assert!(compared > 100, "only {compared} files compared");
}

fn names(folder: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn peak_memory_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sample_tree(root: &Path, seed: u64) {
    let spec = TreeSpec {
        big_random: BIG,
        ..TreeSpec::SAMPLE
    };
    make_tree(root, seed, spec);
    let tagged = root.join("tagged.txt");
    fs::write(&tagged, "an attribute rides along").unwrap();
    let out = Command::new("setfattr")
        .args(["-n", "user.origin", "-v", "scanner-7"])
        .arg(&tagged)
        .output()
        .expect("setfattr (Debian package attr)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_file_of_two_snapshots_reads_back_through_the_mount() {
    let seed = test_seed("mount");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let first = dir.path().join("first");
    sample_tree(&src, seed);
    let repo = Repo::init(&dir.path().join("repo"), &[]);
    let (id1, _) = repo.backup(&[&src], &["--tag", "nightly"]);
    // The first state, to compare the first snapshot with later.
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut rng = Rng::new(seed ^ 1);
    fs::write(src.join("new.bin"), rng.mixed_bytes(300_000)).unwrap();
    fs::write(src.join("tagged.txt"), "changed on day two").unwrap();
    let (id2, _) = repo.backup(&[&src], &["--tag", "release"]);

    let mp = dir.path().join("mnt");
    let mut m = Mounted::start(&repo, &mp, &["--cache-size", CACHE]);
    assert_eq!(names(&mp), ["hosts", "ids", "snapshots", "tags"]);
    let ids = names(&mp.join("ids"));
    assert_eq!(ids, {
        let mut v = vec![id1[..8].to_string(), id2[..8].to_string()];
        v.sort();
        v
    });

    // A big file read through: memory stays near the cache, not the file's size.
    let big = walk(&src)
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.len() == BIG as u64))
        .expect("the big file");
    let pid = m.child.child().id();
    let before = peak_memory_kib(pid);
    cmp(&big, &inside(&mp.join("ids").join(&id2[..8]), &big));
    let after = peak_memory_kib(pid);
    eprintln!(
        "peak memory of haven mount: {before} KiB before reading {BIG} bytes, {after} KiB after"
    );
    assert!(
        after < before + (BIG as u64 / 1024) / 2,
        "reading a {BIG}-byte file raised peak memory from {before} KiB to {after} KiB with a {CACHE} cache"
    );

    // Snapshot 2 by id: the source as it is now. Snapshot 1: the first state.
    assert_same_tree(&src, &mp.join("ids").join(&id2[..8]));
    let one = mp.join("ids").join(&id1[..8]);
    for p in walk(&first)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
    {
        let rel = p.strip_prefix(&first).unwrap();
        cmp(&p, &inside(&one, &src.join(rel)));
    }
    assert!(!inside(&one, &src.join("new.bin")).exists());

    // By time: two folders and `latest`, pointing at the newest.
    let times = names(&mp.join("snapshots"));
    assert_eq!(times.len(), 3, "{times:?}");
    let latest = fs::read_link(mp.join("snapshots/latest")).unwrap();
    assert_eq!(latest.to_str().unwrap(), times[1]);
    cmp(
        &src.join("new.bin"),
        &inside(&mp.join("snapshots/latest"), &src.join("new.bin")),
    );
    // By tag and by host.
    assert_eq!(names(&mp.join("tags")), ["nightly", "release"]);
    let nightly = mp.join("tags/nightly/latest");
    cmp(
        &first.join("tagged.txt"),
        &inside(&nightly, &src.join("tagged.txt")),
    );
    let hosts = names(&mp.join("hosts"));
    assert_eq!(hosts.len(), 1);
    assert_eq!(names(&mp.join("hosts").join(&hosts[0])).len(), 3);

    // Extended attributes as recorded.
    let tagged = inside(&mp.join("ids").join(&id2[..8]), &src.join("tagged.txt"));
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.origin"])
        .arg(&tagged)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "scanner-7");

    // Nothing can be written.
    let erofs = |r: std::io::Result<()>| r.unwrap_err().raw_os_error() == Some(EROFS);
    assert!(erofs(fs::write(tagged.parent().unwrap().join("x"), "no")));
    assert!(erofs(
        fs::OpenOptions::new()
            .append(true)
            .open(&tagged)
            .map(|_| ())
    ));
    assert!(erofs(fs::remove_file(&tagged)));

    // A snapshot made while mounted appears.
    let (id3, _) = repo.backup(&[&src], &[]);
    wait_for("the new snapshot in ids/", Duration::from_secs(30), || {
        names(&mp.join("ids")).contains(&id3[..8].to_string())
    });

    m.signal("-INT");
    let (code, last) = m.wait();
    assert_eq!(code, 0);
    assert_eq!(last["event"], "unmounted");
    assert!(!is_mounted(&mp));
    assert!(names(&mp).is_empty());
}

/// errno of a write to a read-only filesystem.
const EROFS: i32 = 30;

#[test]
fn a_signal_unmounts_at_once_while_an_open_file_stays_readable() {
    let seed = test_seed("mount-open");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(
        &src,
        seed,
        TreeSpec {
            big_random: 4 << 20,
            ..TreeSpec::SMALL
        },
    );
    let repo = Repo::init(&dir.path().join("repo"), &[]);
    let (id, _) = repo.backup(&[&src], &[]);
    let mp = dir.path().join("mnt");
    let mut m = Mounted::start(&repo, &mp, &[]);

    let big = walk(&src)
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.len() == 4 << 20))
        .unwrap();
    let mut open = fs::File::open(inside(&mp.join("ids").join(&id[..8]), &big)).unwrap();
    let mut head = vec![0; 1000];
    open.read_exact(&mut head).unwrap();

    m.signal("-TERM");
    wait_for("the mount to be detached", Duration::from_secs(30), || {
        !is_mounted(&mp)
    });
    assert!(names(&mp).is_empty(), "the folder is free");
    assert!(
        m.child.child().try_wait().unwrap().is_none(),
        "still serving the open file"
    );
    // The open file reads on, from anywhere.
    let mut whole = head;
    open.read_to_end(&mut whole).unwrap();
    assert_eq!(whole, fs::read(&big).unwrap());
    open.seek(SeekFrom::Start(12345)).unwrap();
    let mut piece = vec![0; 100];
    open.read_exact(&mut piece).unwrap();
    assert_eq!(piece, whole[12345..12445]);
    drop(open);

    let (code, last) = m.wait();
    assert_eq!(code, 0);
    assert_eq!(last["event"], "unmounted");
}

#[test]
fn an_unmount_from_outside_ends_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    let repo = Repo::init(&dir.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let mp = dir.path().join("mnt");
    let m = Mounted::start(&repo, &mp, &[]);
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .expect("fusermount3 (fuse3)");
    assert!(status.success());
    let (code, last) = m.wait();
    assert_eq!((code, &last["event"]), (0, &Value::from("unmounted")));
}

#[test]
fn a_bad_mount_point_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("repo"), &[]);
    let full = dir.path().join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("f"), "").unwrap();
    repo.run(&["mount", full.to_str().unwrap()])
        .assert_one_line_error(1, &["not empty", "empty folder"]);
    let missing = dir.path().join("missing");
    repo.run(&["mount", missing.to_str().unwrap()])
        .assert_one_line_error(1, &["missing", "create an empty folder"]);
    assert!(!is_mounted(&full));
}
