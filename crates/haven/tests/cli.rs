//! The CLI end to end: every verb on a real repository, and bad input that must fail
//! cleanly (non-zero exit, one error line saying what to do) without writing anything.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// Regular files (hard links counted once per name) and their total size.
fn file_count_and_bytes(root: &Path) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for p in walk(root) {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_file() {
            n += 1;
            bytes += m.len();
        }
    }
    (n, bytes)
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn round_trip_backup_snapshots_ls_restore_check_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut files = make_tree(&src, 1, TreeSpec::SAMPLE);
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (nfiles, nbytes) = file_count_and_bytes(&src);
    assert!(nfiles > 250, "the sample tree is too small: {nfiles} files");

    // First backup, tagged.
    let exp1 = tmp.path().join("expected-1");
    copy_tree(&src, &exp1);
    let (id1, s1) = repo.backup(&[&src], &["--tag", "first", "--tag", "sample"]);
    assert_eq!(u(&s1, "files"), nfiles, "{s1}");
    assert_eq!(u(&s1, "files_unchanged"), 0, "{s1}");
    assert_eq!(u(&s1, "bytes_total"), nbytes, "{s1}");
    assert!(u(&s1, "bytes_added_raw") > 4 << 20, "{s1}");
    assert!(
        u(&s1, "bytes_added_stored") < u(&s1, "bytes_added_raw"),
        "compressible data and holes must shrink: {s1}"
    );

    // Second backup of the same tree: every file is skipped, nothing new is stored.
    let (id2, s2) = repo.backup(&[&src], &[]);
    assert_ne!(id1, id2);
    assert_eq!(u(&s2, "files_unchanged"), nfiles, "{s2}");
    assert_eq!(
        u(&s2, "bytes_read"),
        0,
        "unchanged files must not be read: {s2}"
    );
    // Nothing new is stored but, at most, the root tree: it holds /tmp's metadata, whose
    // mtime changes whenever another test creates a folder there.
    assert!(u(&s2, "blobs_added") <= 1, "{s2}");
    assert!(u(&s2, "bytes_added_raw") < 4096, "{s2}");

    // Change one file, add one: only those two are read.
    let mut rng = Rng::new(99);
    mutate_tree(&src, &mut files, &mut rng, 1, 1);
    let (nfiles3, nbytes3) = file_count_and_bytes(&src);
    assert_eq!(nfiles3, nfiles + 1);
    let (id3, s3) = repo.backup(&[&src], &[]);
    assert_eq!(u(&s3, "files"), nfiles3, "{s3}");
    assert_eq!(u(&s3, "files_unchanged"), nfiles - 1, "{s3}");
    assert_eq!(u(&s3, "bytes_total"), nbytes3, "{s3}");
    assert!(u(&s3, "bytes_added_raw") > 0, "{s3}");

    // snapshots --json: order, tags, paths, filters.
    let snaps = repo.snapshots();
    let ids: Vec<&str> = snaps.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id1.as_str(), id2.as_str(), id3.as_str()]);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["first", "sample"]));
    assert_eq!(snaps[1]["tags"], serde_json::json!([]));
    for v in &snaps {
        assert_eq!(v["paths"], serde_json::json!([s(&src)]));
    }
    let tagged = repo.run(&["snapshots", "--json", "--tag", "first"]);
    tagged.ok("snapshots --tag");
    let tagged = tagged.json();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"], id1.as_str());
    let text = repo.run(&["snapshots"]);
    text.ok("snapshots");
    for id in [&id1, &id2, &id3] {
        assert!(text.stdout.contains(&id[..8]), "{}", text.stdout);
    }

    // ls --json lists exactly the tree (and the folders above it).
    let ls = repo.run(&["ls", &id3, "--json"]);
    ls.ok("ls");
    let listed: BTreeSet<PathBuf> = ls
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .collect();
    let mut want: BTreeSet<PathBuf> = walk(&src).into_iter().collect();
    want.extend(
        src.ancestors()
            .filter(|a| *a != Path::new("/"))
            .map(Path::to_path_buf),
    );
    assert_eq!(listed, want, "ls does not list exactly the backed-up tree");
    let ls_sub = repo.run(&["ls", &id3, s(&src.join("special"))]);
    ls_sub.ok("ls PATH");
    assert!(ls_sub.stdout.contains("hard-b") && !ls_sub.stdout.contains("file0000"));

    // Full restores of the first and the last snapshot.
    repo.assert_restores(&id1, &src, &exp1);
    repo.assert_restores("latest", &src, &src);

    // Holes stay holes.
    let t = tempfile::tempdir().unwrap();
    repo.run(&["restore", &id3, "--target", s(t.path())])
        .ok("restore");
    let sparse = fs::metadata(restored_path(t.path(), &src).join("special/sparse.img")).unwrap();
    assert_eq!(sparse.len(), 32 << 20);
    assert!(
        sparse.blocks() * 512 < sparse.len() / 2,
        "the sparse file was restored with {} bytes allocated",
        sparse.blocks() * 512
    );

    // restore --include: only that subtree (and the folders leading to it).
    let t = tempfile::tempdir().unwrap();
    let inc = src.join("special");
    repo.run(&[
        "restore",
        &id3,
        "--target",
        s(t.path()),
        "--include",
        s(&inc),
    ])
    .ok("restore --include");
    assert_same_tree(&inc, &restored_path(t.path(), &inc));
    for p in walk(t.path()) {
        let snap_path = Path::new("/").join(p.strip_prefix(t.path()).unwrap());
        assert!(
            snap_path.starts_with(&inc) || inc.starts_with(&snap_path),
            "restore --include restored {} outside {}",
            snap_path.display(),
            inc.display()
        );
    }

    // check --read-data reads every byte.
    let check = repo.run(&["check", "--read-data"]);
    check.ok("check --read-data");
    assert!(
        check.stdout.contains("no problems found"),
        "{}",
        check.stdout
    );
    let check_json = repo.run(&["check", "--read-data", "--json"]);
    check_json.ok("check --read-data --json");
    let cj = check_json.json();
    assert_eq!(cj["problems"], serde_json::json!([]));
    assert_eq!(u(&cj, "snapshots"), 3);
    let packs = pack_files(&repo.path);
    assert_eq!(u(&cj, "packs"), packs.len() as u64);
    assert!(u(&cj, "blobs_read") > 0);

    // stats --json agrees with the folder and the summaries.
    let st = repo.run(&["stats", "--json"]);
    st.ok("stats --json");
    let st = st.json();
    assert_eq!(u(&st, "snapshots"), 3);
    assert_eq!(u(&st, "packs"), packs.len() as u64);
    let on_disk: u64 = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(u(&st, "stored_bytes"), on_disk);
    assert_eq!(
        u(&st, "restore_bytes"),
        u(&s1, "bytes_total") + u(&s2, "bytes_total") + u(&s3, "bytes_total")
    );
    assert!(u(&st, "blobs") > u(&st, "tree_blobs") && u(&st, "tree_blobs") > 0);
}

#[test]
fn stdin_backup_restores_byte_identical_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let mut rng = Rng::new(7);
    let mut data = Vec::with_capacity(21 << 20);
    while data.len() < 20 << 20 {
        let n = rng.range(1 << 10, 2 << 20) as usize;
        data.extend(rng.mixed_bytes(n));
        let zeros = rng.below(1 << 20);
        data.resize(data.len() + zeros, 0);
    }
    let out = repo.run_stdin(
        &["backup", "--stdin", "--stdin-name", "dump.sql", "--json"],
        &data,
    );
    out.ok("backup --stdin");
    let v = out.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        u(&v["snapshot"]["summary"], "bytes_total"),
        data.len() as u64
    );
    assert_eq!(v["snapshot"]["stdin_name"], "dump.sql");

    let restored = repo.run(&["restore", &id, "--stdout"]);
    restored.ok("restore --stdout");
    assert!(
        restored.stdout_bytes == data,
        "restore --stdout returned {} bytes that differ from the {} backed up",
        restored.stdout_bytes.len(),
        data.len()
    );
    // `latest` and --include name the same file.
    let again = repo.run(&["restore", "latest", "--stdout", "--include", "/dump.sql"]);
    again.ok("restore --stdout --include");
    assert!(again.stdout_bytes == data);
    repo.check_ok(true);
}

fn key_ids(repo: &Repo, env: &[(&str, &str)]) -> Vec<(String, String, bool)> {
    let out = repo.run_env(&["key", "list", "--json"], env);
    out.ok("key list --json");
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["kind"].as_str().unwrap().to_string(),
                k["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn key_add_list_remove_passwd_and_key_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 3, TreeSpec::SMALL);
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (id, _) = repo.backup(&[&src], &[]);
    let keys = key_ids(&repo, &[]);
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].1.as_str(), keys[0].2), ("passphrase", true));
    let first = keys[0].0.clone();

    // A second passphrase.
    let pw2 = tmp.path().join("pw2");
    fs::write(&pw2, "second passphrase\n").unwrap();
    let mut add = vec!["key", "add", "--new-password-file", s(&pw2)];
    add.extend_from_slice(&FAST_KDF);
    repo.run(&add).ok("key add --new-password-file");
    let second_env = [("HAVEN_PASSWORD", "second passphrase")];
    assert_eq!(key_ids(&repo, &second_env).len(), 2);
    repo.run_env(&["snapshots"], &second_env)
        .ok("opening with the added passphrase");

    // A key file: created 0600, opens the repository with --key-file.
    let kf = tmp.path().join("repo.key");
    let mut add = vec!["key", "add", "--new-key-file", s(&kf)];
    add.extend_from_slice(&FAST_KDF);
    repo.run(&add).ok("key add --new-key-file");
    let m = fs::metadata(&kf).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert!(m.len() >= 32);
    let wrong = [("HAVEN_PASSWORD", "not the passphrase")];
    let via_file = repo.run_env(&["--key-file", s(&kf), "key", "list", "--json"], &wrong);
    via_file.ok("key list --key-file");
    let listed = via_file.json();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "key-file").count(), 1);
    let current: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["kind"], "key-file");
    // Restoring through the key file works end to end.
    let t = tempfile::tempdir().unwrap();
    repo.run_env(
        &[
            "--key-file",
            s(&kf),
            "restore",
            &id,
            "--target",
            s(t.path()),
        ],
        &wrong,
    )
    .ok("restore --key-file");
    assert_same_tree(&src, &restored_path(t.path(), &src));
    // A file that exists already is never overwritten by --new-key-file.
    let before = fs::read(&kf).unwrap();
    let mut add = vec!["key", "add", "--new-key-file", s(&kf)];
    add.extend_from_slice(&FAST_KDF);
    repo.run(&add).assert_one_line_error(1, &["must not exist"]);
    assert_eq!(fs::read(&kf).unwrap(), before);
    assert_eq!(key_ids(&repo, &[]).len(), 3);

    // passwd replaces the slot in use: the old second passphrase stops working.
    let pw3 = tmp.path().join("pw3");
    fs::write(&pw3, "third passphrase").unwrap();
    let mut passwd = vec!["key", "passwd", "--new-password-file", s(&pw3)];
    passwd.extend_from_slice(&FAST_KDF);
    repo.run_env(&passwd, &second_env).ok("key passwd");
    repo.run_env(&["snapshots"], &second_env)
        .assert_one_line_error(1, &["wrong passphrase"]);
    let third_env = [("HAVEN_PASSWORD", "third passphrase")];
    let keys = key_ids(&repo, &third_env);
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().any(|k| k.0 == first));

    // remove: not the slot in use, not an unknown one; another one goes.
    let third_id = keys.iter().find(|k| k.2).unwrap().0.clone();
    repo.run_env(&["key", "remove", &third_id[..12]], &third_env)
        .assert_one_line_error(1, &["opened with", "another key"]);
    repo.run(&["key", "remove", "ffffffffffffffff"])
        .assert_one_line_error(1, &["no key slot", "key list"]);
    repo.run(&["key", "remove", &third_id[..12]])
        .ok("key remove");
    let keys = key_ids(&repo, &[]);
    assert_eq!(keys.len(), 2);
    assert!(!keys.iter().any(|k| k.0 == third_id));
    repo.run_env(&["snapshots"], &third_env)
        .assert_one_line_error(1, &["wrong passphrase"]);
    repo.run_env(&["--key-file", s(&kf), "snapshots"], &wrong)
        .ok("the key file still opens");
    repo.check_ok(false);
}

#[test]
fn forget_dry_run_keep_last_and_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut files = make_tree(&src, 4, TreeSpec::SMALL);
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let mut rng = Rng::new(4);
    let mut ids = vec![];
    for round in 0..4 {
        mutate_tree(&src, &mut files, &mut rng, 5, round);
        ids.push(repo.backup(&[&src], &[]).0);
    }
    let expected_last = tmp.path().join("expected-last");
    copy_tree(&src, &expected_last);

    // --dry-run: reports, removes nothing, writes nothing.
    let before = listing(&repo.path);
    let dry = repo.run(&["forget", "--keep-last", "1", "--dry-run"]);
    dry.ok("forget --dry-run");
    assert!(
        dry.stdout.contains("would remove 3 snapshot"),
        "{}",
        dry.stdout
    );
    assert_eq!(repo.snapshot_ids(), ids);
    // Only the lock folder's own mtime may change (a lock file came and went).
    let mut after = listing(&repo.path);
    after.insert("locks".into(), before[Path::new("locks")]);
    assert_unchanged(&before, &after, "forget --dry-run");

    // --keep-last 3 removes the oldest.
    let json = repo.run(&["forget", "--keep-last", "3", "--json"]);
    json.ok("forget --keep-last 3");
    let groups = json.json();
    assert_eq!(groups[0]["remove"], serde_json::json!([ids[0]]));
    assert_eq!(repo.snapshot_ids(), ids[1..]);

    // Forget by id, then --keep-last 1 --prune frees the data.
    repo.run(&["forget", &ids[1][..10]]).ok("forget ID");
    assert_eq!(repo.snapshot_ids(), ids[2..]);
    let stats = |r: &Repo| {
        let o = r.run(&["stats", "--json"]);
        o.ok("stats");
        o.json()
    };
    let st_before = stats(&repo);
    let pruned = repo.run(&["forget", "--keep-last", "1", "--prune"]);
    pruned.ok("forget --prune");
    assert!(pruned.stdout.contains("freed"), "{}", pruned.stdout);
    assert_eq!(repo.snapshot_ids(), ids[3..]);
    let st_after = stats(&repo);
    assert!(
        u(&st_after, "stored_bytes") < u(&st_before, "stored_bytes"),
        "prune freed nothing: {st_before} -> {st_after}"
    );
    assert!(u(&st_after, "blobs") < u(&st_before, "blobs"));
    repo.check_ok(true);
    repo.assert_restores(&ids[3], &src, &expected_last);

    // A second prune finds nothing left to do.
    let again = repo.run(&["prune", "--json"]);
    again.ok("prune");
    let again = again.json();
    assert_eq!(u(&again, "packs_deleted"), 0, "{again}");
    assert_eq!(u(&again, "blobs_removed"), 0, "{again}");
}

#[test]
fn unlock_removes_only_locks_of_dead_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let locks = repo.path.join("locks");

    // A live holder: a stdin backup waiting for input.
    let mut holder = KillOnDrop(Some(
        repo.command(&["backup", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_for("the backup's lock file", Duration::from_secs(30), || {
        files_in(&locks).len() == 1
    });
    let out = repo.run(&["unlock"]);
    out.ok("unlock");
    assert!(out.stdout.contains("removed 0 lock"), "{}", out.stdout);
    assert_eq!(files_in(&locks).len(), 1, "unlock removed a live lock");

    // kill -9: the lock stays behind, stale; check notes it; unlock removes it.
    assert_eq!(kill9(holder.child()), 137);
    assert_eq!(files_in(&locks).len(), 1);
    let check = repo.run(&["check"]);
    check.ok("check with a stale lock");
    assert!(check.stdout.contains("stale"), "{}", check.stdout);
    let out = repo.run(&["unlock"]);
    out.ok("unlock");
    assert!(out.stdout.contains("removed 1 lock"), "{}", out.stdout);
    assert!(files_in(&locks).is_empty());
    // A prune is not blocked afterwards.
    repo.run(&["prune"]).ok("prune after unlock");
}

/// Regression (lock.rs, `start_refresher`): a lock released before its refresher
/// thread began to wait lost the wake-up, and the command hung for the 5-minute
/// refresh interval after finishing its work. Quick commands must exit promptly.
#[test]
fn quick_commands_exit_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_snapshot(tmp.path());
    for i in 0..40 {
        let args: &[&str] = if i % 2 == 0 {
            &["snapshots"]
        } else {
            &["ls", "latest"]
        };
        run_to_end(repo.command(args), None, Duration::from_secs(20)).ok(&args.join(" "));
    }
}

// ---------------------------------------------------------------------------------
// Bad input: non-zero exit, one error line saying what to do, nothing written.

/// Commands that open a repository (each must fail the same way for bad input).
fn opening_commands(src: &Path, target: &Path, pwfile: &Path) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        v(&["snapshots"]),
        v(&["backup", s(src)]),
        v(&["restore", "latest", "--target", s(target)]),
        v(&["ls", "latest"]),
        v(&["check", "--read-data"]),
        v(&["forget", "--keep-last", "1"]),
        v(&["prune"]),
        v(&["stats"]),
        v(&["unlock", "--all"]),
        v(&["key", "list"]),
        v(&[
            "key",
            "add",
            "--new-password-file",
            s(pwfile),
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ]),
    ]
}

/// Run every opening command against `repo` with `env`; each must fail with one
/// error line containing `hints`, and neither the repository folder nor the restore
/// target may change.
fn assert_all_refused(repo_dir: &Path, env: &[(&str, &str)], hints: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 5, TreeSpec::SMALL);
    let target = tmp.path().join("target");
    let pwfile = tmp.path().join("pw");
    fs::write(&pwfile, "another passphrase").unwrap();
    let parent = repo_dir.parent().unwrap();
    let before = listing(parent);
    for args in opening_commands(&src, &target, &pwfile) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = haven(&args, env);
        let line = out.assert_one_line_error(1, hints);
        assert!(
            out.stdout.is_empty(),
            "`haven {}` printed on stdout: {}",
            args.join(" "),
            out.stdout
        );
        assert_unchanged(
            &before,
            &listing(parent),
            &format!("`haven {}` (which failed: {line})", args.join(" ")),
        );
        assert!(
            !target.exists(),
            "`haven {}` created the restore target",
            args.join(" ")
        );
    }
}

fn repo_with_snapshot(tmp: &Path) -> Repo {
    let src = tmp.join("src");
    make_tree(&src, 6, TreeSpec::SMALL);
    let repo = Repo::init(&tmp.join("repo"), &[]);
    repo.backup(&[&src], &[]);
    repo
}

#[test]
fn wrong_passphrase_fails_cleanly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_snapshot(tmp.path());
    let r = s(&repo.path);
    assert_all_refused(
        &repo.path,
        &[("HAVEN_REPOSITORY", r), ("HAVEN_PASSWORD", "wrong")],
        &["wrong passphrase", "haven key list"],
    );
    // A key file that opens no slot is refused the same way.
    let kf = tmp.path().join("bogus.key");
    fs::write(&kf, [7u8; 64]).unwrap();
    assert_all_refused(
        &repo.path,
        &[("HAVEN_REPOSITORY", r), ("HAVEN_KEY_FILE", s(&kf))],
        &["wrong passphrase or key file"],
    );
}

#[test]
fn missing_repository_fails_cleanly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("no-repo-here");
    assert_all_refused(
        &nowhere,
        &[
            ("HAVEN_REPOSITORY", s(&nowhere)),
            ("HAVEN_PASSWORD", PASSWORD),
        ],
        &["no haven repository", "haven init"],
    );
    assert!(!nowhere.exists());
    // An existing folder that is not a repository: the same, and it stays untouched.
    fs::create_dir(&nowhere).unwrap();
    fs::write(nowhere.join("notes.txt"), "not a repository").unwrap();
    assert_all_refused(
        &nowhere,
        &[
            ("HAVEN_REPOSITORY", s(&nowhere)),
            ("HAVEN_PASSWORD", PASSWORD),
        ],
        &["no haven repository", "haven init"],
    );
    // And no repository given at all.
    let out = haven(&["snapshots"], &[("HAVEN_PASSWORD", PASSWORD)]);
    out.assert_one_line_error(1, &["--repo", "HAVEN_REPOSITORY"]);
}

#[test]
fn newer_format_version_fails_cleanly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_snapshot(tmp.path());
    let marker = repo.path.join("haven-repository");
    let text = fs::read_to_string(&marker).unwrap();
    assert!(text.contains("format-version 1"), "marker: {text:?}");
    fs::write(
        &marker,
        text.replace("format-version 1", "format-version 99"),
    )
    .unwrap();
    assert_all_refused(
        &repo.path,
        &[
            ("HAVEN_REPOSITORY", s(&repo.path)),
            ("HAVEN_PASSWORD", PASSWORD),
        ],
        &["format version 99", "upgrade haven"],
    );
    // init refuses too: a repository is there.
    let before = listing(&repo.path);
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    repo.run(&init).assert_one_line_error(1, &["exists"]);
    assert_unchanged(&before, &listing(&repo.path), "init over a repository");
}

#[test]
fn invalid_forget_policy_is_a_usage_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_snapshot(tmp.path());
    let before = listing(&repo.path);
    for args in [
        vec!["forget", "--keep-daily", "abc"],
        vec!["forget", "--keep-last", "-1"],
        vec!["forget", "--keep-within", "soon"],
        vec!["--lock-wait", "forever", "prune"],
    ] {
        let out = repo.run(&args);
        out.assert_one_line_error(2, &["--help"]);
        assert_eq!(
            listing(&repo.path),
            before,
            "{args:?} changed the repository"
        );
    }
    // Valid syntax but nothing to do, or contradictory: refused before opening.
    repo.run(&["forget"])
        .assert_one_line_error(1, &["--keep-daily"]);
    repo.run(&["forget", "--keep-last", "1", "0123abcd"])
        .assert_one_line_error(1, &["either"]);
    assert_unchanged(&before, &listing(&repo.path), "refused forget");
    assert_eq!(repo.snapshot_ids().len(), 1);
}

#[test]
fn init_into_a_non_empty_folder_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    make_tree(&dir, 8, TreeSpec::SMALL);
    let before = listing(&dir);
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    let out = haven(
        &init,
        &[("HAVEN_REPOSITORY", s(&dir)), ("HAVEN_PASSWORD", PASSWORD)],
    );
    out.assert_one_line_error(1, &["not empty", "choose a new or empty folder"]);
    assert_unchanged(&before, &listing(&dir), "init into a non-empty folder");
    // An empty folder is fine.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    haven(
        &init,
        &[
            ("HAVEN_REPOSITORY", s(&empty)),
            ("HAVEN_PASSWORD", PASSWORD),
        ],
    )
    .ok("init into an empty folder");
    assert!(empty.join("haven-repository").is_file());
}
