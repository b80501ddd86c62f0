//! `haven backup` excludes as a restic user writes them: each pattern kind (`--exclude`,
//! `--iexclude`, `--exclude-file` with comments, `$VAR` and `!` put-backs), cache tags,
//! `--exclude-if-present`, `--exclude-larger-than`, `--one-file-system` across a real
//! tmpfs mount, `--files-from` with missing entries, `--dry-run` (nothing written), and
//! the same keys on a `files` component of a tenant.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The paths a snapshot holds below `root`, relative to it.
fn held(repo: &Repo, id: &str, root: &Path) -> Vec<String> {
    let out = repo.run(&["ls", id]);
    out.ok("ls");
    let prefix = format!("{}/", root.display());
    let mut v: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .last()
                .and_then(|p| p.strip_prefix(&prefix))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn each_exclude_kind_leaves_out_what_it_names_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("keep.txt"), "kept");
    write(&src.join("a.tmp"), "temp");
    write(&src.join("deep/er/b.tmp"), "temp");
    write(&src.join("LOUD.LOG"), "log");
    write(&src.join("logs/app.log"), "log");
    write(&src.join("logs/keep.log"), "put back");
    write(&src.join("build/out.o"), "object");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(&src.join("cache/blob"), "cached");
    write(&src.join("fake-cache/CACHEDIR.TAG"), "not the signature");
    write(&src.join("fake-cache/data"), "kept");
    write(&src.join("private/.nobackup"), "");
    write(&src.join("private/secret"), "secret");
    write(&src.join("big.bin"), &"x".repeat(20_000));
    let list = tmp.path().join("excludes");
    write(
        &list,
        "# build products\n\n${HAVEN_TEST_BUILD_DIR}/*.o\nlogs/*.log\n!keep.log\n",
    );
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (id, _) = repo.backup(&[&src], &[]);
    assert_eq!(
        held(&repo, &id, &src).len(),
        21,
        "{:?}",
        held(&repo, &id, &src)
    );

    let out = repo.run_env(
        &backup_args(
            &[&src],
            &[
                "--exclude",
                "*.tmp",
                "--iexclude",
                "*.log",
                "--exclude-file",
                list.to_str().unwrap(),
                "--exclude-caches",
                "--exclude-if-present",
                ".nobackup",
                "--exclude-larger-than",
                "10KiB",
            ],
        ),
        &[("HAVEN_TEST_BUILD_DIR", "build")],
    );
    out.ok("backup with excludes");
    let id = out.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        held(&repo, &id, &src),
        [
            "build",
            "cache",
            "cache/CACHEDIR.TAG",
            "deep",
            "deep/er",
            "fake-cache",
            "fake-cache/CACHEDIR.TAG",
            "fake-cache/data",
            "keep.txt",
            "logs",
            "logs/keep.log",
            "private",
            "private/.nobackup",
        ]
    );

    // Malformed input is named before anything is written.
    let before = listing(&repo.path);
    let out = repo.run(&backup_args(&[&src], &["--exclude", "[abc"]));
    out.assert_one_line_error(1, &["[abc", "]"]);
    let out = repo.run(&backup_args(&[&src], &["--exclude-file", "/no/such/list"]));
    out.assert_one_line_error(1, &["/no/such/list"]);
    assert_unchanged(&before, &listing(&repo.path), "refused backups");
}

#[test]
fn files_from_skips_missing_entries_with_a_warning_and_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&a.join("one"), "1");
    write(&b.join("two"), "22");
    let list = tmp.path().join("list");
    write(
        &list,
        &format!(
            "# what to back up\n{}\n{}/missing\n\n{}\n",
            a.display(),
            tmp.path().display(),
            b.display()
        ),
    );
    let repo = Repo::init(&tmp.path().join("repo"), &[]);

    // (the shared lock a dry run takes comes and goes in locks/; nothing else may change)
    let stored = |r: &Repo| {
        let mut l = listing(&r.path);
        l.retain(|p, _| !p.starts_with("locks"));
        l
    };
    let before = stored(&repo);
    let out = repo.run(&[
        "backup",
        "--dry-run",
        "--files-from",
        list.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "a missing listed entry is a warning: {out:?}");
    assert!(out.stderr.contains("missing (listed in"), "{}", out.stderr);
    assert!(out.stdout.contains("would read new"), "{}", out.stdout);
    assert!(out.stdout.contains("2 files"), "{}", out.stdout);
    assert_unchanged(&before, &stored(&repo), "a dry run");

    let out = repo.run(&["backup", "--json", "--files-from", list.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out:?}");
    let v = out.json();
    assert_eq!(v["snapshot"]["summary"]["files"], 2, "{v}");
    assert!(v["warnings"].to_string().contains("missing"), "{v}");

    // After the backup, a dry run finds nothing to read.
    let out = repo.run(&[
        "backup",
        "--dry-run",
        "--json",
        "--files-from",
        list.to_str().unwrap(),
    ]);
    let v = out.json();
    assert_eq!(v["dry_run"]["unchanged_files"], 2, "{v}");
    assert_eq!(v["dry_run"]["bytes_to_read"], 0, "{v}");

    let only_missing = tmp.path().join("only-missing");
    write(&only_missing, "/no/such/path\n");
    let out = repo.run(&["backup", "--files-from", only_missing.to_str().unwrap()]);
    out.assert_one_line_error(1, &["--files-from", "nothing to back up"]);
}

/// Needs root (mount -t tmpfs); skipped with a message otherwise.
#[test]
fn one_file_system_keeps_the_mount_point_and_leaves_its_contents_out() {
    if haven_repo::host::current_uid() != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("here"), "on the backed-up file system");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    write(&mnt.join("there"), "on another file system");
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (all, _) = repo.backup(&[&src], &[]);
    assert_eq!(held(&repo, &all, &src), ["here", "mnt", "mnt/there"]);
    let (one, _) = repo.backup(&[&src], &["--one-file-system"]);
    assert_eq!(held(&repo, &one, &src), ["here", "mnt"]);
}

#[test]
fn a_files_component_takes_the_same_exclude_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("app.conf"), "kept");
    write(&src.join("app.tmp"), "temp");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55",
    );
    write(&src.join("cache/blob"), "cached");
    write(&src.join("skip/.nobackup"), "");
    write(&src.join("skip/x"), "x");
    let config = tmp.path().join("haven.toml");
    fs::write(
        &config,
        format!(
            r#"[repositories.main]
url = "{repo}"
password-file = "{pw}"

[tenants.acme]
repository = "main"
[tenants.acme.components.files]
kind = "files"
paths = ["{src}"]
exclude = ["*.tmp"]
exclude-caches = true
exclude-if-present = [".nobackup"]
"#,
            repo = tmp.path().join("repo").display(),
            pw = tmp.path().join("pw").display(),
            src = src.display()
        ),
    )
    .unwrap();
    fs::write(tmp.path().join("pw"), "excludes test passphrase").unwrap();
    haven(
        &[
            "tenant",
            "backup",
            "acme",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    )
    .ok("tenant backup");
    let repo = Repo {
        path: tmp.path().join("repo"),
        password: "excludes test passphrase".into(),
    };
    let src_text = src.display().to_string();
    let id = repo
        .snapshots()
        .iter()
        .find(|v| v["paths"][0].as_str() == Some(src_text.as_str()))
        .map(|v| v["id"].as_str().unwrap().to_string())
        .expect("the files component's snapshot");
    assert_eq!(
        held(&repo, &id, &src),
        [
            "app.conf",
            "cache",
            "cache/CACHEDIR.TAG",
            "skip",
            "skip/.nobackup"
        ]
    );
}
