//! `haven tenant`: recovery points of file trees and dump commands, restored into another
//! tenant and validated; failures that leave a failed point which is never restored; a
//! malformed config. (The database kinds run against real servers in tenant_servers.rs.)

mod common;
#[path = "../../haven-s3/tests/moto/mod.rs"]
mod moto;

use std::fs;
use std::path::PathBuf;

use common::*;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Setup {
    /// A config with repository `main` in the temp dir and the given tenants' TOML.
    fn new(tenants: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::write(root.join("password"), PASSWORD).unwrap();
        let config = root.join("haven.toml");
        let text = format!(
            "[repositories.main]\nurl = \"{}\"\npassword-file = \"password\"\n\n{}",
            root.join("repo").display(),
            tenants.replace("ROOT", &root.display().to_string())
        );
        fs::write(&config, text).unwrap();
        Setup {
            _tmp: tmp,
            root,
            config,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut all: Vec<&str> = vec!["tenant"];
        all.extend_from_slice(args);
        let config = self.config.display().to_string();
        all.extend_from_slice(&["--config", &config]);
        haven(&all, &[])
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

const ACME: &str = r#"
[tenants.acme]
repository = "main"
[tenants.acme.components.uploads]
kind = "files"
paths = ["ROOT/acme/uploads", "ROOT/acme/docs"]
pre = "touch ROOT/pre-ran"
post = "touch ROOT/post-ran"
[tenants.acme.components.ledger]
kind = "command"
backup = "cat ROOT/acme/ledger.txt"
restore = "cat > ROOT/acme/ledger.txt"
fingerprint = "cat ROOT/acme/ledger.txt"

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["ROOT/dr/uploads", "ROOT/dr/documents"]
[tenants.acme-dr.components.ledger]
kind = "command"
backup = "cat ROOT/dr/ledger.txt"
restore = "mkdir -p ROOT/dr && cat > ROOT/dr/ledger.txt"
fingerprint = "cat ROOT/dr/ledger.txt"

# restores the ledger wrongly: validation must catch it
[tenants.acme-bad]
repository = "main"
[tenants.acme-bad.components.ledger]
kind = "command"
backup = "true"
restore = "sed s/1/9/ > ROOT/bad-ledger.txt"
fingerprint = "cat ROOT/bad-ledger.txt"
"#;

#[test]
fn a_tenant_is_restored_into_another_tenant_and_validated() {
    let s = Setup::new(ACME);
    make_tree(&s.path("acme/uploads"), 41, TreeSpec::SMALL);
    make_tree(&s.path("acme/docs"), 42, TreeSpec::SMALL);
    fs::write(s.path("acme/ledger.txt"), "alpha 1\nbeta 2\n").unwrap();
    let (uploads, docs) = (s.path("expected/uploads"), s.path("expected/docs"));
    copy_tree(&s.path("acme/uploads"), &uploads);
    copy_tree(&s.path("acme/docs"), &docs);

    let out = s.run(&["backup", "acme"]);
    out.ok("tenant backup");
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert!(
        s.path("pre-ran").exists() && s.path("post-ran").exists(),
        "hooks ran"
    );
    let points = s.run(&["points", "acme", "--json"]);
    points.ok("tenant points");
    let list = points.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "one recovery point: {list:?}");
    assert_eq!(list[0]["status"], "complete");
    let fp = &list[0]["components"]["uploads"]["fingerprint"]["facts"];
    assert!(fp["path 1"].as_str().unwrap().starts_with("files="), "{fp}");
    assert_eq!(
        list[0]["components"]["ledger"]["fingerprint"]["facts"]["alpha"],
        "1"
    );

    // The source is lost; the tenant is re-created from the point into acme-dr.
    fs::remove_dir_all(s.path("acme")).unwrap();
    let out = s.run(&["restore", "acme", "--into", "acme-dr"]);
    out.ok("tenant restore --into acme-dr");
    assert!(out.stdout.contains("PASSED: restore in"), "{}", out.stdout);
    assert!(out.stdout.contains("measured RTO"), "{}", out.stdout);
    assert_same_tree(&uploads, &s.path("dr/uploads"));
    assert_same_tree(&docs, &s.path("dr/documents"));
    assert_eq!(
        fs::read_to_string(s.path("dr/ledger.txt")).unwrap(),
        "alpha 1\nbeta 2\n"
    );

    // Again: the targets hold data now, so without --force every component refuses.
    let out = s.run(&[
        "restore",
        "acme",
        "--into",
        "acme-dr",
        "--component",
        "uploads",
        "--json",
    ]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["components"][0]["outcome"], "failed");
    let error = report["components"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("not empty") && error.contains("--force"),
        "{error}"
    );
    let out = s.run(&[
        "restore",
        "acme",
        "--into",
        "acme-dr",
        "--component",
        "uploads",
        "--force",
        "--json",
    ]);
    out.ok("restore --force");
    let report = out.json();
    assert_eq!(report["components"][0]["outcome"], "passed");
    assert!(report["components"][0]["restore_seconds"].as_f64().unwrap() > 0.0);
    assert_same_tree(&uploads, &s.path("dr/uploads"));
    let aside: Vec<_> = fs::read_dir(s.path("dr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("haven-replaced"))
        .collect();
    assert_eq!(
        aside.len(),
        2,
        "the old targets were moved aside, not deleted: {aside:?}"
    );

    // A restore that puts wrong data in place is caught by validation.
    let out = s.run(&["restore", "acme", "--into", "acme-bad"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("CHECKS FAILED"), "{}", out.stdout);
    assert!(
        out.stdout.contains("alpha: 9 (expected 1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("uploads") && out.stdout.contains("skipped"),
        "{}",
        out.stdout
    );

    // verify: scratch restore of the files, a full read of the ledger stream.
    let out = s.run(&["verify", "acme", "--json"]);
    out.ok("tenant verify");
    let report = out.json();
    let comps = report["components"].as_array().unwrap();
    let by_name = |n: &str| comps.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(by_name("uploads")["outcome"], "passed");
    assert_eq!(by_name("uploads")["checks"][0]["name"], "fingerprint");
    let ledger = by_name("ledger");
    assert!(
        ledger["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("restore not exercised"),
        "{ledger}"
    );
}

#[test]
fn failed_components_leave_a_failed_point_that_is_never_restored() {
    let s = Setup::new(&format!(
        r#"
[tenants.acme]
repository = "main"
[tenants.acme.components.uploads]
kind = "files"
paths = ["ROOT/uploads"]
pre = "echo quiesce refused >&2; exit 4"
post = "touch ROOT/post-ran"
[tenants.acme.components.ledger]
kind = "command"
backup = "echo half a dump; echo disk on fire >&2; exit 1"
[tenants.acme.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{}/app"
[tenants.acme.components.db2]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:5432/app"
bin-dir = "ROOT/empty"
[tenants.acme.components.fine]
kind = "command"
backup = "echo fine"
"#,
        moto::closed_port()
    ));
    fs::create_dir_all(s.path("uploads")).unwrap();
    fs::create_dir_all(s.path("empty")).unwrap();
    let out = s.run(&["backup", "acme"]);
    assert_eq!(
        out.code, 3,
        "a failed point exits 3\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    for (component, words) in [
        (
            "uploads",
            vec!["pre-hook", "quiesce refused", "not backed up"],
        ),
        ("ledger", vec!["disk on fire"]),
        ("db", vec!["unreachable"]),
        ("db2", vec!["pg_dump", "not installed"]),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("component {component}:")))
            .unwrap_or_else(|| panic!("no error line for {component}:\n{}", out.stderr));
        assert!(line.contains("tenant acme"), "{line}");
        for w in words {
            assert!(line.contains(w), "{component}: {w:?} missing in: {line}");
        }
    }
    assert!(
        s.path("post-ran").exists(),
        "the post-hook runs even after a failed pre-hook"
    );

    let points = s.run(&["points", "acme", "--json"]);
    points.ok("points");
    let list = points.json();
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["components"]["fine"]["status"], "ok");
    let id = list[0]["id"].as_str().unwrap().to_string();

    let out = s.run(&["restore", "acme", "--component", "fine"]);
    out.assert_one_line_error(1, &["tenant acme", "no complete recovery point"]);
    let out = s.run(&["restore", "acme", "--point", &id]);
    out.assert_one_line_error(1, &["failed", "cannot be restored", "db:"]);
    let out = s.run(&["verify", "acme"]);
    out.assert_one_line_error(1, &["no complete recovery point"]);
}

#[test]
fn a_malformed_config_is_refused_before_anything_is_written() {
    let s = Setup::new(
        r#"
[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
uri = "postgresql://postgres@127.0.0.1:5432/app"
"#,
    );
    let out = s.run(&["backup", "acme"]);
    let config = s.config.display().to_string();
    out.assert_one_line_error(
        1,
        &[
            &config,
            "line 8",
            "tenants.acme.components.db",
            "unknown field `uri`",
        ],
    );
    assert!(!s.path("repo").exists(), "no repository was created");
    let s = Setup::new(
        "[tenants.acme]\nrepository = \"main\"\n[tenants.acme.components.f]\nkind = \"files\"\npaths = [\"/tmp\"]\n",
    );
    let out = s.run(&["backup", "nosuch"]);
    out.assert_one_line_error(1, &["nosuch", "declared: acme"]);
    // Keys of physical mode on a logical component are named, not ignored.
    let s = Setup::new(
        "[tenants.acme]\nrepository = \"main\"\n[tenants.acme.components.db]\nkind = \"postgres\"\nurl = \"postgresql://postgres@127.0.0.1:5432/app\"\nbase-backup = \"files\"\n",
    );
    let out = s.run(&["backup", "acme"]);
    out.assert_one_line_error(1, &["base-backup", "mode = \"physical\" only"]);
}
