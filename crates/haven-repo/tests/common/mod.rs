//! Fixtures shared by the engine's integration tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use haven_repo::chunker::ChunkerParams;
use haven_repo::keys::{KdfParams, Secret};
use haven_repo::progress::Progress;
use haven_repo::restore::{restore, RestoreOptions};
use haven_repo::snapshot::Snapshot;
use haven_repo::{IndexedRepository, InitOptions};

/// Small chunks and packs and a cheap KDF, so tests make many packs from little data.
pub fn fast_opts() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        pack_size: 1 << 20,
        kdf: KdfParams {
            memory_kib: 8 << 10,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

pub fn pass() -> Secret {
    Secret::Passphrase("correct horse".into())
}

/// Restore all of `snap` into a new temporary folder, asserting that nothing failed;
/// returns the folder and where the backed-up `source` path landed in it.
pub fn restore_all(
    repo: &IndexedRepository,
    snap: &Snapshot,
    source: &Path,
) -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let report = restore(
        repo,
        snap,
        &RestoreOptions {
            target: out.path().into(),
            include: vec![],
        },
        Arc::new(Progress::default()),
    )
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let restored = out.path().join(source.strip_prefix("/").unwrap());
    (out, restored)
}

/// `len` bytes that do not compress (xorshift from `seed`, which must not be 0).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
