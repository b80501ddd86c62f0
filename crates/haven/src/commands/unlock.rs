use anyhow::Result;

use crate::cli::{Global, UnlockArgs};

pub fn run(g: &Global, a: UnlockArgs) -> Result<i32> {
    let repo = super::open(g, super::Write)?;
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
    let r = haven_repo::repair::repair_index(&repo)?;
    for p in &r.problems {
        eprintln!("haven: problem: {p}");
    }
    super::report(
        g,
        format!(
            "rebuilt the index from {} pack(s) ({} read whole to verify them against their name)",
            r.packs_indexed, r.packs_read_whole
        ),
        serde_json::json!(r),
    );
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}

/// `haven repair` on a mirror: copy what a returning site lacks, verify, report.
pub fn repair_mirror(g: &Global) -> Result<i32> {
    let loc = super::location(g)?;
    let Some(mirror) = crate::location::open_mirror(&loc, super::min_sites(g, super::Write))?
    else {
        anyhow::bail!("`haven repair` brings the sites of a mirror: repository in sync, and {loc} is not one; for a damaged index use `haven repair index`");
    };
    let repo = super::open(g, super::Write)?;
    let _lock = super::lock(g, &repo, super::Exclusive, "repair")?;
    let before = mirror.compare();
    let report = mirror.repair();
    let after = mirror.compare();
    for p in &report.problems {
        eprintln!("haven: problem: {p}");
    }
    let mut per_site: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for c in &report.copied {
        let e = per_site.entry(c.site.as_str()).or_default();
        e.0 += 1;
        e.1 += c.bytes;
    }
    let lines: Vec<String> = per_site
        .iter()
        .map(|(s, (n, b))| format!("{s}: {n} file(s), {}", crate::output::bytes(*b)))
        .collect();
    super::report(
        g,
        if lines.is_empty() {
            "all sites already hold every file".to_string()
        } else {
            format!("copied to {}", lines.join("; "))
        },
        serde_json::json!({
            "disagreements_before": before.disagreements.len(),
            "copied": per_site.iter().map(|(s, (n, b))| serde_json::json!({"site": s, "files": n, "bytes": b})).collect::<Vec<_>>(),
            "problems": report.problems,
            "in_sync": after.in_sync(),
        }),
    );
    if !after.in_sync() {
        for d in &after.disagreements {
            eprintln!(
                "haven: problem: site {} still disagrees on {:?} {}: {:?}",
                d.site, d.kind, d.name, d.problem
            );
        }
        for (s, why) in &after.unreachable {
            eprintln!("haven: problem: site {s} is unreachable ({why}); repair it when it is back");
        }
        return Ok(1);
    }
    Ok(0)
}
