//! The engine through its library API, on the memory backend and a local folder:
//! round trips, damage detection, and property tests of the stored encodings.

use std::path::Path;
use std::sync::Arc;

use haven_repo::backup::{backup_paths, backup_stream, BackupOptions};
use haven_repo::check::check;
use haven_repo::crypto::MasterKey;
use haven_repo::id::BlobId;
use haven_repo::keys::Secret;
use haven_repo::pack::{self, BlobKind, PackBuilder};
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::restore::{restore, restore_to_writer, RestoreOptions};
use haven_repo::tree::{Node, NodeKind, Tree};
use haven_repo::{RepoError, Repository};
use haven_store::{DynBackend, FileKind, MemoryBackend};
use proptest::prelude::*;

mod common;
use common::{fast_opts, noise, pass, restore_all};

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/noise.bin"), noise(300_000, 1)).unwrap();
    std::fs::write(root.join("a/b/text.txt"), "tenant data\n".repeat(20_000)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("a/b/text.txt", root.join("link")).unwrap();
}

fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        "{} differs",
        b.display()
    );
}

#[test]
fn backup_restore_check_round_trip_on_the_memory_backend() {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path());
    let opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        ..Default::default()
    };
    let first = backup_paths(repo, &opts, Arc::new(Progress::default())).unwrap();
    assert_eq!(first.snapshot.summary.files, 3);

    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let second = backup_paths(repo.clone(), &opts, Arc::new(Progress::default())).unwrap();
    assert_eq!(
        second.snapshot.summary.files_unchanged, 3,
        "the parent snapshot lets unchanged files be skipped"
    );
    // Only tree blobs may be new: the metadata of ancestors such as /tmp changes as
    // other processes create files there. No file data is stored again.
    assert!(
        second.snapshot.summary.bytes_added_raw < 16 << 10,
        "file data stored again: {:?}",
        second.snapshot.summary
    );

    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let (_out, restored) = restore_all(&repo, &second.snapshot, src.path());
    for f in ["a/noise.bin", "a/b/text.txt", "empty"] {
        assert_same_file(&src.path().join(f), &restored.join(f));
    }
    assert_eq!(
        std::fs::read_link(restored.join("link")).unwrap(),
        Path::new("a/b/text.txt")
    );
    let r = check(
        &ReadView::open(repo.repo.clone()).unwrap(),
        true,
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}

#[test]
fn a_flipped_bit_in_a_pack_is_found_by_check_and_fails_only_that_file() {
    let mem = Arc::new(MemoryBackend::new());
    let backend: DynBackend = mem.clone();
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path());
    let opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        ..Default::default()
    };
    let snap = backup_paths(repo, &opts, Arc::new(Progress::default()))
        .unwrap()
        .snapshot;
    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    // Find the pack holding the random file's first blob and flip one bit in it.
    let noise_blob = {
        let root = haven_repo::walk::load_tree(&repo, &snap.tree).unwrap();
        let mut node = root.nodes[0].clone();
        let mut path = vec![];
        loop {
            path.push(node.name_lossy());
            let t = haven_repo::walk::load_tree(&repo, &node.subtree.unwrap()).unwrap();
            match t.find(b"noise.bin") {
                Some(n) => break n.content[0],
                None => {
                    node = t
                        .nodes
                        .iter()
                        .find(|n| n.kind == NodeKind::Dir)
                        .unwrap()
                        .clone()
                }
            }
        }
    };
    let loc = repo.index.get(&noise_blob).unwrap();
    let name = loc.pack.to_hex();
    let mut bytes = backend.read(FileKind::Pack, &name).unwrap();
    bytes[loc.blob.offset as usize + 40] ^= 0x10;
    mem.tamper(FileKind::Pack, &name, bytes);

    let r = check(
        &ReadView::open(repo.repo.clone()).unwrap(),
        true,
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(!r.ok(), "check --read-data must find the flipped bit");
    assert!(
        r.problems.iter().any(|p| p.contains(&loc.pack.short())),
        "{:?}",
        r.problems
    );
    let out = tempfile::tempdir().unwrap();
    let report = restore(
        &repo,
        &snap,
        &RestoreOptions {
            target: out.path().into(),
            include: vec![],
        },
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].0.ends_with("noise.bin") && report.failed[0].1.contains("damaged"));
    let restored = out.path().join(src.path().strip_prefix("/").unwrap());
    assert!(
        !restored.join("a/noise.bin").exists(),
        "no wrong bytes under the real name"
    );
    assert_same_file(
        &src.path().join("a/b/text.txt"),
        &restored.join("a/b/text.txt"),
    );
}

#[test]
fn streams_round_trip_and_a_wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = haven_store::open_location(dir.path().join("repo").to_str().unwrap()).unwrap();
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let wrong = Repository::open(backend.clone(), &Secret::Passphrase("nope".into())).unwrap_err();
    assert!(matches!(wrong, RepoError::WrongPassword(_)), "{wrong}");
    let repo = Repository::open(backend.clone(), &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let r = backup_stream(
        repo,
        &data[..],
        "db.dump",
        vec![],
        None,
        Arc::new(Progress::default()),
    )
    .unwrap();
    let repo = Repository::open(backend, &pass())
        .unwrap()
        .indexed()
        .unwrap();
    let mut out = vec![];
    restore_to_writer(&repo, &r.snapshot, None, &mut out).unwrap();
    assert!(out == data, "the stream restores byte-identical");
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        proptest::collection::vec(any::<u8>(), 1..40),
        any::<u32>(),
        any::<i64>(),
        any::<u64>(),
        proptest::collection::vec(any::<[u8; 32]>(), 0..4),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(|(name, mode, mtime, size, content, sub)| Node {
            name,
            kind: if sub.is_some() {
                NodeKind::Dir
            } else {
                NodeKind::File
            },
            mode: mode & 0o7777,
            uid: mode,
            gid: mode / 3,
            mtime_ns: mtime,
            ctime_ns: mtime / 2,
            inode: size,
            device: 7,
            links: 1,
            rdev: 0,
            size,
            content: content.into_iter().map(BlobId).collect(),
            subtree: sub.map(BlobId),
            link_target: vec![],
            xattrs: vec![],
        })
}

proptest! {
    #[test]
    fn trees_round_trip(nodes in proptest::collection::vec(arb_node(), 0..30)) {
        let tree = Tree { nodes };
        prop_assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
    }

    #[test]
    fn packs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..5000), 1..12)) {
        let key = MasterKey::from_bytes(&[9; 64]);
        let mut b = PackBuilder::new(1 << 16);
        for data in &blobs {
            b.add(pack::seal_blob(&key, BlobKind::Data, BlobId(key.id_of(data)), data, 1));
        }
        let (id, bytes, listed) = b.finish(&key);
        prop_assert_eq!(id.0, key.id_of(&bytes));
        let parsed = pack::parse_pack(&key, &bytes).unwrap();
        prop_assert_eq!(&parsed, &listed);
        for (entry, data) in parsed.iter().zip(&blobs) {
            let sealed = &bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
            prop_assert_eq!(&pack::open_blob(&key, entry, sealed).unwrap(), data);
        }
    }
}

/// `racy_margin`: a file written just before the parent backup began is read again by
/// the next one (it may have changed within its timestamp tick after the parent read
/// it); a file older than the margin is taken from the parent. `exclude`: the entries it
/// names are neither stored nor descended into.
#[test]
fn a_racy_margin_rereads_recent_files_and_exclude_leaves_entries_out() {
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
    let open = || {
        Repository::open(backend.clone(), &pass())
            .unwrap()
            .indexed()
            .unwrap()
    };
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("old"), "written an hour ago").unwrap();
    let aged = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(src.path().join("old"))
        .status()
        .unwrap();
    assert!(aged.success());
    std::fs::write(src.path().join("recent"), "written just now").unwrap();
    std::fs::create_dir(src.path().join("skipped")).unwrap();
    std::fs::write(src.path().join("skipped/inside"), "never stored").unwrap();
    let skipped = src.path().join("skipped");
    let exclude = haven_repo::backup::Exclude(Arc::new(move |p, _| p == skipped.as_path()));
    let opts = |margin| BackupOptions {
        paths: vec![src.path().to_path_buf()],
        exclude: Some(exclude.clone()),
        racy_margin: margin,
        ..Default::default()
    };
    let first = backup_paths(open(), &opts(None), Arc::new(Progress::default())).unwrap();
    assert_eq!(
        first.snapshot.summary.files, 2,
        "{:?}",
        first.snapshot.summary
    );

    let trusted = backup_paths(open(), &opts(None), Arc::new(Progress::default())).unwrap();
    assert_eq!(trusted.snapshot.summary.files_unchanged, 2);
    let margin = Some(std::time::Duration::from_secs(60));
    let careful = backup_paths(open(), &opts(margin), Arc::new(Progress::default())).unwrap();
    assert_eq!(
        careful.snapshot.summary.files_unchanged, 1,
        "only the hour-old file is trusted: {:?}",
        careful.snapshot.summary
    );

    let (_out, restored) = restore_all(&open(), &careful.snapshot, src.path());
    assert_same_file(&src.path().join("old"), &restored.join("old"));
    assert_same_file(&src.path().join("recent"), &restored.join("recent"));
    assert!(
        !restored.join("skipped").exists(),
        "excluded folder restored"
    );
}
