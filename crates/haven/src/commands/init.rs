use anyhow::Result;
use haven_repo::chunker::ChunkerParams;
use haven_repo::keys::KdfParams;
use haven_repo::{InitOptions, Repository};

use crate::cli::{Global, InitArgs};

pub fn run(g: &Global, a: InitArgs) -> Result<i32> {
    let loc = super::location(g)?;
    let backend = crate::location::open_backend(&loc, super::min_sites(g, super::Write))?;
    if !backend.list(haven_store::FileKind::Marker)?.is_empty() {
        anyhow::bail!("a repository exists at {loc} already; nothing was changed");
    }
    let avg = a.chunk_avg_kib.saturating_mul(1024);
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg.saturating_mul(4),
        },
        compression_level: a.compression,
        pack_size: a.pack_size_mib << 20,
        kdf: KdfParams {
            memory_kib: a.kdf_memory_mib << 10,
            iterations: a.kdf_iterations,
            parallelism: 1,
        },
    };
    let secret = crate::secret::current(g, true)?;
    let repo = Repository::init(backend, &secret, &opts)?;
    if g.json {
        crate::output::json(
            &serde_json::json!({"location": repo.location(), "id": hex::encode(repo.config().repo_id)}),
        );
    } else {
        super::say(
            g,
            format!(
                "created repository {} at {}",
                &hex::encode(repo.config().repo_id)[..8],
                repo.location()
            ),
        );
        super::say(
            g,
            "keep the passphrase safe: without it the data cannot be recovered",
        );
    }
    Ok(0)
}
