use anyhow::Result;
use haven_repo::backup::{self, BackupOptions, BackupResult, ParentChoice};
use haven_repo::id::SnapshotId;

use crate::cli::{BackupArgs, Global};
use crate::output::bytes;

pub fn run(g: &Global, a: BackupArgs) -> Result<i32> {
    let (mut repo, _lock) = super::open_locked(g, super::Write, "backup")?;
    let adopted = repo.adopt_unindexed_packs()?;
    if adopted > 0 && !g.quiet && !g.json {
        eprintln!("haven: reusing {adopted} pack(s) uploaded by an interrupted backup");
    }
    let result = if a.stdin {
        super::with_progress(g, "backup", |p| {
            backup::backup_stream(
                repo,
                std::io::stdin().lock(),
                &a.stdin_name,
                a.tags,
                a.host,
                p,
            )
        })?
    } else {
        let parent = match (&a.parent, a.force) {
            (_, true) => ParentChoice::None,
            (Some(spec), _) => ParentChoice::Id(resolve(&repo, spec)?),
            (None, _) => ParentChoice::Auto,
        };
        let opts = BackupOptions {
            paths: a.paths,
            tags: a.tags,
            host: a.host,
            parent,
            ..Default::default()
        };
        super::with_progress(g, "backup", |p| backup::backup_paths(repo, &opts, p))?
    };
    report(g, &result);
    Ok(if result.warnings.is_empty() { 0 } else { 3 })
}

fn resolve(repo: &haven_repo::IndexedRepository, spec: &str) -> Result<SnapshotId> {
    Ok(repo.repo.find_snapshot(spec)?.id)
}

fn report(g: &Global, r: &BackupResult) {
    for w in &r.warnings {
        eprintln!("haven: warning: skipped {w}");
    }
    for n in &r.notices {
        eprintln!("haven: warning: {n}");
    }
    let s = &r.snapshot.summary;
    if g.json {
        crate::output::json(
            &serde_json::json!({"id": r.id, "snapshot": r.snapshot, "warnings": r.warnings, "notices": r.notices}),
        );
        return;
    }
    super::say(
        g,
        format!(
            "snapshot {} saved: {} files ({} unchanged), {} dirs, {} read, {} new data ({} stored) in {:.1}s",
            r.id.short(),
            s.files,
            s.files_unchanged,
            s.dirs,
            bytes(s.bytes_read),
            bytes(s.bytes_added_raw),
            bytes(s.bytes_added_stored),
            s.seconds
        ),
    );
    if !r.warnings.is_empty() {
        eprintln!(
            "haven: the snapshot is incomplete: {} item(s) could not be read (listed above)",
            r.warnings.len()
        );
    }
}
