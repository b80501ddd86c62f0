//! `kill -9` at random moments: the repository must stay consistent.
//!
//! Each round kills a backup (or a prune) after a random delay between 0 and the
//! measured duration of an uninterrupted run of the same operation. After every round:
//! `check --read-data` passes, the first and the two newest snapshots restore
//! byte-identical to what was backed up, and the next backup succeeds. At the end every
//! snapshot is restored. The seed is printed; repeat a run with HAVEN_TEST_SEED.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const ROUNDS: u64 = 50;

/// Snapshots that must restore, each with a copy of the tree it was made from.
struct Expected {
    snapshots: Vec<(String, PathBuf)>,
}

impl Expected {
    fn ids(&self) -> HashSet<String> {
        self.snapshots.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Restore the first and the two newest snapshots (or all of them) and compare.
    fn verify(&self, repo: &Repo, src: &Path, all: bool) {
        let n = self.snapshots.len();
        for (i, (id, exp)) in self.snapshots.iter().enumerate() {
            if all || i == 0 || i + 2 >= n {
                repo.assert_restores(id, src, exp);
            }
        }
    }
}

/// Kill a spawned `haven` after `delay`; returns its exit code (137 when killed).
fn run_and_kill(repo: &Repo, args: &[&str], delay: Duration) -> i32 {
    let mut child = KillOnDrop(Some(
        repo.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning haven"),
    ));
    std::thread::sleep(delay);
    kill9(child.child())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn random_delay(rng: &mut Rng, limit: Duration) -> Duration {
    Duration::from_micros(rng.range(0, limit.as_micros() as u64 + 1))
}

/// Rewrite most of five "hot" files with 20-300 KiB of new data each, so that every
/// snapshot holds versions that the next one no longer uses: forgetting a snapshot
/// gives prune real work (packs to delete and to repack).
fn rewrite_hot_files(src: &Path, rng: &mut Rng, round: u64) {
    for h in 0..5 {
        if rng.chance(70) {
            let size = rng.range(20 << 10, 300 << 10) as usize;
            let data = rng.mixed_bytes(size);
            write_file(
                &src.join(format!("hot/h{h}")),
                &data,
                0o644,
                fixed_mtime(3_000_000 + round * 10 + h),
            );
        }
    }
}

fn repo_files(repo: &Path) -> Vec<PathBuf> {
    let mut v = pack_files(repo);
    v.extend(files_in(&repo.join("index")));
    v
}

#[test]
fn backup_killed_at_random_moments() {
    let seed = test_seed("backup_killed_at_random_moments");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut files = make_tree(&src, seed, TreeSpec::SMALL);
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let paths = [src.as_path()];
    let backup = backup_args(&paths, &[]);
    let mut expected = Expected { snapshots: vec![] };
    let mut round = 0u64;
    let next_tree = |rng: &mut Rng, files: &mut Vec<PathBuf>, round: u64| {
        mutate_tree(&src, files, rng, 3, round);
        let exp = tmp.path().join(format!("expected/{round:03}"));
        copy_tree(&src, &exp);
        exp
    };

    // Calibration: uninterrupted backups of a changed tree, timed.
    let mut timings = vec![];
    for _ in 0..5 {
        round += 1;
        let exp = next_tree(&mut rng, &mut files, round);
        let started = Instant::now();
        let (id, _) = repo.backup(&[&src], &[]);
        timings.push(started.elapsed());
        expected.snapshots.push((id, exp));
    }
    let limit = median(timings);
    eprintln!("uninterrupted backup takes {limit:?}; kills fall in 0..that");

    let (mut killed, mut completed, mut mid_work) = (0, 0, 0);
    for _ in 0..ROUNDS {
        round += 1;
        let exp = next_tree(&mut rng, &mut files, round);
        let delay = random_delay(&mut rng, limit);
        let before = repo_files(&repo.path);
        let code = run_and_kill(&repo, &backup, delay);
        match code {
            137 => killed += 1,
            0 => completed += 1,
            other => panic!("round {round}: the backup exited {other} before the kill"),
        }
        if code == 137 && repo_files(&repo.path) != before {
            mid_work += 1;
        }
        // A snapshot exists only if the backup got to its very end.
        let known = expected.ids();
        let new: Vec<String> = repo
            .snapshot_ids()
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        assert!(
            new.len() <= 1,
            "round {round}: one backup made {} snapshots",
            new.len()
        );
        if code == 0 {
            assert_eq!(
                new.len(),
                1,
                "round {round}: a finished backup left no snapshot"
            );
        }
        for id in new {
            expected.snapshots.push((id, exp.clone()));
        }

        repo.check_ok(true);
        expected.verify(&repo, &src, false);
        let (id, _) = repo.backup(&[&src], &[]);
        expected.snapshots.push((id, exp));
        assert_eq!(
            repo.snapshot_ids().into_iter().collect::<HashSet<_>>(),
            expected.ids(),
            "round {round}: the snapshot list is not what was backed up"
        );
    }
    eprintln!(
        "{ROUNDS} rounds (kill delay 0..{limit:?}): {killed} killed ({mid_work} after writing packs or index), {completed} finished before the kill"
    );
    assert!(
        killed >= ROUNDS / 4,
        "only {killed} of {ROUNDS} backups were killed before they finished"
    );
    expected.verify(&repo, &src, true);
    // Prune clears what the killed backups left (unindexed packs, partial index
    // files) without touching any snapshot.
    repo.run(&["prune"]).ok("prune after the killed backups");
    assert_no_leftover_packs(&repo);
    assert_eq!(
        repo.snapshot_ids().into_iter().collect::<HashSet<_>>(),
        expected.ids()
    );
    expected.verify(&repo, &src, true);
}

/// `check --read-data` passes and notes no pack outside the index.
fn assert_no_leftover_packs(repo: &Repo) {
    let check = repo.run(&["check", "--read-data", "--json"]);
    check.ok("check --read-data --json");
    let report = check.json();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let leftovers: Vec<&Value> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_str().unwrap().contains("in no index"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "packs left by killed runs survived a full prune: {leftovers:?}"
    );
}

#[test]
fn prune_killed_at_random_moments() {
    let seed = test_seed("prune_killed_at_random_moments");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut files = make_tree(&src, seed, TreeSpec::SMALL);
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);
    let mut expected = Expected { snapshots: vec![] };
    let first = tmp.path().join("expected/first");
    copy_tree(&src, &first);
    expected
        .snapshots
        .push((repo.backup(&[&src], &[]).0, first));

    // One round's work before the prune: a new snapshot, and one older one forgotten
    // (never the first, never the newest), so the prune has data to delete or repack.
    let mut round = 0u64;
    let snapshot_and_forget =
        |rng: &mut Rng, files: &mut Vec<PathBuf>, expected: &mut Expected, round: u64| {
            mutate_tree(&src, files, rng, 1, round);
            rewrite_hot_files(&src, rng, round);
            let exp = tmp.path().join(format!("expected/{round:03}"));
            copy_tree(&src, &exp);
            let (id, _) = repo.backup(&[&src], &[]);
            expected.snapshots.push((id, exp));
            if expected.snapshots.len() > 4 {
                let victim = 1 + rng.below(expected.snapshots.len() - 2);
                let (id, _) = expected.snapshots.remove(victim);
                repo.run(&["forget", &id]).ok("forget");
            }
        };

    // Calibration: uninterrupted prunes of the same kind, timed once every round
    // forgets a snapshot (from the fifth on).
    let mut timings = vec![];
    for i in 0..9 {
        round += 1;
        snapshot_and_forget(&mut rng, &mut files, &mut expected, round);
        let started = Instant::now();
        repo.run(&["prune"]).ok("prune");
        if i >= 4 {
            timings.push(started.elapsed());
        }
    }
    let limit = median(timings);
    eprintln!("uninterrupted prune takes {limit:?}; kills fall in 0..that");

    let (mut killed, mut completed, mut mid_work) = (0, 0, 0);
    // ROUNDS rounds with kills anywhere in 0..limit; if under this machine's load none
    // of them landed while prune was changing files, up to ROUNDS more with kills in
    // the later part of a prune (limit/2..3*limit/2) before judging.
    let mut rounds_done = 0;
    while rounds_done < ROUNDS || (mid_work == 0 && rounds_done < 2 * ROUNDS) {
        let late = rounds_done >= ROUNDS;
        rounds_done += 1;
        round += 1;
        // The backup in here is also "the next backup succeeds" of the previous round.
        snapshot_and_forget(&mut rng, &mut files, &mut expected, round);
        let before = repo_files(&repo.path);
        let delay = if late {
            limit / 2 + random_delay(&mut rng, limit)
        } else {
            random_delay(&mut rng, limit)
        };
        match run_and_kill(&repo, &["prune"], delay) {
            137 => killed += 1,
            0 => completed += 1,
            other => panic!("round {round}: prune exited {other} before the kill"),
        }
        if repo_files(&repo.path) != before {
            mid_work += 1;
        }
        repo.check_ok(true);
        assert_eq!(
            repo.snapshot_ids().into_iter().collect::<HashSet<_>>(),
            expected.ids(),
            "round {round}: prune changed the snapshot list"
        );
        expected.verify(&repo, &src, false);
    }
    eprintln!(
        "{rounds_done} rounds (kill delay 0..{limit:?}, later ones up to 1.5x): {killed} killed, {completed} finished; {mid_work} changed packs or index files before they ended"
    );
    assert!(
        killed >= ROUNDS / 4,
        "only {killed} of {ROUNDS} prunes were killed before they finished"
    );
    assert!(
        mid_work > 0,
        "no prune was killed after it had started to change the repository"
    );

    // The next backup succeeds, every snapshot restores, and an uninterrupted prune
    // cleans up what the killed ones left.
    round += 1;
    snapshot_and_forget(&mut rng, &mut files, &mut expected, round);
    expected.verify(&repo, &src, true);
    repo.run(&["prune"]).ok("final prune");
    assert_no_leftover_packs(&repo);
    expected.verify(&repo, &src, true);
}

#[test]
fn killed_backup_leaves_data_that_the_next_backup_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut rng = Rng::new(11);
    const FILES: usize = 24;
    const FILE_SIZE: usize = 2 << 20;
    for i in 0..FILES {
        let data = rng.random_bytes(FILE_SIZE);
        write_file(
            &src.join(format!("f{i:02}.bin")),
            &data,
            0o644,
            fixed_mtime(i as u64),
        );
    }
    let total = (FILES * FILE_SIZE) as u64;
    let repo = Repo::init(&tmp.path().join("repo"), &["--pack-size-mib", "1"]);

    let paths = [src.as_path()];
    let args = backup_args(&paths, &[]);
    let mut child = KillOnDrop(Some(
        repo.command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut packs_seen = 0;
    wait_for("4 packs written", Duration::from_secs(60), || {
        packs_seen = pack_files(&repo.path).len();
        packs_seen >= 4
    });
    assert_eq!(
        kill9(child.child()),
        137,
        "the backup finished before it could be killed: make the tree larger"
    );
    assert!(repo.snapshot_ids().is_empty());

    // The interrupted backup's packs are complete and harmless.
    repo.check_ok(true);

    let (id, summary) = repo.backup(&[&src], &[]);
    let added = summary["bytes_added_raw"].as_u64().unwrap();
    let reused = total - added.min(total);
    eprintln!("killed after {packs_seen} packs; the next backup added {added} of {total} bytes");
    assert!(
        added < total,
        "nothing was reused: added {added} of {total}"
    );
    assert!(
        reused >= packs_seen as u64 * (900 << 10),
        "only {reused} bytes reused although {packs_seen} packs of ~1 MiB were written"
    );
    assert!(added > 0, "the killed backup cannot have stored everything");
    repo.check_ok(true);
    repo.assert_restores(&id, &src, &src);
}
