use anyhow::Result;
use haven_repo::backup::{self, BackupOptions, BackupResult, DryRun, ExcludeRules, ParentChoice};
use haven_repo::id::SnapshotId;
use std::path::PathBuf;

use crate::cli::{BackupArgs, Global};
use crate::output::bytes;

pub fn run(g: &Global, a: BackupArgs) -> Result<i32> {
    // Bad lists and patterns are named before the repository is touched.
    let (paths, missing) = listed_paths(&a.paths, &a.files_from)?;
    let exclude = exclude_rules(&a, &paths)?;
    let access = if a.dry_run { super::Read } else { super::Write };
    let (mut repo, _lock) = super::open_locked(g, access, "backup")?;
    let adopted = if a.dry_run {
        0
    } else {
        repo.adopt_unindexed_packs()?
    };
    if adopted > 0 && !g.quiet && !g.json {
        eprintln!("haven: reusing {adopted} pack(s) uploaded by an interrupted backup");
    }
    let result = if a.stdin {
        super::with_json_progress(g, "backup", |p| {
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
            paths,
            tags: a.tags,
            host: a.host,
            parent,
            exclude: (!exclude.is_empty()).then(|| exclude.into_exclude()),
            ..Default::default()
        };
        if a.dry_run {
            let plan = backup::dry_run(&repo, &opts)?;
            report_dry_run(g, &plan, &missing);
            return Ok(if plan.warnings.is_empty() && missing.is_empty() {
                0
            } else {
                3
            });
        }
        let mut result =
            super::with_json_progress(g, "backup", |p| backup::backup_paths(repo, &opts, p))?;
        result.warnings.extend(missing);
        result
    };
    report(g, &result);
    Ok(if result.warnings.is_empty() { 0 } else { 3 })
}

/// The paths given and those listed in --files-from files; listed paths that do not
/// exist are returned apart (a warning each, as for files that vanish mid-backup).
fn listed_paths(given: &[PathBuf], lists: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut paths = given.to_vec();
    let mut missing = vec![];
    for list in lists {
        let text = std::fs::read_to_string(list).map_err(|e| {
            anyhow::anyhow!(
                "reading --files-from {}: {e}; name a file listing one path per line",
                list.display()
            )
        })?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let path = PathBuf::from(line);
            if std::fs::symlink_metadata(&path).is_ok() {
                paths.push(path);
            } else {
                missing.push(format!("{line} (listed in {}): not found", list.display()));
            }
        }
    }
    if paths.is_empty() && !lists.is_empty() {
        anyhow::bail!(
            "none of the paths listed in --files-from exists ({} listed): nothing to back up",
            missing.len()
        );
    }
    Ok((paths, missing))
}

fn exclude_rules(a: &BackupArgs, paths: &[PathBuf]) -> Result<ExcludeRules> {
    let mut rules = ExcludeRules::default();
    let bad = |e: String| anyhow::anyhow!("{e}");
    for p in &a.exclude {
        rules.pattern(p, false).map_err(bad)?;
    }
    for p in &a.iexclude {
        rules.pattern(p, true).map_err(bad)?;
    }
    for f in &a.exclude_file {
        rules.pattern_file(f, false).map_err(bad)?;
    }
    for f in &a.iexclude_file {
        rules.pattern_file(f, true).map_err(bad)?;
    }
    if a.exclude_caches {
        rules.caches();
    }
    for spec in &a.exclude_if_present {
        rules.if_present(spec).map_err(bad)?;
    }
    if let Some(limit) = a.exclude_larger_than {
        rules.larger_than(limit);
    }
    if a.one_file_system {
        let roots: Vec<PathBuf> = paths
            .iter()
            .map(|p| backup::resolve_path(p).unwrap_or_else(|_| p.clone()))
            .collect();
        rules.one_file_system(&roots);
    }
    Ok(rules)
}

fn report_dry_run(g: &Global, plan: &DryRun, missing: &[String]) {
    for w in plan.warnings.iter().chain(missing) {
        eprintln!("haven: warning: skipped {w}");
    }
    if g.json {
        crate::output::json(&serde_json::json!({"dry_run": plan, "missing": missing}));
        return;
    }
    if !g.quiet {
        for (path, size, why) in &plan.read {
            println!("would read {why:7} {:>10}  {path}", bytes(*size));
        }
    }
    super::say(
        g,
        format!(
            "dry run: {} files, {} dirs, {} in all; would read {} files ({}), {} unchanged{}; nothing was written",
            plan.files,
            plan.dirs,
            bytes(plan.bytes),
            plan.read.len(),
            bytes(plan.bytes_to_read),
            plan.unchanged_files,
            plan.parent
                .as_deref()
                .map(|p| format!(" since snapshot {p}"))
                .unwrap_or_default()
        ),
    );
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
        crate::output::json_line(
            &serde_json::json!({"message_type": "summary", "id": r.id, "snapshot": r.snapshot, "warnings": r.warnings, "notices": r.notices}),
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
