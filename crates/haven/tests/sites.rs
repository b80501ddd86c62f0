//! A repository mirrored on two S3 servers, each on a site of its own: a network
//! namespace joined to the host by a link that can be cut (see `common/netns.rs`).
//!
//! Site B's link goes down while a backup with `--min-sites 1` is uploading, once some of
//! that backup's packs have reached B (an observed condition, not a delay). The backup
//! must complete, warn that siteB missed writes, and restore byte-identical from site A
//! alone; what it wrote after the cut must be on A only. When B's link is back, `check` on
//! the mirror reports the disagreement, `repair` brings B level, both buckets then hold the
//! same objects byte for byte (locks aside), and each site alone passes
//! `check --read-data` and restores both snapshots byte-identical.
//!
//! Pacing and cost. Both links are shaped to 8 Mbit/s for the second backup, so that each
//! 1 MiB pack takes about a second to upload and the cut lands while packs are still
//! coming. After the cut, every operation on site B costs its whole retry budget (about
//! 4.5 s: five attempts by the retry layer, each with object_store's own three retries),
//! one operation after the other, and an upload in flight at the cut waits for the
//! client's TCP timeout (30 s). So the second backup is kept to a few MiB (a handful of
//! packs; about 6 s with both sites up), and still takes 60 to 95 s with site B cut.

mod common;
#[path = "../../haven-s3/tests/moto/mod.rs"]
mod moto;
#[path = "common/netns.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use netns::{require_root_and_netns, Site};

const BUCKET: &str = "haven";
const PREFIX: &str = "repo";
/// Upload rate of both links during the second backup.
const SHAPED: &str = "8mbit";
/// New packs of the second backup that must have reached site B before it is cut.
const PACKS_BEFORE_CUT: usize = 2;

/// The second backup's tree: about 4 MiB of incompressible data (a handful of 1 MiB
/// packs) and some small files.
const LARGER: TreeSpec = TreeSpec {
    files: 60,
    max_file: 32 << 10,
    big_random: 4 << 20,
    big_text: 0,
    specials: true,
    sparse_size: 1 << 20,
};

/// The child processes take their S3 credentials from the environment.
fn set_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY);
    std::env::remove_var("AWS_ENDPOINT_URL");
}

/// Every object of the repository on one site, locks aside, with its bytes.
fn repository_objects(site: &Site) -> BTreeMap<String, Vec<u8>> {
    site.objects(
        BUCKET,
        &format!("{PREFIX}/"),
        &[&format!("{PREFIX}/locks/")],
    )
}

/// Keys of the repository's objects on one site, locks aside.
fn repository_keys(site: &Site) -> BTreeSet<String> {
    let locks = format!("{PREFIX}/locks/");
    site.keys(BUCKET, &format!("{PREFIX}/"))
        .into_iter()
        .filter(|k| !k.starts_with(&locks))
        .collect()
}

/// Panic, naming the objects, unless both sites hold the same objects with the same bytes.
#[track_caller]
fn assert_same_objects(a: &Site, b: &Site, when: &str) {
    let (on_a, on_b) = (repository_objects(a), repository_objects(b));
    let mut diffs = vec![];
    for (key, bytes) in &on_a {
        match on_b.get(key) {
            None => diffs.push(format!("only on {}: {key}", a.name)),
            Some(other) if other != bytes => diffs.push(format!(
                "different bytes: {key} ({} bytes on {}, {} on {})",
                bytes.len(),
                a.name,
                other.len(),
                b.name
            )),
            Some(_) => {}
        }
    }
    for key in on_b.keys().filter(|k| !on_a.contains_key(*k)) {
        diffs.push(format!("only on {}: {key}", b.name));
    }
    assert!(
        diffs.is_empty(),
        "{when}, both sites must hold the same objects byte for byte ({} objects on {}, {} on {}); \
         {} difference(s):\n{}",
        on_a.len(),
        a.name,
        on_b.len(),
        b.name,
        diffs.len(),
        diffs.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        on_a.keys().any(|k| k.contains("/data/")),
        "{when}, the sites hold no packs at all"
    );
}

#[test]
fn a_site_cut_off_mid_backup_is_repaired_and_each_site_restores_alone() {
    require_root_and_netns();
    set_credentials();
    let mut a = Site::start(0, "siteA");
    let mut b = Site::start(1, "siteB");
    a.wait_ready();
    b.wait_ready();
    a.create_bucket(BUCKET);
    b.create_bucket(BUCKET);
    let (url_a, url_b) = (a.url(BUCKET, PREFIX), b.url(BUCKET, PREFIX));
    let location = format!("mirror:siteA={url_a},siteB={url_b}");
    let repo = Repo::init(Path::new(&location), &["--pack-size-mib", "1"]);

    // Both sites up: every object lands on both.
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    make_tree(&small, 301, TreeSpec::SMALL);
    let started = Instant::now();
    let (first, _) = repo.backup(&[&small], &[]);
    let first_took = started.elapsed();
    assert_same_objects(&a, &b, "after a backup with both sites up");

    // A larger backup, paced by the shaped links; site B is cut once it has received
    // some of this backup's packs.
    let larger = tmp.path().join("larger");
    make_tree(&larger, 302, LARGER);
    let data = format!("{PREFIX}/data/");
    let packs_before: BTreeSet<String> = b.keys(BUCKET, &data).into_iter().collect();
    a.shape(SHAPED);
    b.shape(SHAPED);
    let started = Instant::now();
    let mut cmd = repo.command(&backup_args(&[&larger], &["--min-sites", "1"]));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut backup = KillOnDrop(Some(cmd.spawn().expect("starting the second backup")));
    let deadline = started + Duration::from_secs(60);
    loop {
        let arrived = b
            .keys(BUCKET, &data)
            .into_iter()
            .filter(|k| !packs_before.contains(k))
            .count();
        if arrived >= PACKS_BEFORE_CUT {
            break;
        }
        assert!(
            backup
                .child()
                .try_wait()
                .expect("polling the backup")
                .is_none(),
            "the second backup ended before {PACKS_BEFORE_CUT} of its packs reached site B \
             ({arrived} did): it should be slowed down by the shaped links"
        );
        assert!(
            Instant::now() < deadline,
            "after 60 s only {arrived} pack(s) of the second backup had reached site B"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        backup
            .child()
            .try_wait()
            .expect("polling the backup")
            .is_none(),
        "the second backup finished before site B could be cut"
    );
    b.cut();
    let cut_at = started.elapsed();
    let out = collect_within(
        backup.take(),
        Duration::from_secs(300),
        "the backup with site B cut off",
    );
    let second_took = started.elapsed();
    eprintln!(
        "sites: first backup (both sites up) {first_took:.1?}; second backup {second_took:.1?}, \
         site B cut after {cut_at:.1?}"
    );
    assert_eq!(
        out.code, 0,
        "with --min-sites 1 the backup must complete with site B cut off\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("mirror site siteB missed"),
        "the backup must warn that site B missed writes; stderr:\n{}",
        out.stderr
    );
    let second = out.json()["id"]
        .as_str()
        .expect("backup --json has an id")
        .to_string();
    a.unshape();
    b.unshape();

    // Site A alone, with B still cut off, restores the new snapshot.
    let site_a = Repo::at(Path::new(&url_a));
    site_a.assert_restores(&second, &larger, &larger);

    // B comes back, behind: what was written after the cut is on A only. B may hold
    // partial index files that the backup removed after the cut (from A only; a remove
    // missed by a down site comes back with repair, docs/MIRROR.md), nothing else.
    b.reconnect();
    let (keys_a, keys_b) = (repository_keys(&a), repository_keys(&b));
    let only_on_b: Vec<&String> = keys_b.difference(&keys_a).collect();
    assert!(
        only_on_b
            .iter()
            .all(|k| k.starts_with(&format!("{PREFIX}/index/"))),
        "site B holds objects site A lacks that are not index files: {only_on_b:?}"
    );
    let only_on_a: Vec<&String> = keys_a.difference(&keys_b).collect();
    for (kind, folder) in [("pack", "data"), ("snapshot", "snapshots")] {
        assert!(
            only_on_a
                .iter()
                .any(|k| k.starts_with(&format!("{PREFIX}/{folder}/"))),
            "a {kind} written after the cut must be on site A only, but every {kind} is on \
             both sites (objects only on A: {only_on_a:?})"
        );
    }
    let check = repo.run(&["check"]);
    assert_eq!(
        check.code, 1,
        "check on the mirror must report that site B is behind\nstdout:\n{}\nstderr:\n{}",
        check.stdout, check.stderr
    );
    assert!(
        check.stderr.contains("mirror site siteB disagrees"),
        "check must name site B as disagreeing; stderr:\n{}",
        check.stderr
    );

    // Repair brings B level; then every site is a complete repository on its own.
    repo.run(&["repair"]).ok("repair");
    assert_same_objects(&a, &b, "after repair");
    repo.check_ok(false);
    for url in [&url_a, &url_b] {
        let alone = Repo::at(Path::new(url));
        alone.check_ok(true);
        alone.assert_restores(&first, &small, &small);
        alone.assert_restores(&second, &larger, &larger);
    }
}
