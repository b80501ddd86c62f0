//! A repository mirrored on two sites (local folders here; the same code runs over S3):
//! every write lands on every site; with `--min-sites 1` a site that is gone does not
//! stop a backup; `check` reports the sites disagreeing; `repair` brings the returning
//! site back, file by file, and each site alone is then a complete repository.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// Every stored file of one site (locks aside) with its bytes.
fn site_files(site: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = walk(site)
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(site.join("locks")))
        .map(|p| {
            (
                p.strip_prefix(site).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_site_that_was_gone_is_repaired_and_every_site_restores_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("siteA"), tmp.path().join("siteB"));
    let location = format!("mirror:siteA={},siteB={}", a.display(), b.display());
    let repo = Repo::init(Path::new(&location), &["--pack-size-mib", "1"]);
    let src = tmp.path().join("src");
    let mut files = make_tree(&src, 61, TreeSpec::SMALL);
    let (first, _) = repo.backup(&[&src], &[]);
    let first_tree = tmp.path().join("first");
    copy_tree(&src, &first_tree);
    assert_eq!(
        site_files(&a),
        site_files(&b),
        "both sites hold every object"
    );

    // Site B goes away: its folder is replaced by a plain file, so every write there fails.
    let parked = tmp.path().join("siteB.parked");
    fs::rename(&b, &parked).unwrap();
    fs::write(&b, b"not a folder").unwrap();
    mutate_tree(&src, &mut files, &mut Rng::new(62), 12, 1);
    let refused = repo.run(&backup_args(&[&src], &[]));
    assert_ne!(
        refused.code, 0,
        "with the default --min-sites (all) a missing site stops the backup"
    );
    assert!(
        refused.stderr.contains("siteB"),
        "the error names the site: {}",
        refused.stderr
    );
    let out = repo.run(&backup_args(&[&src], &["--min-sites", "1"]));
    out.ok("backup with --min-sites 1");
    assert!(
        out.stderr.contains("siteB"),
        "a degraded write is announced: {}",
        out.stderr
    );
    let second = out.json()["id"].as_str().unwrap().to_string();

    // Site B returns, behind: check says so, repair brings it level.
    fs::remove_file(&b).unwrap();
    fs::rename(&parked, &b).unwrap();
    let check = repo.run(&["check"]);
    assert_eq!(
        check.code, 1,
        "check must report the disagreeing site: {}",
        check.stderr
    );
    assert!(check.stderr.contains("siteB"), "{}", check.stderr);
    repo.run(&["repair"]).ok("repair");
    assert_eq!(
        site_files(&a),
        site_files(&b),
        "after repair both sites hold the same objects, byte for byte"
    );
    repo.check_ok(true);
    for site in [&a, &b] {
        let alone = Repo::at(site);
        alone.check_ok(true);
        alone.assert_restores(&first, &src, &first_tree);
        alone.assert_restores(&second, &src, &src);
    }
}

#[test]
fn repair_refuses_a_location_that_is_not_a_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    repo.run(&["repair"])
        .assert_one_line_error(1, &["mirror", "repair index"]);
}
