use std::path::Path;

use anyhow::Result;
use haven_repo::tree::NodeKind;
use haven_repo::walk;

use crate::cli::{Global, LsArgs};

pub fn run(g: &Global, a: LsArgs) -> Result<i32> {
    let (view, _lock) = super::open_read(g, "ls")?;
    let (repo, snap) = (&view.repo, view.find(&a.snapshot)?);
    let includes: Vec<_> = a.path.into_iter().collect();
    let mut rows = vec![];
    let mut errors = vec![];
    walk::walk(
        repo,
        &snap.snapshot.tree,
        &mut |path: &Path, node| {
            let (inside, descend) = walk::included(path, &includes);
            if inside {
                rows.push((
                    path.display().to_string(),
                    node.kind,
                    node.size,
                    node.mode,
                    node.mtime_ns,
                ));
            }
            descend
        },
        &mut |path, e| errors.push(format!("{}: {e}", path.display())),
    );
    if g.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, k, s, m, t)| serde_json::json!({"path": p, "type": format!("{k:?}").to_lowercase(), "size": s, "mode": format!("{m:o}"), "mtime_ns": t}))
            .collect();
        crate::output::json(&v);
    } else {
        for (p, k, s, m, _) in &rows {
            let t = match k {
                NodeKind::Dir => 'd',
                NodeKind::Symlink => 'l',
                NodeKind::File => '-',
                _ => '?',
            };
            println!("{t}{m:04o} {s:>12} {p}");
        }
    }
    for e in &errors {
        eprintln!("haven: error: {e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
