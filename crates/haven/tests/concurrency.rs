//! Several haven processes on one repository: concurrent backups share it safely, and
//! prune (the only deleting operation) never runs while a backup does.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const TREE: TreeSpec = TreeSpec {
    files: 150,
    max_file: 64 << 10,
    big_random: 1 << 20,
    big_text: 1 << 20,
    specials: true,
    sparse_size: 4 << 20,
};

fn spawn_backup(repo: &Repo, src: &Path) -> KillOnDrop {
    let paths = [src];
    let args = backup_args(&paths, &[]);
    KillOnDrop(Some(
        repo.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning a backup"),
    ))
}

fn snapshot_id(out: &Out) -> String {
    out.ok("backup");
    out.json()["id"].as_str().expect("snapshot id").to_string()
}

#[test]
fn two_backups_at_once_both_succeed_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut files_a = make_tree(&a, 21, TREE);
    let mut files_b = make_tree(&b, 22, TREE);
    // Both trees share some data, so the two runs race to store the same blobs.
    let shared = Rng::new(5).random_bytes(1 << 20);
    for dir in [&a, &b] {
        write_file(&dir.join("shared.bin"), &shared, 0o644, fixed_mtime(9));
    }
    let mut rng = Rng::new(23);
    let mut expected: Vec<(String, PathBuf, PathBuf)> = vec![];
    for round in 0..3u64 {
        if round > 0 {
            mutate_tree(&a, &mut files_a, &mut rng, 4, round);
            mutate_tree(&b, &mut files_b, &mut rng, 4, round);
        }
        let (ea, eb) = (
            tmp.path().join(format!("expected-a-{round}")),
            tmp.path().join(format!("expected-b-{round}")),
        );
        copy_tree(&a, &ea);
        copy_tree(&b, &eb);
        let mut ca = spawn_backup(&repo, &a);
        let mut cb = spawn_backup(&repo, &b);
        let (oa, ob) = (collect(ca.take()), collect(cb.take()));
        expected.push((snapshot_id(&oa), a.clone(), ea));
        expected.push((snapshot_id(&ob), b.clone(), eb));
    }
    let ids: BTreeSet<String> = expected.iter().map(|e| e.0.clone()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        repo.snapshot_ids().into_iter().collect::<BTreeSet<_>>(),
        ids
    );
    repo.check_ok(true);
    for (id, src, exp) in &expected {
        repo.assert_restores(id, src, exp);
    }
}

/// Feed a stdin backup in pieces, keeping it (and its lock) alive in between.
struct SlowStdinBackup {
    child: KillOnDrop,
    stdin: Option<std::process::ChildStdin>,
}

impl SlowStdinBackup {
    fn start(repo: &Repo) -> SlowStdinBackup {
        let mut child = KillOnDrop(Some(
            repo.command(&["backup", "--stdin", "--stdin-name", "stream.bin", "--json"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning a stdin backup"),
        ));
        let stdin = child.child().stdin.take();
        SlowStdinBackup { child, stdin }
    }

    fn feed(&mut self, data: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(data)
            .expect("feeding the backup");
    }

    fn running(&mut self) -> bool {
        self.child
            .child()
            .try_wait()
            .expect("polling the backup")
            .is_none()
    }

    fn finish(mut self) -> Out {
        drop(self.stdin.take());
        collect(self.child.take())
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    files_in(dir).iter().map(|p| file_name(p)).collect()
}

#[test]
fn prune_refuses_or_waits_while_a_backup_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    make_tree(&a, 31, TREE);
    make_tree(&b, 32, TREE);
    let (old, _) = repo.backup(&[&a], &[]);
    let (kept, _) = repo.backup(&[&b], &[]);
    // Forgetting the first snapshot gives prune something to delete.
    repo.run(&["forget", &old]).ok("forget");

    // A stdin backup that stays alive (with its lock) until its input ends; fed until
    // it has uploaded two packs, which a prune running now could wrongly delete.
    let mut rng = Rng::new(33);
    let stream = rng.random_bytes(24 << 20);
    let packs_before = pack_files(&repo.path).len();
    let mut backup = SlowStdinBackup::start(&repo);
    let mut fed = 0;
    let uploaded = |repo: &Repo| pack_files(&repo.path).len() >= packs_before + 2;
    while !uploaded(&repo) && fed < 16 << 20 {
        backup.feed(&stream[fed..fed + (512 << 10)]);
        fed += 512 << 10;
    }
    wait_for(
        "the running backup to upload two packs",
        Duration::from_secs(60),
        || uploaded(&repo),
    );

    // Without --lock-wait: refused at once, naming the backup; nothing deleted.
    let dirs = ["data", "index", "snapshots"].map(|d| repo.path.join(d));
    let before: Vec<BTreeSet<String>> = dirs.iter().map(|d| names(d)).collect();
    let refused = repo.run(&["prune"]);
    refused.assert_one_line_error(1, &["in use by backup", "--lock-wait"]);
    if !backup.running() {
        panic!("the backup ended early: {:?}", backup.finish());
    }
    for (d, names_before) in dirs.iter().zip(&before) {
        let now = names(d);
        let missing: Vec<&String> = names_before.difference(&now).collect();
        assert!(
            missing.is_empty(),
            "a refused prune deleted from {}: {missing:?}",
            d.display()
        );
    }

    // With --lock-wait: it waits while the backup runs...
    let mut prune = KillOnDrop(Some(
        repo.command(&["--lock-wait", "60s", "prune", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        if let Some(st) = prune.child().try_wait().unwrap() {
            panic!(
                "prune --lock-wait ended ({}) while the backup was still running: {:?}",
                exit_code(st),
                collect(prune.take())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(backup.running());
    // ...and runs once the backup is done.
    let stream = &stream[..fed + (1 << 20)];
    backup.feed(&stream[fed..]);
    let out = backup.finish();
    let new = snapshot_id(&out);
    let pruned = collect(prune.take());
    pruned.ok("prune --lock-wait 60s");
    let report = pruned.json();
    assert!(
        report["packs_deleted"].as_u64().unwrap() > 0,
        "prune did not delete the forgotten snapshot's packs: {report}"
    );

    let ids: BTreeSet<String> = repo.snapshot_ids().into_iter().collect();
    assert_eq!(ids, BTreeSet::from([kept.clone(), new.clone()]));
    repo.check_ok(true);
    repo.assert_restores(&kept, &b, &b);
    let restored = repo.run(&["restore", &new, "--stdout"]);
    restored.ok("restore --stdout");
    assert!(
        restored.stdout_bytes == stream,
        "the backup that ran during prune's wait does not restore byte-identical"
    );
}
