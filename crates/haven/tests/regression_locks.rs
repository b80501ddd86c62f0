//! Regression tests for locking through the CLI (issue 10, item 14): read-only verbs on
//! a mirror keep working while a site is dead; writers keep needing every site.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Item 14: `snapshots`, `ls`, `restore`, `check` and `key list` on a mirror with a dead
/// site take their lock on the site that answers, warn, and go on without
/// `--min-sites 1`; a backup is still refused.
#[test]
fn read_only_verbs_work_on_a_mirror_with_a_dead_site() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("siteA"), tmp.path().join("siteB"));
    let location = format!("mirror:siteA={},siteB={}", a.display(), b.display());
    let repo = Repo::init(Path::new(&location), &["--pack-size-mib", "1"]);
    let src = tmp.path().join("src");
    make_tree(&src, 71, TreeSpec::SMALL);
    let expected = tmp.path().join("expected");
    copy_tree(&src, &expected);
    let (id, _) = repo.backup(&[&src], &[]);

    // Site B dies: its folder is replaced by a plain file, so every call there fails.
    fs::rename(&b, tmp.path().join("siteB.parked")).unwrap();
    fs::write(&b, b"not a folder").unwrap();

    let snapshots = repo.run(&["snapshots", "--json"]);
    snapshots.ok("snapshots with a dead site");
    assert!(snapshots.stdout.contains(&id), "{}", snapshots.stdout);
    assert!(
        snapshots.stderr.contains("siteB"),
        "the dead site is announced: {}",
        snapshots.stderr
    );
    repo.run(&["ls", "latest"]).ok("ls with a dead site");
    repo.run(&["key", "list"]).ok("key list with a dead site");
    repo.assert_restores("latest", &src, &expected);

    // Check runs (it is not stopped by its lock) and reports the unreachable site.
    let check = repo.run(&["check"]);
    assert!(
        check.stdout.contains("checked 1 snapshots"),
        "check did not run: {}",
        check.stderr
    );
    assert!(check.stderr.contains("siteB"), "{}", check.stderr);
    assert!(!check.stderr.contains("are required"), "{}", check.stderr);

    // Writers keep today's rule.
    let refused = repo.run(&backup_args(&[&src], &[]));
    assert_ne!(refused.code, 0, "a backup must need every site");
    assert!(refused.stderr.contains("siteB"), "{}", refused.stderr);
    // No lock file is left behind on the site that answered.
    let locks: Vec<_> = fs::read_dir(a.join("locks")).unwrap().collect();
    assert!(locks.is_empty(), "{locks:?}");
}

/// Item 14: `tenant points` and `tenant restore` on a mirror with a dead site go on
/// with the site that answers.
#[test]
fn tenant_restore_works_on_a_mirror_with_a_dead_site() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(root.join("password"), PASSWORD).unwrap();
    fs::write(root.join("ledger.txt"), "alpha 1\nbeta 2\n").unwrap();
    let config = root.join("haven.toml");
    let text = r#"
[repositories.main]
url = "mirror:siteA=ROOT/siteA,siteB=ROOT/siteB"
password-file = "password"

[tenants.acme]
repository = "main"
[tenants.acme.components.ledger]
kind = "command"
backup = "cat ROOT/ledger.txt"
restore = "cat > ROOT/ledger.txt"
fingerprint = "cat ROOT/ledger.txt"

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.ledger]
kind = "command"
backup = "cat ROOT/dr-ledger.txt"
restore = "cat > ROOT/dr-ledger.txt"
fingerprint = "cat ROOT/dr-ledger.txt"
"#
    .replace("ROOT", &root.display().to_string());
    fs::write(&config, text).unwrap();
    let config = config.display().to_string();
    let tenant = |args: &[&str]| {
        let mut all = vec!["tenant"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &config]);
        haven(&all, &[])
    };
    tenant(&["backup", "acme"]).ok("tenant backup");

    let b = root.join("siteB");
    fs::rename(&b, root.join("siteB.parked")).unwrap();
    fs::write(&b, b"not a folder").unwrap();

    let points = tenant(&["points", "acme", "--json"]);
    points.ok("tenant points with a dead site");
    assert_eq!(points.json().as_array().unwrap().len(), 1);
    let out = tenant(&["restore", "acme", "--into", "acme-dr"]);
    out.ok("tenant restore with a dead site");
    assert!(out.stderr.contains("siteB"), "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(root.join("dr-ledger.txt")).unwrap(),
        "alpha 1\nbeta 2\n"
    );
}
