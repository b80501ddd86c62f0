//! `haven find PATTERN...`: which snapshots hold paths matching the patterns. A pattern
//! without `/` matches names at any depth, one with `/` the path (the exclude rules of
//! `haven backup`, `haven_repo::backup::ExcludeRules`); `-i` ignores case. All
//! snapshots, or those named with `--snapshot`.

use std::path::Path;

use anyhow::{anyhow, Result};
use haven_repo::backup::ExcludeRules;
use haven_repo::walk;

use crate::cli::{FindArgs, Global};

pub fn run(g: &Global, a: FindArgs) -> Result<i32> {
    let mut rules = ExcludeRules::default();
    for p in &a.patterns {
        rules
            .pattern(p, a.ignore_case)
            .map_err(|e| anyhow!("{e}"))?;
    }
    let (view, _lock) = super::open_read(g, "find")?;
    let snaps: Vec<_> = if a.snapshots.is_empty() {
        view.snapshots.iter().collect()
    } else {
        a.snapshots
            .iter()
            .map(|s| view.find(s))
            .collect::<haven_repo::error::Result<_>>()?
    };
    let mut found = vec![];
    let mut errors = vec![];
    for s in snaps {
        let mut matches = vec![];
        walk::walk(
            &view.repo,
            &s.snapshot.tree,
            &mut |path: &Path, node| {
                if rules.matches(path) {
                    matches.push(serde_json::json!({
                        "path": path.display().to_string(),
                        "type": format!("{:?}", node.kind).to_lowercase(),
                        "size": node.size,
                        "mtime_ns": node.mtime_ns,
                    }));
                }
                true
            },
            &mut |path, e| {
                errors.push(format!(
                    "{} in snapshot {}: {e}",
                    path.display(),
                    s.id.short()
                ))
            },
        );
        if !matches.is_empty() {
            found.push(serde_json::json!({
                "snapshot": s.id,
                "time": s.snapshot.time,
                "hostname": s.snapshot.hostname,
                "matches": matches,
            }));
        }
    }
    if g.json {
        crate::output::json(&found);
    } else {
        for f in &found {
            println!(
                "found in snapshot {} of {}:",
                &f["snapshot"].as_str().unwrap_or("")
                    [..8.min(f["snapshot"].as_str().unwrap_or("").len())],
                f["time"].as_str().unwrap_or("")
            );
            for m in f["matches"].as_array().into_iter().flatten() {
                println!("  {:>12} {}", m["size"], m["path"].as_str().unwrap_or(""));
            }
        }
        if found.is_empty() {
            super::say(g, "no snapshot holds a matching path");
        }
    }
    for e in &errors {
        eprintln!("haven: error: {e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
