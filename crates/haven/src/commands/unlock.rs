use anyhow::Result;

use crate::cli::{Global, UnlockArgs};

pub fn run(g: &Global, a: UnlockArgs) -> Result<i32> {
    let repo = super::open(g)?;
    let n = haven_repo::lock::remove_locks(&repo, a.all)?;
    super::report(
        g,
        format!("removed {n} lock(s)"),
        serde_json::json!({"locks_removed": n}),
    );
    Ok(0)
}

pub fn repair_index(g: &Global) -> Result<i32> {
    let (repo, _lock) = super::open_locked(g, super::Exclusive, "repair index")?;
    let (packs, problems) = haven_repo::prune::repair_index(&repo)?;
    for p in &problems {
        eprintln!("haven: problem: {p} (left out of the index)");
    }
    super::report(
        g,
        format!("rebuilt the index from {packs} pack header(s)"),
        serde_json::json!({"packs_indexed": packs, "problems": problems}),
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}
