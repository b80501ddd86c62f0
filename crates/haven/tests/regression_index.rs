//! Regression tests (issue 10) for backups over a damaged index or lost packs, through
//! the real binary: what the user sees and what exit code a script gets.

mod common;

use std::fs;

use common::*;

/// A backup whose parent snapshot lost its tree pack must not fail with an anonymous
/// "blob … is not in the index": it backs up every file in full, names the parent
/// snapshot it could not use in a warning, and records no parent.
#[test]
fn a_backup_whose_parent_lost_its_tree_pack_is_a_full_backup_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(src.join("noise.bin"), &noise).unwrap();
    fs::write(src.join("sub/notes.txt"), "remember\n".repeat(500)).unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let before = pack_files(&repo.path);
    let (first, _) = repo.backup(&[&src], &[]);
    let mut new: Vec<_> = pack_files(&repo.path)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 2, "one data and one tree pack: {new:?}");
    // The tree pack is the small one: a few encoded directories.
    new.sort_by_key(|p| fs::metadata(p).unwrap().len());
    fs::remove_file(&new[0]).unwrap();

    let out = repo.run(&backup_args(&[&src], &[]));
    assert_eq!(
        out.code, 0,
        "the backup must succeed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with("haven: warning:") && l.contains(&first[..8]))
        .unwrap_or_else(|| panic!("no warning names the parent snapshot:\n{}", out.stderr));
    assert!(warning.contains("in full"), "{warning}");
    let v = out.json();
    assert!(v["snapshot"]["parent"].is_null(), "{v}");
    assert_eq!(v["snapshot"]["summary"]["files_unchanged"], 0, "{v}");
    let second = v["id"].as_str().unwrap();
    repo.assert_restores(second, &src, &src);
}
