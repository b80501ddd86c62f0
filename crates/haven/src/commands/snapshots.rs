use anyhow::Result;
use haven_repo::snapshot::SnapshotEntry;

use crate::cli::{FilterArgs, Global};

/// Whether a snapshot passes --tag/--host/--path filters.
pub fn matches(s: &SnapshotEntry, f: &FilterArgs) -> bool {
    (f.tags.is_empty() || f.tags.iter().any(|t| s.snapshot.tags.contains(t)))
        && f.host.as_ref().is_none_or(|h| &s.snapshot.hostname == h)
        && (f.paths.is_empty() || f.paths.iter().all(|p| s.snapshot.paths.contains(p)))
}

pub fn run(g: &Global, f: FilterArgs) -> Result<i32> {
    let repo = super::open(g, super::Read)?;
    let _lock = super::lock(g, &repo, super::Read, "snapshots")?;
    let (all, damaged) = repo.snapshots()?;
    for (name, why) in &damaged {
        eprintln!(
            "haven: warning: snapshot {} is unreadable: {why}",
            &name[..8]
        );
    }
    let list: Vec<_> = all.into_iter().filter(|s| matches(s, &f)).collect();
    if g.json {
        crate::output::json(&list);
        return Ok(0);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<20} {:>10}  paths",
        "id", "time (UTC)", "host", "tags", "size"
    );
    for s in &list {
        let sn = &s.snapshot;
        println!(
            "{:<10} {:<20} {:<16} {:<20} {:>10}  {}",
            s.id.short(),
            sn.time.format("%Y-%m-%d %H:%M:%S"),
            sn.hostname,
            sn.tags.join(","),
            crate::output::bytes(sn.summary.bytes_total),
            sn.paths.join(" ")
        );
    }
    println!("{} snapshot(s)", list.len());
    Ok(0)
}
