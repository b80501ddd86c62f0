//! Extended attributes, POSIX ACLs and file capabilities survive a backup and restore,
//! compared with the tools an administrator would use (`getfattr`, `getfacl`, `getcap`)
//! on the source and on the restore: on ext4 (the temp folder), onto a tmpfs, and onto
//! a ramfs, which takes no attributes at all (the restore completes and each attribute
//! it could not set is a warning naming path and attribute).
//!
//! Needs root (trusted.* and security.* attributes, capabilities, mounts) and the
//! Debian packages attr, acl and libcap2-bin (scripts/test.sh installs them).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (install attr, acl and libcap2-bin)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A tree with every kind of attribute: user (binary value), trusted, an access ACL on
/// a file, access and default ACLs on a folder, a capability on a program, and a
/// trusted attribute on a symlink itself.
fn make_source(src: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(src.join("shared")).unwrap();
    let doc = src.join("doc.txt");
    fs::write(&doc, "attributes ride along").unwrap();
    run(
        "setfattr",
        &["-n", "user.mime_type", "-v", "text/plain", p(&doc)],
    );
    run("setfattr", &["-n", "user.blob", "-v", "0x00ff10", p(&doc)]);
    run(
        "setfattr",
        &["-n", "trusted.origin", "-v", "scanner-7", p(&doc)],
    );
    let acl = src.join("acl.txt");
    fs::write(&acl, "readable by one more user").unwrap();
    run("setfacl", &["-m", "u:1234:r--,g:4321:rw-", p(&acl)]);
    let shared = src.join("shared");
    run("setfacl", &["-m", "u:1234:rwx", p(&shared)]);
    run(
        "setfacl",
        &["-d", "-m", "u:1234:rwx,g:4321:r-x", p(&shared)],
    );
    fs::write(shared.join("inner"), "inside a folder with a default ACL").unwrap();
    let prog = src.join("ping-like");
    fs::write(&prog, "#!/bin/sh\n").unwrap();
    run("chmod", &["755", p(&prog)]);
    run("setcap", &["cap_net_raw,cap_net_bind_service+ep", p(&prog)]);
    let link = src.join("link");
    std::os::unix::fs::symlink("doc.txt", &link).unwrap();
    run(
        "setfattr",
        &["-h", "-n", "trusted.on_link", "-v", "yes", p(&link)],
    );
    vec![doc, acl, shared.clone(), shared.join("inner"), prog, link]
}

/// What the tools say about `path`, without the path itself.
fn attributes(path: &Path) -> String {
    let xattrs = run("getfattr", &["-h", "-d", "-m", "-", "-e", "hex", p(path)]);
    let is_link = fs::symlink_metadata(path).unwrap().is_symlink();
    let acl = if is_link {
        String::new()
    } else {
        run("getfacl", &["-p", "-n", p(path)])
    };
    let caps = if is_link {
        String::new()
    } else {
        run("getcap", &[p(path)])
    };
    // Without the tools' "# file: <path>" headers and getcap's path prefix.
    format!("{xattrs}\n{acl}\n{caps}")
        .replace(p(path), "<path>")
        .lines()
        .filter(|l| !l.starts_with("# file:"))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(kind: &str, at: &Path) -> Mount {
    fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", kind, kind])
        .arg(at)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount -t {kind}");
    Mount(at.to_path_buf())
}

fn restore(repo: &Repo, id: &str, target: &Path) -> Out {
    let out = repo.run(&["restore", id, "--target", p(target)]);
    out.ok("restore");
    out
}

#[test]
fn attributes_acls_and_capabilities_round_trip_on_ext4_and_tmpfs() {
    if haven_repo::host::current_uid() != 0 {
        eprintln!("skipped: trusted attributes, capabilities and mounts need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let entries = make_source(&src);
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (id, _) = repo.backup(&[&src], &[]);

    // Each attribute is in the source (else the comparison below proves nothing).
    let doc = attributes(&entries[0]);
    assert!(
        doc.contains("user.mime_type") && doc.contains("trusted.origin"),
        "{doc}"
    );
    assert!(attributes(&entries[1]).contains("user:1234:r--"));
    assert!(attributes(&entries[2]).contains("default:group:4321:r-x"));
    assert!(attributes(&entries[4]).contains("cap_net_bind_service,cap_net_raw=ep"));
    assert!(attributes(&entries[5]).contains("trusted.on_link"));

    let on_ext4 = tmp.path().join("restore-ext4");
    let _tmpfs = mount("tmpfs", &tmp.path().join("restore-tmpfs"));
    for target in [on_ext4, tmp.path().join("restore-tmpfs")] {
        let out = restore(&repo, &id, &target);
        assert!(!out.stderr.contains("warning"), "{}", out.stderr);
        for entry in &entries {
            let restored = restored_path(&target, entry);
            assert_eq!(
                attributes(&restored),
                attributes(entry),
                "{} restored to {}",
                entry.display(),
                target.display()
            );
        }
    }

    // One attribute changed makes that path a metadata change (its content is equal).
    run(
        "setfattr",
        &[
            "-n",
            "user.mime_type",
            "-v",
            "text/markdown",
            p(&entries[0]),
        ],
    );
    let (second, _) = repo.backup(&[&src], &[]);
    let out = repo.run(&["diff", &id, &second, "--metadata", "--json"]);
    out.ok("diff --metadata");
    let changed: Vec<String> = out.json()["diff"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["change"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        // Folders above the source changed with the restores made beside it.
        .filter(|c| c.contains(p(&src)))
        .collect();
    assert_eq!(
        changed,
        [format!("metadata {}", entries[0].display())],
        "only the file whose attribute changed"
    );
    repo.check_ok(true);
}

#[test]
fn a_target_without_attribute_support_restores_the_files_and_names_each_attribute_it_refused() {
    if haven_repo::host::current_uid() != 0 {
        eprintln!("skipped: trusted attributes, capabilities and mounts need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let entries = make_source(&src);
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (id, _) = repo.backup(&[&src], &[]);

    let target = tmp.path().join("ramfs");
    let _ramfs = mount("ramfs", &target);
    let out = restore(&repo, &id, &target);
    let doc = restored_path(&target, &entries[0]);
    assert_eq!(fs::read_to_string(&doc).unwrap(), "attributes ride along");
    for (entry, attribute) in [
        (&entries[0], "user.mime_type"),
        (&entries[0], "trusted.origin"),
        (&entries[4], "security.capability"),
    ] {
        let shown = restored_path(&target, entry);
        assert!(
            out.stderr.lines().any(|l| l.contains("warning")
                && l.contains(p(&shown))
                && l.contains(attribute)
                && l.contains("does not support")),
            "no warning for {attribute} on {}:\n{}",
            shown.display(),
            out.stderr
        );
    }
}
