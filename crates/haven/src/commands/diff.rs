//! `haven diff A B`: what changed between two snapshots (haven_repo::diff), as restic
//! prints it (`+`, `-`, `M`, `U` with --metadata, `T`) with totals, or as JSON.

use anyhow::Result;
use haven_repo::diff::diff;

use crate::cli::{DiffArgs, Global};
use crate::output::bytes;

pub fn run(g: &Global, a: DiffArgs) -> Result<i32> {
    let (view, _lock) = super::open_read(g, "diff")?;
    let (first, second) = (view.find(&a.first)?, view.find(&a.second)?);
    let d = diff(
        &view.repo,
        &first.snapshot.tree,
        &second.snapshot.tree,
        a.metadata,
    )?;
    if g.json {
        crate::output::json(&serde_json::json!({
            "before": first.id, "after": second.id, "diff": d,
        }));
        return Ok(0);
    }
    for e in &d.entries {
        println!("{}    {}", e.change.mark(), e.path);
    }
    super::say(
        g,
        format!(
            "comparing snapshot {} to {}: files {} new, {} removed, {} changed; added {}, removed {}",
            first.id.short(),
            second.id.short(),
            d.files_added,
            d.files_removed,
            d.files_modified,
            bytes(d.bytes_added),
            bytes(d.bytes_removed)
        ),
    );
    Ok(0)
}
