use anyhow::Result;

use crate::cli::Global;
use crate::output::bytes;

pub fn run(g: &Global) -> Result<i32> {
    let (view, _lock) = super::open_read(g, "stats")?;
    let s = haven_repo::stats::stats(&view)?;
    if g.json {
        crate::output::json(&s);
        return Ok(0);
    }
    println!("compression:           {}", s.compression);
    println!("snapshots:             {}", s.snapshots);
    println!(
        "packs:                 {} ({} stored)",
        s.packs,
        bytes(s.stored_bytes)
    );
    println!(
        "blobs:                 {} ({} trees), {} unique before compression",
        s.blobs,
        s.tree_blobs,
        bytes(s.unique_raw_bytes)
    );
    println!("all snapshots restore: {}", bytes(s.restore_bytes));
    println!(
        "space saving:          {:.2}x (dedup and compression)",
        s.space_saving_ratio
    );
    println!(
        "index memory:          {} bytes per blob",
        s.index_bytes_per_blob
    );
    println!(
        "repository:            {} raw, {} deduplicated, {} stored",
        bytes(s.restore_bytes),
        bytes(s.unique_raw_bytes),
        bytes(s.stored_bytes)
    );
    if !s.per_snapshot.is_empty() {
        println!("per snapshot (as backed up: raw, new after dedup, stored):");
        for p in &s.per_snapshot {
            println!(
                "  {} {}  {:>10}  {:>10}  {:>10}",
                p.id.short(),
                p.time.format("%Y-%m-%d %H:%M:%S"),
                bytes(p.raw),
                bytes(p.deduplicated),
                bytes(p.stored)
            );
        }
    }
    Ok(0)
}
