//! Regression tests (issue 10) for the index and backups over damaged or lost packs,
//! through the real binary: what the user sees and what exit code a script gets.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A source tree of one incompressible file and one small text file.
fn sample_tree(src: &Path) {
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
}

/// When only a pack's last byte is damaged, every blob in it still opens through the
/// index: `repair index` must keep them, `check` must not call the pack a leftover,
/// `prune` must not delete it, and the snapshot restores byte for byte.
#[test]
fn repair_index_after_a_pack_lost_its_last_byte_keeps_every_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let (snap, _) = repo.backup(&[&src], &[]);
    let mut packs = pack_files(&repo.path);
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let data_pack = packs.pop().unwrap();
    let short = &file_name(&data_pack)[..8];
    let size = fs::metadata(&data_pack).unwrap().len();
    flip_bit(&data_pack, size - 1, 6);

    let out = repo.run(&["repair", "index"]);
    assert_eq!(
        out.code, 1,
        "the damaged pack is a problem:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().any(|l| l.starts_with("haven: problem: ")
            && l.contains(short)
            && l.contains("stay indexed")),
        "{}",
        out.stderr
    );
    let check = repo.run(&["check", "--json"]);
    let report = check.json();
    assert!(
        !report["notes"].to_string().contains(short),
        "check calls the damaged pack a leftover: {report}"
    );
    repo.run(&["prune"]).ok("prune");
    assert!(data_pack.exists(), "prune deleted the pack");
    repo.assert_restores(&snap, &src, &src);
}

/// A backup whose parent snapshot lost its tree pack must not fail with an anonymous
/// "blob … is not in the index": it backs up every file in full, names the parent
/// snapshot it could not use in a warning, and records no parent.
#[test]
fn a_backup_whose_parent_lost_its_tree_pack_is_a_full_backup_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
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
