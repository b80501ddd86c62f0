//! `haven copy`: snapshots copied between repositories with different keys keep their
//! ids and metadata, restore byte-identical, copy incrementally and resume after a
//! `kill -9`.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

const OTHER_PASSWORD: &str = "a different destination passphrase";

/// A second repository with its own passphrase (so its own master key).
fn init_other(path: &Path, extra: &[&str]) -> Repo {
    let repo = Repo {
        path: path.to_path_buf(),
        password: OTHER_PASSWORD.to_string(),
    };
    let mut args = vec!["init"];
    args.extend_from_slice(&FAST_KDF);
    args.extend_from_slice(extra);
    repo.run(&args).ok("init destination");
    repo
}

fn copy_args<'a>(src: &'a Repo, dst: &'a Repo, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "copy",
        "--json",
        "--from-repo",
        src.path.to_str().unwrap(),
        "--to-repo",
        dst.path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// `copy --json` from `src` to `dst` (destination secret from HAVEN_TO_PASSWORD).
#[track_caller]
fn copy(src: &Repo, dst: &Repo, extra: &[&str]) -> Value {
    let out = src.run_env(
        &copy_args(src, dst, extra),
        &[("HAVEN_TO_PASSWORD", dst.password.as_str())],
    );
    out.ok("copy");
    out.json()
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("copy --json has {field}: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Snapshot listing without the root tree id (which differs: other key, other ids).
fn metadata(repo: &Repo) -> Vec<Value> {
    repo.snapshots()
        .into_iter()
        .map(|mut s| {
            s.as_object_mut().unwrap().remove("tree");
            s
        })
        .collect()
}

/// Bytes of every file in a repository except locks.
fn repo_size(repo: &Path) -> u64 {
    walk(repo)
        .iter()
        .filter(|p| !p.starts_with(repo.join("locks")))
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn copies_with_other_key_keeping_ids_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut files = make_tree(&data, test_seed("copy-basic"), TreeSpec::SMALL);
    let src = Repo::init(&tmp.path().join("src"), &[]);
    let dst = init_other(&tmp.path().join("dst"), &[]);
    let mut rng = Rng::new(5);
    let mut expected = vec![];
    for round in 0..3u64 {
        let tag = format!("t{round}");
        let (id, _) = src.backup(&[&data], &["--tag", &tag]);
        let copy_dir = tmp.path().join(format!("expected{round}"));
        copy_tree(&data, &copy_dir);
        expected.push((id, copy_dir));
        mutate_tree(&data, &mut files, &mut rng, 5, round);
    }

    let v = copy(&src, &dst, &[]);
    assert_eq!(ids(&v, "copied").len(), 3, "{v}");
    assert!(v["bytes_added_raw"].as_u64().unwrap() > 0);
    assert_eq!(src.snapshot_ids(), dst.snapshot_ids());
    assert_eq!(metadata(&src), metadata(&dst));
    for (id, dir) in &expected {
        dst.assert_restores(id, &data, dir);
    }
    dst.check_ok(true);

    // Nothing new: nothing copied, nothing written.
    let size = repo_size(&dst.path);
    let v = copy(&src, &dst, &[]);
    assert!(ids(&v, "copied").is_empty(), "{v}");
    assert_eq!(ids(&v, "skipped").len(), 3, "{v}");
    assert_eq!(v["bytes_added_raw"].as_u64(), Some(0));
    assert_eq!(repo_size(&dst.path), size);

    // A fourth snapshot: only it is copied.
    mutate_tree(&data, &mut files, &mut rng, 5, 3);
    let (fourth, _) = src.backup(&[&data], &[]);
    let v = copy(&src, &dst, &[]);
    assert_eq!(ids(&v, "copied"), vec![fourth.clone()], "{v}");
    assert_eq!(metadata(&src), metadata(&dst));
    dst.assert_restores(&fourth, &data, &data);
    dst.check_ok(true);
}

#[test]
fn filters_select_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut files = make_tree(&data, test_seed("copy-filters"), TreeSpec::SMALL);
    let src = Repo::init(&tmp.path().join("src"), &[]);
    let mut rng = Rng::new(9);
    let mut made = vec![];
    for (round, tag) in ["a", "b", "a", "c"].iter().enumerate() {
        let (id, _) = src.backup(&[&data], &["--tag", tag]);
        made.push(id);
        mutate_tree(&data, &mut files, &mut rng, 3, round as u64);
    }

    let dst = init_other(&tmp.path().join("latest"), &[]);
    let v = copy(&src, &dst, &["--latest", "2"]);
    assert_eq!(ids(&v, "copied"), made[2..].to_vec(), "{v}");
    assert_eq!(dst.snapshot_ids(), made[2..].to_vec());

    let dst = init_other(&tmp.path().join("tag"), &[]);
    let v = copy(&src, &dst, &["--tag", "a"]);
    assert_eq!(ids(&v, "copied"), vec![made[0].clone(), made[2].clone()]);
    let v = copy(&src, &dst, &["--tag", "a", "--tag", "c", "--latest", "1"]);
    assert_eq!(ids(&v, "copied"), vec![made[3].clone()]);
    // An explicit id (by prefix), with the destination passphrase from a file.
    let pwfile = tmp.path().join("to-pw");
    std::fs::write(&pwfile, format!("{OTHER_PASSWORD}\n")).unwrap();
    let out = src.run(&copy_args(
        &src,
        &dst,
        &[
            &made[1][..12],
            "--to-password-file",
            pwfile.to_str().unwrap(),
        ],
    ));
    out.ok("copy by id");
    assert_eq!(ids(&out.json(), "copied"), vec![made[1].clone()]);
    assert_eq!(dst.snapshot_ids(), made);
    dst.check_ok(false);
}

#[test]
fn wrong_destination_passphrase_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_tree(&data, test_seed("copy-wrong"), TreeSpec::SMALL);
    let src = Repo::init(&tmp.path().join("src"), &[]);
    src.backup(&[&data], &[]);
    let dst = init_other(&tmp.path().join("dst"), &[]);
    let before = listing(&dst.path);
    let out = src.run_env(
        &copy_args(&src, &dst, &[]),
        &[("HAVEN_TO_PASSWORD", "not the passphrase")],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("haven: error:"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_unchanged(&before, &listing(&dst.path), "the destination");
    // Without any destination secret the source's is tried (and fails as well).
    let out = src.run(&copy_args(&src, &dst, &[]));
    assert_eq!(out.code, 1, "{out:?}");
    assert_unchanged(&before, &listing(&dst.path), "the destination");
}

#[test]
fn killed_copy_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut rng = Rng::new(23);
    const FILES: usize = 24;
    const FILE_SIZE: usize = 2 << 20;
    for i in 0..FILES {
        write_file(
            &data.join(format!("f{i:02}.bin")),
            &rng.random_bytes(FILE_SIZE),
            0o644,
            fixed_mtime(i as u64),
        );
    }
    let total = (FILES * FILE_SIZE) as u64;
    let src = Repo::init(&tmp.path().join("src"), &[]);
    let (id, _) = src.backup(&[&data], &[]);
    let dst = init_other(&tmp.path().join("dst"), &["--pack-size-mib", "1"]);

    let mut cmd = src.command(&copy_args(&src, &dst, &[]));
    cmd.env("HAVEN_TO_PASSWORD", OTHER_PASSWORD);
    let mut child = KillOnDrop(Some(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut packs_seen = 0;
    wait_for("4 packs copied", Duration::from_secs(60), || {
        packs_seen = pack_files(&dst.path).len();
        packs_seen >= 4
    });
    assert_eq!(
        kill9(child.child()),
        137,
        "the copy finished before it could be killed: make the data larger"
    );
    assert!(dst.snapshot_ids().is_empty());
    dst.check_ok(true);

    let v = copy(&src, &dst, &[]);
    assert_eq!(ids(&v, "copied"), vec![id.clone()], "{v}");
    let added = v["bytes_added_raw"].as_u64().unwrap();
    eprintln!("killed after {packs_seen} packs; the rerun added {added} of {total} bytes");
    assert!(
        added < total,
        "nothing was reused: added {added} of {total}"
    );
    dst.check_ok(true);
    dst.assert_restores(&id, &data, &data);
    assert_eq!(metadata(&src), metadata(&dst));
}
