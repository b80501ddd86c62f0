use std::collections::HashSet;

use anyhow::{bail, Result};
use haven_repo::prune::{self, PruneOptions};
use haven_repo::retention::{self, KeepPolicy};
use haven_store::FileKind;

use crate::cli::{ForgetArgs, Global};
use crate::output::bytes;

pub fn run(g: &Global, a: ForgetArgs) -> Result<i32> {
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        tags: a.keep_tag.clone(),
    };
    let by_policy = !policy.is_empty() || a.keep_none;
    if !by_policy && a.snapshots.is_empty() {
        bail!("nothing to forget: give snapshot ids or a policy such as --keep-daily 15");
    }
    if by_policy && !a.snapshots.is_empty() {
        bail!("give either snapshot ids or a --keep-* policy, not both");
    }
    policy.validate(a.keep_none)?;
    let repo = super::open(g, super::Write)?;
    let lock = super::lock(g, &repo, super::Write, "forget")?;
    let (all, _) = repo.snapshots()?;
    let mut remove = vec![];
    if a.snapshots.is_empty() {
        let candidates: Vec<_> = all
            .into_iter()
            .filter(|s| super::snapshots::matches(s, &a.filter))
            .collect();
        let decisions = retention::apply(candidates, &policy, a.group_by);
        let mut out = vec![];
        for d in decisions {
            if !g.json {
                super::say(
                    g,
                    format!(
                        "group {}: keep {}, remove {}",
                        d.key,
                        d.keep.len(),
                        d.remove.len()
                    ),
                );
                for (s, why) in &d.keep {
                    super::say(
                        g,
                        format!(
                            "  keep   {} {} ({})",
                            s.id.short(),
                            s.snapshot.time.format("%Y-%m-%d %H:%M:%S"),
                            why.join(", ")
                        ),
                    );
                }
                for s in &d.remove {
                    super::say(
                        g,
                        format!(
                            "  remove {} {}",
                            s.id.short(),
                            s.snapshot.time.format("%Y-%m-%d %H:%M:%S")
                        ),
                    );
                }
            }
            out.push(serde_json::json!({"group": d.key, "keep": d.keep.iter().map(|(s, _)| s.id).collect::<Vec<_>>(), "remove": d.remove.iter().map(|s| s.id).collect::<Vec<_>>()}));
            remove.extend(d.remove.into_iter().map(|s| s.id));
        }
        if g.json {
            crate::output::json(&out);
        }
    } else {
        let mut seen = HashSet::new();
        for spec in &a.snapshots {
            let s = repo.find_snapshot(spec)?;
            if seen.insert(s.id) {
                remove.push(s.id);
            }
        }
    }
    if a.dry_run {
        super::say(
            g,
            format!("dry run: would remove {} snapshot(s)", remove.len()),
        );
        return Ok(0);
    }
    for id in &remove {
        repo.backend().remove(FileKind::Snapshot, &id.to_hex())?;
    }
    super::say(g, format!("removed {} snapshot(s)", remove.len()));
    drop(lock);
    if a.prune {
        return prune(g, false, 10.0);
    }
    Ok(0)
}

pub fn prune(g: &Global, dry_run: bool, repack_unused_percent: f64) -> Result<i32> {
    if !(0.0..=100.0).contains(&repack_unused_percent) {
        bail!("--repack-unused-percent must be between 0 and 100");
    }
    let (repo, _lock) = super::open_locked(g, super::Exclusive, "prune")?;
    let opts = PruneOptions {
        dry_run,
        repack_threshold: repack_unused_percent / 100.0,
    };
    let r = super::with_progress(g, "prune", |p| prune::prune(&repo, &opts, p))?;
    if g.json {
        crate::output::json(&r);
    } else {
        let verb = if dry_run { "would free" } else { "freed" };
        super::say(
            g,
            format!(
                "{verb} {}: {} unused blobs; packs: {} deleted, {} repacked into {}, {} from interrupted runs deleted",
                bytes(r.bytes_freed),
                r.blobs_removed,
                r.packs_deleted,
                r.packs_repacked,
                r.packs_written,
                r.packs_unindexed_deleted
            ),
        );
    }
    Ok(0)
}
