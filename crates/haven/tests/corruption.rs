//! Damaged repository files: `check` must find and name the damage, `restore` must
//! restore everything intact, name what it could not restore, and never leave wrong
//! bytes; prune must not make things worse.
//!
//! Each case gets its own small repository with two snapshots: the first of a sample
//! tree, the second of the same tree plus three "victim" files. The second backup
//! writes exactly one new data pack, which holds only the victims' data, so damage to
//! that pack may affect the victims and nothing else.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const TREE: TreeSpec = TreeSpec {
    files: 60,
    max_file: 256 << 10,
    big_random: 3 << 20,
    big_text: 1 << 20,
    specials: true,
    sparse_size: 2 << 20,
};

const VICTIMS: [&str; 3] = ["victims/v0.bin", "victims/v1.bin", "victims/v2.bin"];

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    repo: Repo,
    /// Snapshot of the tree without the victims, and a copy of that tree.
    first: String,
    first_tree: PathBuf,
    /// Snapshot with the victims (the tree as it is now in `src`).
    second: String,
    /// The one data pack the second backup wrote (only victim data).
    victim_pack: PathBuf,
    /// The index file the second backup wrote.
    second_index: PathBuf,
}

fn set_difference(after: Vec<PathBuf>, before: &[PathBuf]) -> Vec<PathBuf> {
    after.into_iter().filter(|p| !before.contains(p)).collect()
}

fn setup(seed: u64) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, seed, TREE);
    let repo = Repo::init(
        &tmp.path().join("repo"),
        &["--pack-size-mib", "1", "--chunk-avg-kib", "64"],
    );
    let (first, _) = repo.backup(&[&src], &[]);
    let first_tree = tmp.path().join("first");
    copy_tree(&src, &first_tree);
    let packs = pack_files(&repo.path);
    assert!(
        packs.len() >= 4,
        "the first backup should spread over several packs, made {}",
        packs.len()
    );
    let indexes = files_in(&repo.path.join("index"));

    let mut rng = Rng::new(seed ^ 0xdead);
    for (i, v) in VICTIMS.iter().enumerate() {
        let data = rng.random_bytes(200 << 10);
        write_file(&src.join(v), &data, 0o644, fixed_mtime(500 + i as u64));
    }
    let (second, summary) = repo.backup(&[&src], &[]);
    assert!(
        summary["bytes_added_raw"].as_u64().unwrap() > 600 << 10,
        "{summary}"
    );
    let mut new_packs = set_difference(pack_files(&repo.path), &packs);
    assert_eq!(
        new_packs.len(),
        2,
        "the second backup should write one data and one tree pack: {new_packs:?}"
    );
    new_packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let victim_pack = new_packs.pop().unwrap();
    assert!(fs::metadata(&victim_pack).unwrap().len() > 600 << 10);
    let new_index = set_difference(files_in(&repo.path.join("index")), &indexes);
    assert_eq!(new_index.len(), 1, "{new_index:?}");
    repo.check_ok(true);
    Case {
        _tmp: tmp,
        src,
        repo,
        first,
        first_tree,
        second,
        victim_pack,
        second_index: new_index[0].clone(),
    }
}

fn short(p: &Path) -> String {
    file_name(p)[..8].to_string()
}

/// Run `args`; it must exit 1 and print a `problem` line containing `needle`.
fn assert_check_finds(repo: &Repo, args: &[&str], needle: &str) {
    let out = repo.run(args);
    assert_eq!(
        out.code,
        1,
        "`{}` must fail\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("haven: problem: ") && l.contains(needle)),
        "`{}` does not name {needle:?}:\n{}",
        args.join(" "),
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .last()
            .unwrap_or("")
            .contains("problem(s) found"),
        "{}",
        out.stderr
    );
}

/// Restore `snapshot` of `case.src`, expecting it to be incomplete: exit 3, every
/// failed file named on stderr and absent, everything else byte-identical to
/// `expected`. Returns the failed paths relative to the source root.
fn restore_partially(case: &Case, snapshot: &str, expected: &Path) -> BTreeSet<PathBuf> {
    let target = tempfile::tempdir().unwrap();
    let out = case.repo.run(&[
        "restore",
        snapshot,
        "--target",
        target.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.code, 3,
        "an incomplete restore must exit 3\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let root = restored_path(target.path(), &case.src);
    let prefix = format!("haven: error: not restored: {}/", root.display());
    let mut failed = BTreeSet::new();
    for line in out.stderr.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (rel, why) = rest.split_once(": ").expect("`path: reason`");
            assert!(!why.is_empty());
            failed.insert(PathBuf::from(rel));
        } else {
            assert!(
                !line.contains("not restored"),
                "a failure outside the restored tree: {line}"
            );
        }
    }
    let last = out.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("{} file(s) could not be restored", failed.len()))
            && last.contains("haven check --read-data"),
        "the summary line does not count the failures or say what to do: {last}"
    );
    assert!(!failed.is_empty(), "exit 3 without naming a failed file");
    for f in &failed {
        assert!(
            fs::symlink_metadata(root.join(f)).is_err(),
            "{} failed but exists in the target",
            f.display()
        );
    }
    assert_no_restore_leftovers(target.path());
    if let Err(diffs) = compare_trees(expected, &root) {
        let unexpected: Vec<&String> = diffs
            .iter()
            .filter(|d| {
                d.strip_prefix("missing: ")
                    .is_none_or(|rel| !failed.contains(Path::new(rel)))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "files that were not reported as failed did not restore byte-identical:\n{}",
            unexpected
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    failed
}

fn victims() -> BTreeSet<PathBuf> {
    VICTIMS.iter().map(PathBuf::from).collect()
}

/// Prune must refuse (nothing deleted) when it cannot know what is used.
fn assert_prune_refuses(repo: &Repo, hints: &[&str]) {
    let dirs = ["data", "index", "snapshots"];
    let before: Vec<Listing> = dirs.iter().map(|d| listing(&repo.path.join(d))).collect();
    repo.run(&["prune"]).assert_error_after_warnings(1, hints);
    for (d, b) in dirs.iter().zip(&before) {
        assert_unchanged(
            b,
            &listing(&repo.path.join(d)),
            &format!("a refused prune ({d}/)"),
        );
    }
}

#[test]
fn bit_flip_in_a_pack() {
    let case = setup(41);
    let size = fs::metadata(&case.victim_pack).unwrap().len();
    // A third into the pack: inside a blob (the header is at the end).
    flip_bit(&case.victim_pack, size / 3, 5);
    assert_check_finds(
        &case.repo,
        &["check", "--read-data"],
        &format!("pack {}", short(&case.victim_pack)),
    );
    let failed = restore_partially(&case, &case.second, &case.src);
    assert_eq!(
        failed.len(),
        1,
        "one flipped bit damages one blob of one file: {failed:?}"
    );
    assert!(failed.is_subset(&victims()), "{failed:?}");
    case.repo
        .assert_restores(&case.first, &case.src, &case.first_tree);
}

#[test]
fn truncated_pack() {
    let case = setup(42);
    let size = fs::metadata(&case.victim_pack).unwrap().len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&case.victim_pack)
        .unwrap();
    f.set_len(size / 2).unwrap();
    drop(f);
    let name = format!("pack {}", short(&case.victim_pack));
    assert_check_finds(&case.repo, &["check"], &name);
    assert_check_finds(&case.repo, &["check", "--read-data"], &name);
    let failed = restore_partially(&case, &case.second, &case.src);
    assert!(failed.is_subset(&victims()), "{failed:?}");
    case.repo
        .assert_restores(&case.first, &case.src, &case.first_tree);
}

#[test]
fn deleted_pack() {
    let case = setup(43);
    fs::remove_file(&case.victim_pack).unwrap();
    assert_check_finds(
        &case.repo,
        &["check"],
        &format!("pack {} is missing", short(&case.victim_pack)),
    );
    let failed = restore_partially(&case, &case.second, &case.src);
    assert_eq!(failed, victims(), "exactly the files in the lost pack fail");
    // Prune must not "repair" the loss by dropping the index entries silently.
    assert_prune_refuses(
        &case.repo,
        &[&format!("pack {}", short(&case.victim_pack)), "missing"],
    );
    case.repo
        .assert_restores(&case.first, &case.src, &case.first_tree);
}

#[test]
fn bit_flip_in_an_index_file_then_repair_index() {
    let case = setup(44);
    let size = fs::metadata(&case.second_index).unwrap().len();
    flip_bit(&case.second_index, size / 2, 2);
    let name = format!("index file {}", short(&case.second_index));
    assert_check_finds(&case.repo, &["check"], &name);
    assert_prune_refuses(&case.repo, &["index file", "haven repair index"]);

    // The second snapshot's new trees were listed only there: its root is lost until
    // the index is repaired. Nothing at all may be restored under a wrong name.
    let target = tempfile::tempdir().unwrap();
    let out = case.repo.run(&[
        "restore",
        &case.second,
        "--target",
        target.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("not restored") && out.stderr.contains("repair index"),
        "{}",
        out.stderr
    );
    let files: Vec<PathBuf> = walk(target.path())
        .into_iter()
        .filter(|p| !p.is_dir())
        .collect();
    assert!(files.is_empty(), "restored without a root tree: {files:?}");
    case.repo
        .assert_restores(&case.first, &case.src, &case.first_tree);

    // repair index rebuilds it from the pack headers: everything is back.
    case.repo.run(&["repair", "index"]).ok("repair index");
    case.repo.check_ok(true);
    case.repo
        .assert_restores(&case.second, &case.src, &case.src);
}

#[test]
fn bit_flip_in_a_snapshot_file() {
    let case = setup(45);
    let snap = case.repo.path.join("snapshots").join(&case.second);
    let size = fs::metadata(&snap).unwrap().len();
    flip_bit(&snap, size / 2, 0);
    assert_check_finds(
        &case.repo,
        &["check"],
        &format!("snapshot {}", &case.second[..8]),
    );
    assert_prune_refuses(&case.repo, &["snapshot", "unreadable", "haven check"]);
    // The listing shows the intact snapshot and warns about the damaged one.
    let out = case.repo.run(&["snapshots", "--json"]);
    out.ok("snapshots");
    assert!(
        out.stderr.contains(&case.second[..8]) && out.stderr.contains("unreadable"),
        "{}",
        out.stderr
    );
    let ids: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&case.first));
    // The damaged snapshot cannot be restored at all: a clean one-line failure.
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("t");
    case.repo
        .run(&["restore", &case.second, "--target", t.to_str().unwrap()])
        .assert_one_line_error(1, &[&case.second[..8]]);
    assert!(!t.exists());
    case.repo
        .assert_restores(&case.first, &case.src, &case.first_tree);
}

/// `restore` of a snapshot whose file is damaged names the damage (a regression test:
/// it used to say "no snapshot matches").
#[test]
fn restoring_a_damaged_snapshot_names_the_damage() {
    let case = setup(46);
    let snap = case.repo.path.join("snapshots").join(&case.second);
    flip_bit(&snap, 20, 3);
    let target = tempfile::tempdir().unwrap();
    case.repo
        .run(&[
            "restore",
            &case.second,
            "--target",
            target.path().to_str().unwrap(),
        ])
        .assert_one_line_error(1, &[&case.second[..8], "damaged"]);
}

#[test]
fn bit_flip_in_a_pack_header() {
    let case = setup(47);
    let size = fs::metadata(&case.victim_pack).unwrap().len();
    // Just before the 4-byte trailer: inside the sealed header.
    flip_bit(&case.victim_pack, size - 10, 1);
    let name = format!("pack {}", short(&case.victim_pack));
    assert_check_finds(&case.repo, &["check"], &name);
    assert_check_finds(&case.repo, &["check", "--read-data"], &name);
    // Every blob is intact and the index knows where: everything restores.
    case.repo
        .assert_restores(&case.second, &case.src, &case.src);
}

/// A truncated pack loses only the blobs beyond the cut: when a merged ranged read
/// fails, restore reads that range blob by blob (a regression test: every file of the
/// range used to be reported as lost).
#[test]
fn truncated_pack_loses_only_the_files_beyond_the_cut() {
    let case = setup(42);
    let size = fs::metadata(&case.victim_pack).unwrap().len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&case.victim_pack)
        .unwrap();
    f.set_len(size * 2 / 3).unwrap();
    drop(f);
    // Which victims can be restored at all: each on its own.
    let mut restorable = BTreeSet::new();
    for v in VICTIMS {
        let t = tempfile::tempdir().unwrap();
        let out = case.repo.run(&[
            "restore",
            &case.second,
            "--target",
            t.path().to_str().unwrap(),
            "--include",
            case.src.join(v).to_str().unwrap(),
        ]);
        match out.code {
            0 => {
                assert!(same_file(
                    &case.src.join(v),
                    &restored_path(t.path(), &case.src).join(v)
                ));
                restorable.insert(PathBuf::from(v));
            }
            3 => {}
            c => panic!("restore --include {v} exited {c}: {}", out.stderr),
        }
    }
    assert!(
        !restorable.is_empty() && restorable.len() < VICTIMS.len(),
        "the cut should fall between the victims' data: restorable alone {restorable:?}"
    );
    let failed = restore_partially(&case, &case.second, &case.src);
    let lost: BTreeSet<PathBuf> = victims().difference(&restorable).cloned().collect();
    assert_eq!(
        failed, lost,
        "a full restore must lose only the files that cannot be restored on their own"
    );
}

fn same_file(a: &Path, b: &Path) -> bool {
    fs::read(a).ok() == fs::read(b).ok()
}
