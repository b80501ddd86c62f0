//! `haven copy --from-repo X --to-repo Y`: copy snapshots, keeping their ids.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use haven_repo::copy;
use haven_repo::keys::Secret;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::Repository;

use crate::cli::{CopyArgs, Global};
use crate::output::bytes;

fn open_at(
    g: &Global,
    loc: &str,
    access: super::Access,
    secret: impl FnOnce() -> Result<Secret>,
) -> Result<Repository> {
    let backend = crate::location::open_backend(loc, super::min_sites(g, access))?;
    haven_repo::repository::require_marker(&backend)?;
    Ok(Repository::open(backend, &secret()?)?)
}

/// The destination's secret: --to-key-file, --to-password-file, HAVEN_TO_PASSWORD,
/// else the source's.
fn destination_secret(a: &CopyArgs, source: &Secret) -> Result<Secret> {
    if let Some(path) = &a.to_key_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the key file {}", path.display()))?;
        if bytes.len() < 32 {
            bail!("the key file {} holds fewer than 32 bytes", path.display());
        }
        return Ok(Secret::KeyFile(bytes));
    }
    if let Some(path) = &a.to_password_file {
        return crate::secret::new_secret(Some(path), None);
    }
    if let Ok(pw) = std::env::var("HAVEN_TO_PASSWORD") {
        if !pw.is_empty() {
            return Ok(Secret::Passphrase(pw));
        }
    }
    Ok(source.clone())
}

pub fn run(g: &Global, a: CopyArgs) -> Result<i32> {
    let mut source_secret = None;
    let src = open_at(g, &a.from_repo, super::Read, || {
        let s = crate::secret::current(g, false)?;
        source_secret = Some(s.clone());
        Ok(s)
    })
    .with_context(|| format!("opening the source repository {}", a.from_repo))?;
    let source_secret = source_secret.expect("set by open_at");
    let dst = open_at(g, &a.to_repo, super::Write, || {
        destination_secret(&a, &source_secret)
    })
    .with_context(|| format!("opening the destination repository {}", a.to_repo))?;
    let _src_lock = super::lock(g, &src, super::Read, "copy (source)")?;
    let _dst_lock = super::lock(g, &dst, super::Write, "copy")?;

    let (all, damaged) = src.snapshots()?;
    for (name, why) in &damaged {
        eprintln!(
            "haven: warning: snapshot {} of the source is unreadable and not copied: {why}",
            &name[..8]
        );
    }
    let chosen = select(&src, all, &a)?;

    let src = src.indexed()?;
    let mut dst = dst.indexed()?;
    let adopted = dst.adopt_unindexed_packs()?;
    if adopted > 0 && !g.quiet && !g.json {
        eprintln!("haven: reusing {adopted} pack(s) uploaded by an interrupted copy or backup");
    }
    let result = super::with_progress(g, "copy", |p| copy::copy_snapshots(&src, &dst, &chosen, p))?;
    super::report(
        g,
        format!(
            "{} snapshot(s) copied, {} already present; {} new data ({} stored)",
            result.copied.len(),
            result.skipped.len(),
            bytes(result.bytes_added_raw),
            bytes(result.bytes_added_stored)
        ),
        serde_json::to_value(&result)?,
    );
    Ok(0)
}

/// The snapshots to copy, oldest first: explicit ids, or all, then --tag/--host, then
/// the newest --latest N.
fn select(src: &Repository, all: Vec<SnapshotEntry>, a: &CopyArgs) -> Result<Vec<SnapshotEntry>> {
    let mut list = if a.snapshots.is_empty() {
        all
    } else {
        let mut ids = HashSet::new();
        for spec in &a.snapshots {
            ids.insert(src.find_snapshot(spec)?.id);
        }
        all.into_iter().filter(|s| ids.contains(&s.id)).collect()
    };
    list.retain(|s| {
        (a.tags.is_empty() || a.tags.iter().any(|t| s.snapshot.tags.contains(t)))
            && a.host.as_ref().is_none_or(|h| &s.snapshot.hostname == h)
    });
    if let Some(n) = a.latest {
        let drop = list.len().saturating_sub(n);
        list.drain(..drop);
    }
    Ok(list)
}
