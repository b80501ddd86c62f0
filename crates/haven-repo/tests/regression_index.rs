//! Regression tests for the index's integrity (issue 10): `repair index`, adoption of
//! unindexed packs and prune must never lose blobs they cannot prove lost, and must
//! never trust a pack whose content does not match its name.
//!
//! Each test backs up a small tree whose one data pack (`big.bin` and `small.txt`)
//! is damaged or imitated, then runs the verbs and restores every byte.

use std::sync::Arc;

use haven_repo::backup::{backup_paths, BackupOptions};
use haven_repo::check::check;
use haven_repo::id::PackId;
use haven_repo::index::IndexPack;
use haven_repo::pack::{self, BlobKind};
use haven_repo::progress::Progress;
use haven_repo::prune::{prune, PruneOptions};
use haven_repo::read::ReadView;
use haven_repo::repair::repair_index;
use haven_repo::snapshot::Snapshot;
use haven_repo::{IndexedRepository, Repository};
use haven_store::{DynBackend, FileKind, MemoryBackend};

mod common;
use common::{fast_opts, noise, pass, restore_all};

struct Case {
    mem: Arc<MemoryBackend>,
    src: tempfile::TempDir,
    snap: Snapshot,
    /// The one data pack of the backup.
    data_pack: PackId,
}

/// A reader's view (snapshots, then index) of the repository `repo` was opened on.
fn view(repo: &IndexedRepository) -> ReadView {
    ReadView::open(repo.repo.clone()).unwrap()
}

fn open(backend: DynBackend) -> IndexedRepository {
    Repository::open(backend, &pass())
        .unwrap()
        .indexed()
        .unwrap()
}

impl Case {
    fn new() -> Case {
        let mem = Arc::new(MemoryBackend::new());
        let backend: DynBackend = mem.clone();
        Repository::init(backend.clone(), &pass(), &fast_opts()).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("big.bin"), noise(400_000, 7)).unwrap();
        std::fs::write(src.path().join("small.txt"), "kept safe\n".repeat(3000)).unwrap();
        let opts = BackupOptions {
            paths: vec![src.path().to_path_buf()],
            ..Default::default()
        };
        let snap = backup_paths(open(backend.clone()), &opts, Arc::new(Progress::default()))
            .unwrap()
            .snapshot;
        let data: Vec<PackId> = open(backend)
            .index
            .by_pack()
            .into_iter()
            .filter(|(_, blobs)| blobs.iter().all(|b| b.kind == BlobKind::Data))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(data.len(), 1, "the backup should write one data pack");
        Case {
            mem,
            src,
            snap,
            data_pack: data[0],
        }
    }

    fn backend(&self) -> DynBackend {
        self.mem.clone()
    }

    fn open(&self) -> IndexedRepository {
        open(self.backend())
    }

    fn pack_bytes(&self, id: &PackId) -> Vec<u8> {
        self.backend().read(FileKind::Pack, &id.to_hex()).unwrap()
    }

    fn stored(&self, id: &PackId) -> bool {
        self.open().repo.stored_packs().unwrap().contains_key(id)
    }

    /// Every byte of the tree comes back, and `check --read-data` finds no problem
    /// except those naming `damaged` (a pack damaged on purpose).
    fn assert_all_restored(&self, damaged: Option<&PackId>) {
        let repo = self.open();
        let (_out, restored) = restore_all(&repo, &self.snap, self.src.path());
        for f in ["big.bin", "small.txt"] {
            assert_eq!(
                std::fs::read(self.src.path().join(f)).unwrap(),
                std::fs::read(restored.join(f)).unwrap(),
                "{f} differs"
            );
        }
        let r = check(&view(&repo), true, Arc::new(Progress::default())).unwrap();
        let unexpected: Vec<&String> = r
            .problems
            .iter()
            .filter(|p| damaged.is_none_or(|d| !p.contains(&format!("pack {}", d.short()))))
            .collect();
        assert!(unexpected.is_empty(), "{:?}", r.problems);
    }
}

fn repair_keeps_a_pack_with(damage: impl FnOnce(&mut Vec<u8>)) {
    let case = Case::new();
    let name = case.data_pack.to_hex();
    let mut bytes = case.pack_bytes(&case.data_pack);
    damage(&mut bytes);
    case.mem.tamper(FileKind::Pack, &name, bytes);

    let problems = repair_index(&case.open()).unwrap().problems;
    assert!(
        problems.iter().any(|p| p.contains(&case.data_pack.short())),
        "repair index must report the damaged pack: {problems:?}"
    );
    let repo = case.open();
    assert!(
        repo.index.pack_ids().contains(&case.data_pack),
        "repair index dropped the entries of a pack whose blobs are all intact"
    );
    let r = check(&view(&repo), false, Arc::new(Progress::default())).unwrap();
    assert!(
        !r.notes.iter().any(|n| n.contains(&case.data_pack.short())),
        "check calls the pack a leftover: {:?}",
        r.notes
    );
    prune(
        &repo,
        &PruneOptions::default(),
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(case.stored(&case.data_pack), "prune deleted the pack");
    case.assert_all_restored(Some(&case.data_pack));
}

#[test]
fn repair_index_keeps_the_blobs_of_a_pack_whose_last_byte_is_damaged() {
    repair_keeps_a_pack_with(|b| *b.last_mut().unwrap() ^= 0x40);
}

#[test]
fn repair_index_keeps_the_blobs_of_a_pack_whose_header_is_damaged() {
    repair_keeps_a_pack_with(|b| {
        let n = b.len();
        b[n - 10] ^= 0x01;
    });
}

/// A pack made of garbage followed by a copy of `real`'s sealed header and trailer,
/// stored under a made-up name: its header opens and lists `real`'s blobs.
fn plant_copy_of_header(case: &Case, real: &PackId, seed: u64) -> PackId {
    let bytes = case.pack_bytes(real);
    let hlen = pack::header_length(&bytes[bytes.len() - 4..]).unwrap() as usize;
    let body = bytes.len() - 4 - hlen;
    let mut fake = noise(body, seed);
    fake.extend_from_slice(&bytes[body..]);
    // A name below every real one, so that the planted copy is the primary (13.1).
    let mut id = [0u8; 32];
    id[31] = seed as u8;
    let id = PackId(id);
    case.backend()
        .write(FileKind::Pack, &id.to_hex(), &fake)
        .unwrap();
    id
}

#[test]
fn a_planted_pack_with_a_copied_header_is_neither_adopted_nor_indexed_by_repair() {
    let case = Case::new();
    let planted = plant_copy_of_header(&case, &case.data_pack, 11);

    // Adoption (start of every backup and copy).
    let mut repo = case.open();
    assert_eq!(
        repo.adopt_unindexed_packs().unwrap(),
        0,
        "planted pack adopted"
    );
    assert!(!repo.index.pack_ids().contains(&planted));

    // Repair index.
    let problems = repair_index(&case.open()).unwrap().problems;
    assert!(
        problems.iter().any(|p| p.contains(&planted.short())),
        "repair index must name the planted pack: {problems:?}"
    );
    let repo = case.open();
    assert!(
        !repo.index.pack_ids().contains(&planted),
        "planted pack indexed"
    );
    assert!(repo.index.pack_ids().contains(&case.data_pack));

    // A backup of the same tree, then prune: the planted pack goes, the real one stays.
    let opts = BackupOptions {
        paths: vec![case.src.path().to_path_buf()],
        ..Default::default()
    };
    let mut repo = case.open();
    repo.adopt_unindexed_packs().unwrap();
    backup_paths(repo, &opts, Arc::new(Progress::default())).unwrap();
    prune(
        &case.open(),
        &PruneOptions::default(),
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(
        case.stored(&case.data_pack),
        "prune deleted the authentic pack"
    );
    assert!(!case.stored(&planted), "prune kept the planted pack");
    case.assert_all_restored(None);
}

#[test]
fn prune_keeps_the_verified_copy_when_an_index_names_planted_packs() {
    // An index written before adoption verified packs may name planted packs that
    // claim the real pack's blobs: prune must keep the copy that verifies.
    let case = Case::new();
    let header = {
        let repo = case.open();
        let size = repo.repo.stored_packs().unwrap()[&case.data_pack];
        repo.repo.read_pack_header(&case.data_pack, size).unwrap()
    };
    let planted: Vec<PackId> = (0..4)
        .map(|seed| plant_copy_of_header(&case, &case.data_pack, 21 + seed))
        .collect();
    let repo = case.open();
    repo.repo
        .write_index(
            planted
                .iter()
                .map(|id| IndexPack {
                    id: *id,
                    blobs: header.clone(),
                })
                .collect(),
        )
        .unwrap();
    // Reads routed to a planted copy fall back to the copy that opens.
    let repo = case.open();
    let (_out, restored) = restore_all(&repo, &case.snap, case.src.path());
    assert_eq!(
        std::fs::read(case.src.path().join("big.bin")).unwrap(),
        std::fs::read(restored.join("big.bin")).unwrap()
    );
    let report = prune(
        &repo,
        &PruneOptions::default(),
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(
        case.stored(&case.data_pack),
        "prune deleted the authentic pack"
    );
    for p in &planted {
        assert!(
            !case.stored(p),
            "prune kept planted pack {}: {report:?}",
            p.short()
        );
    }
    let repo = case.open();
    for b in &header {
        assert_eq!(
            repo.index.get(&b.id).map(|l| l.pack),
            Some(case.data_pack),
            "after prune the index names only the authentic pack"
        );
    }
    case.assert_all_restored(None);
}

#[test]
fn duplicate_index_entries_are_decided_by_pack_id() {
    // Two index files naming the same blobs in two packs, written in either order,
    // give the same winner: the same repository reads the same way every time.
    let case = Case::new();
    let header = {
        let repo = case.open();
        let size = repo.repo.stored_packs().unwrap()[&case.data_pack];
        repo.repo.read_pack_header(&case.data_pack, size).unwrap()
    };
    let planted = plant_copy_of_header(&case, &case.data_pack, 99);
    case.open()
        .repo
        .write_index(vec![IndexPack {
            id: planted,
            blobs: header.clone(),
        }])
        .unwrap();
    let repo = case.open();
    let lowest = std::cmp::min(planted, case.data_pack);
    for b in &header {
        assert_eq!(repo.index.get(&b.id).unwrap().pack, lowest);
    }
    assert!(repo.index.by_pack().contains_key(&planted));
    assert!(repo.index.by_pack().contains_key(&case.data_pack));
}
