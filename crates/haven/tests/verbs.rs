//! Everyday verbs a restic user reaches for: `diff` of two snapshots with known changes
//! (added, removed, modified, metadata-only, type changed), `find` across snapshots (by
//! name, by path, ignoring case), and passphrases from `--password-command`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn diff_names_each_kind_of_change_and_find_says_which_snapshots_hold_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("same.txt"), "unchanged").unwrap();
    fs::write(src.join("edit.txt"), "before").unwrap();
    fs::write(src.join("gone.txt"), "removed later").unwrap();
    fs::write(src.join("mode.txt"), "chmod later").unwrap();
    fs::write(src.join("becomes-dir"), "a file first").unwrap();
    fs::write(src.join("sub/old.conf"), "x=1").unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (first, _) = repo.backup(&[&src], &[]);

    fs::write(src.join("edit.txt"), "after, longer").unwrap();
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::set_permissions(src.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    fs::create_dir_all(src.join("becomes-dir")).unwrap();
    fs::write(src.join("becomes-dir/inner"), "inside").unwrap();
    fs::create_dir_all(src.join("new/deeper")).unwrap();
    fs::write(src.join("new/deeper/App.CONF"), "y=2").unwrap();
    let (second, _) = repo.backup(&[&src], &[]);

    let root = src.display().to_string();
    let out = repo.run(&["diff", &first, &second, "--json"]);
    out.ok("diff --json");
    let v = out.json();
    let change_of = |rel: &str| -> Option<String> {
        let path = format!("{root}/{rel}");
        v["diff"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path.as_str())
            .map(|e| e["change"].as_str().unwrap().to_string())
    };
    assert_eq!(change_of("edit.txt").as_deref(), Some("modified"), "{v}");
    assert_eq!(change_of("gone.txt").as_deref(), Some("removed"), "{v}");
    assert_eq!(change_of("becomes-dir").as_deref(), Some("type"), "{v}");
    assert_eq!(
        change_of("becomes-dir/inner").as_deref(),
        Some("added"),
        "{v}"
    );
    assert_eq!(
        change_of("new/deeper/App.CONF").as_deref(),
        Some("added"),
        "{v}"
    );
    assert_eq!(change_of("same.txt"), None, "{v}");
    assert_eq!(
        change_of("mode.txt"),
        None,
        "metadata only without --metadata: {v}"
    );
    assert_eq!(v["diff"]["files_removed"], 1, "{v}");
    assert_eq!(v["diff"]["files_modified"], 1, "{v}");

    let out = repo.run(&["diff", &first, &second, "--metadata"]);
    out.ok("diff --metadata");
    assert!(
        out.stdout.contains(&format!("U    {root}/mode.txt")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("M    {root}/edit.txt")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("-    {root}/gone.txt")),
        "{}",
        out.stdout
    );

    // find: by name at any depth (only the second snapshot has App.CONF), ignoring
    // case, and by path.
    let out = repo.run(&["find", "*.conf", "--json"]);
    out.ok("find");
    let found = out.json();
    let in_snapshot = |f: &serde_json::Value, id: &str| -> Vec<String> {
        f.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["snapshot"] == id)
            .flat_map(|s| s["matches"].as_array().unwrap().clone())
            .map(|m| m["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        in_snapshot(&found, &first),
        [format!("{root}/sub/old.conf")],
        "{found}"
    );
    assert_eq!(
        in_snapshot(&found, &second),
        [format!("{root}/sub/old.conf")],
        "{found}"
    );
    let out = repo.run(&["find", "-i", "*.conf", "--json"]);
    let found = out.json();
    assert_eq!(
        in_snapshot(&found, &second),
        [
            format!("{root}/new/deeper/App.CONF"),
            format!("{root}/sub/old.conf")
        ],
        "{found}"
    );
    let out = repo.run(&[
        "find",
        &format!("{root}/new/**"),
        "--snapshot",
        &second,
        "--json",
    ]);
    let found = out.json();
    // `**` spans any number of folders, none included: new, new/deeper, the file.
    assert_eq!(in_snapshot(&found, &second).len(), 3, "{found}");
    let out = repo.run(&["find", "[oops"]);
    out.assert_one_line_error(1, &["[oops"]);
}

#[test]
fn a_password_command_opens_the_repository_and_its_failures_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let path = repo.path.display().to_string();
    let secret_file = tmp.path().join("pw");
    fs::write(&secret_file, format!("{}\n", repo.password)).unwrap();
    let cmd = format!("cat {}", secret_file.display());
    let out = haven(
        &["snapshots", "--json"],
        &[
            ("HAVEN_REPOSITORY", &path),
            ("HAVEN_PASSWORD_COMMAND", &cmd),
        ],
    );
    out.ok("snapshots with a password command");

    let out = haven(
        &["snapshots", "--password-command", "echo not-the-passphrase"],
        &[("HAVEN_REPOSITORY", &path)],
    );
    assert_ne!(out.code, 0, "a wrong passphrase is refused: {out:?}");
    assert!(
        !out.stderr.contains("not-the-passphrase"),
        "the output is never shown: {}",
        out.stderr
    );

    let out = haven(
        &[
            "snapshots",
            "--password-command",
            "echo vault is sealed >&2; exit 3",
        ],
        &[("HAVEN_REPOSITORY", &path)],
    );
    out.assert_one_line_error(
        1,
        &["password command", "vault is sealed", "--password-file"],
    );
    let out = haven(
        &["snapshots", "--password-command", "true"],
        &[("HAVEN_REPOSITORY", &path)],
    );
    out.assert_one_line_error(1, &["password command", "printed nothing"]);
}

/// The tags of each snapshot, by id.
fn tags_by_id(repo: &Repo) -> std::collections::BTreeMap<String, Vec<String>> {
    repo.snapshots()
        .iter()
        .map(|s| {
            let tags = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (s["id"].as_str().unwrap().to_string(), tags)
        })
        .collect()
}

#[test]
fn tag_adds_removes_and_sets_tags_under_new_ids_and_refuses_tenant_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "tagged data").unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    let (first, _) = repo.backup(&[&src], &["--tag", "nightly", "--tag", "db"]);
    let (second, _) = repo.backup(&[&src], &["--tag", "nightly"]);

    let out = repo.run(&[
        "tag", "--add", "release", "--remove", "nightly", &first, "--json",
    ]);
    out.ok("tag --add --remove");
    let report = out.json();
    let renamed = report[0]["new_id"].as_str().unwrap().to_string();
    assert_eq!(report[0]["snapshot"], first.as_str());
    let tags = tags_by_id(&repo);
    assert!(
        !tags.contains_key(&first),
        "the old snapshot file is gone: {tags:?}"
    );
    assert_eq!(tags[&renamed], ["db", "release"]);
    assert_eq!(tags[&second], ["nightly"], "other snapshots untouched");
    // Same tree: the retagged snapshot restores the same files.
    let expected = tmp.path().join("expected");
    copy_tree(&src, &expected);
    repo.assert_restores(&renamed, &src, &expected);
    // Found by its new tag.
    let out = repo.run(&["snapshots", "--tag", "release", "--json"]);
    out.ok("snapshots --tag release");
    assert_eq!(out.json().as_array().unwrap().len(), 1);

    // A change that changes nothing keeps the id; --set '' clears every tag.
    let out = repo.run(&["tag", "--add", "nightly", &second, "--json"]);
    out.ok("tag without effect");
    assert!(out.json()[0]["new_id"].is_null());
    assert!(tags_by_id(&repo).contains_key(&second));
    let out = repo.run(&["tag", "--set", "", &second, "--json"]);
    out.ok("tag --set ''");
    let cleared = out.json()[0]["new_id"].as_str().unwrap().to_string();
    assert!(tags_by_id(&repo)[&cleared].is_empty());

    // Refused before anything changes: an unknown id next to a good one, a reserved
    // tag, a snapshot the tenant layer references by id.
    let before = tags_by_id(&repo);
    repo.run(&["tag", "--add", "x", &renamed, "ffffffffffff"])
        .assert_one_line_error(1, &["no snapshot matches"]);
    repo.run(&["tag", "--add", "haven-point=1", &renamed])
        .assert_one_line_error(1, &["haven-", "tenant"]);
    let (managed, _) = repo.backup(&[&src], &["--tag", "haven-recovery-point"]);
    repo.run(&["tag", "--add", "x", &renamed, &managed])
        .assert_one_line_error(1, &["recovery point", "cannot be retagged"]);
    repo.run(&["tag", &renamed])
        .assert_one_line_error(1, &["--add"]);
    let mut after = tags_by_id(&repo);
    after.remove(&managed);
    assert_eq!(after, before, "a refused tag command changes nothing");
    repo.check_ok(false);
}

/// Every stdout line of a `--json` backup or restore parsed: status events, then the
/// summary. Checks what must hold of the status events and returns the summary.
#[track_caller]
fn json_lines(out: &Out, action: &str) -> serde_json::Value {
    out.ok(action);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", out.stdout))
        })
        .collect();
    let (summary, statuses) = lines.split_last().expect("some output");
    assert_eq!(summary["message_type"], "summary", "{summary}");
    assert!(
        statuses.len() >= 2,
        "want status events while it ran and at the end: {}",
        out.stdout
    );
    let mut last_bytes = 0;
    for s in statuses {
        assert_eq!(s["message_type"], "status", "{s}");
        assert_eq!(s["action"], action, "{s}");
        let done = s["bytes_done"].as_u64().unwrap();
        assert!(done >= last_bytes, "bytes_done went back: {}", out.stdout);
        last_bytes = done;
    }
    let end = statuses.last().unwrap();
    assert_eq!(end["bytes_done"], end["total_bytes"], "{end}");
    assert_eq!(end["files_done"], end["total_files"], "{end}");
    assert_eq!(end["percent_done"], 1.0, "{end}");
    summary.clone()
}

#[test]
fn json_backup_and_restore_print_status_events_then_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut rng = Rng::new(test_seed("json_progress"));
    for i in 0..40 {
        let dir = src.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), rng.random_bytes(512 << 10)).unwrap();
    }
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    // Many status events a second, so that even a quick run shows some mid-way.
    let fps = [("HAVEN_PROGRESS_FPS", "200")];
    let out = repo.run_env(&["backup", "--json", src.to_str().unwrap()], &fps);
    let summary = json_lines(&out, "backup");
    let id = summary["id"].as_str().unwrap().to_string();
    assert_eq!(summary["snapshot"]["summary"]["files"], 40);

    let target = tmp.path().join("restore");
    let out = repo.run_env(
        &[
            "restore",
            &id,
            "--target",
            target.to_str().unwrap(),
            "--json",
        ],
        &fps,
    );
    let summary = json_lines(&out, "restore");
    assert_eq!(summary["report"]["files"], 40);
    assert_eq!(summary["report"]["bytes"], 40 * (512 << 10));
}

#[test]
fn stats_shows_raw_deduplicated_and_stored_bytes_per_snapshot_and_in_all() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let text: String = (0..20_000)
        .map(|i| format!("line {i} of a log\n"))
        .collect();
    fs::write(src.join("a.log"), &text).unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let mut rng = Rng::new(test_seed("stats_space"));
    fs::write(src.join("b.bin"), rng.random_bytes(300_000)).unwrap();
    repo.backup(&[&src], &[]);

    let out = repo.run(&["stats", "--json"]);
    out.ok("stats --json");
    let s = out.json();
    let per = s["per_snapshot"].as_array().unwrap();
    assert_eq!(per.len(), 2, "{s}");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(&per[0], "raw"), text.len() as u64);
    assert_eq!(n(&per[1], "raw"), text.len() as u64 + 300_000);
    // The second backup added only the new file (the log deduplicated) and its trees ...
    let added = n(&per[1], "deduplicated");
    assert!((300_000..300_000 + 4096).contains(&added), "{s}");
    // ... stored about as large (random data does not compress); the log compressed.
    assert!(n(&per[1], "stored") >= 300_000, "{s}");
    assert!(n(&per[0], "stored") < text.len() as u64 / 3, "{s}");
    assert_eq!(
        n(&s, "restore_bytes"),
        n(&per[0], "raw") + n(&per[1], "raw")
    );
    assert_eq!(
        s["compression"],
        "auto (zstd level 3 for text-like chunks, level 1 for the rest)"
    );
    let human = repo.run(&["stats"]);
    human.ok("stats");
    assert!(human.stdout.contains("deduplicated") && human.stdout.contains("per snapshot"));
}

/// `init --compression` takes names and numbers, keeps the choice in the repository
/// (stats shows it; a stronger level, and auto on text, store the same words smaller) and
/// refuses anything else with a one-line error before creating anything.
#[test]
fn compression_is_chosen_at_init_by_name_or_level() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Words of random letters drawn from a vocabulary: text, where stronger levels find more.
    let mut rng = Rng::new(test_seed("compression_names"));
    let words: Vec<String> = (0..5000)
        .map(|_| {
            let n = 3 + rng.below(8);
            (0..n)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let text: String = (0..400_000)
        .map(|_| words[rng.below(words.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(src.join("a.txt"), &text).unwrap();
    let mut stored = vec![];
    for (choice, shown) in [
        ("fastest", "zstd level 1 (fastest)"),
        (
            "auto",
            "auto (zstd level 3 for text-like chunks, level 1 for the rest)",
        ),
        ("max", "zstd level 19 (max)"),
        ("7", "zstd level 7"),
    ] {
        let repo = Repo::init(&tmp.path().join(choice), &["--compression", choice]);
        let (_, summary) = repo.backup(&[&src], &[]);
        stored.push(summary["bytes_added_stored"].as_u64().unwrap());
        let s = repo.run(&["stats", "--json"]);
        assert_eq!(s.json()["compression"], shown);
    }
    assert!(
        stored[2] < stored[0],
        "max stores less than fastest: {stored:?}"
    );
    assert!(
        stored[1] < stored[0],
        "auto takes level 3 for text: {stored:?}"
    );
    for bad in ["0", "23", "best"] {
        let out = haven(
            &["init", "--compression", bad],
            &[
                ("HAVEN_REPOSITORY", tmp.path().join("bad").to_str().unwrap()),
                ("HAVEN_PASSWORD", PASSWORD),
            ],
        );
        out.assert_one_line_error(2, &["auto, fastest, max or a zstd level 1-22"]);
        assert!(!tmp.path().join("bad").exists());
    }
}
