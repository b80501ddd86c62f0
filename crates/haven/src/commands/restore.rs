use anyhow::Result;
use haven_repo::restore::{self, RestoreOptions};

use crate::cli::{Global, RestoreArgs};
use crate::output::bytes;

pub fn run(g: &Global, a: RestoreArgs) -> Result<i32> {
    let (view, _lock) = super::open_read(g, "restore")?;
    let (repo, snap) = (&view.repo, view.find(&a.snapshot)?);
    if a.stdout {
        if a.include.len() > 1 {
            anyhow::bail!("--stdout writes one file: give at most one --include");
        }
        let mut out = std::io::stdout().lock();
        restore::restore_to_writer(
            repo,
            &snap.snapshot,
            a.include.first().map(|p| p.as_path()),
            &mut out,
        )?;
        return Ok(0);
    }
    let target = a.target.expect("clap requires --target without --stdout");
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include,
    };
    let started = std::time::Instant::now();
    let report = super::with_json_progress(g, "restore", |p| {
        restore::restore(repo, &snap.snapshot, &opts, p)
    })?;
    for w in &report.warnings {
        eprintln!("haven: warning: {w}");
    }
    for (path, why) in &report.skipped {
        eprintln!("haven: warning: not restored: {path}: {why}");
    }
    for (path, why) in &report.failed {
        eprintln!("haven: error: not restored: {path}: {why}");
    }
    if g.json {
        crate::output::json_line(
            &serde_json::json!({"message_type": "summary", "snapshot": snap.id, "target": target, "report": report}),
        );
    } else {
        super::say(
            g,
            format!(
                "restored snapshot {} to {}: {} files, {} dirs, {} in {:.1}s",
                snap.id.short(),
                target.display(),
                report.files,
                report.dirs,
                bytes(report.bytes),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    let full = report.failed_no_space as usize;
    if full > 0 {
        eprintln!(
            "haven: the target's disk is full: {full} file(s) could not be restored (listed above); free space on the disk holding {} (or restore to another one) and run the restore again",
            target.display()
        );
    }
    if report.failed.len() > full {
        eprintln!(
            "haven: {} file(s) could not be restored (listed above); run `haven check --read-data`",
            report.failed.len() - full
        );
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "haven: {} special file(s) cannot be restored (listed above); everything else was restored",
            report.skipped.len()
        );
    }
    if !report.failed.is_empty() || !report.skipped.is_empty() {
        return Ok(3);
    }
    Ok(0)
}
