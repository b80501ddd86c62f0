//! Fixtures shared by the engine's integration tests.

use haven_repo::chunker::ChunkerParams;
use haven_repo::keys::{KdfParams, Secret};
use haven_repo::InitOptions;

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
