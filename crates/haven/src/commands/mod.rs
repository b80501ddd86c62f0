//! One module per verb; `run` dispatches. Shared here: opening the repository with the
//! right secret and lock.

mod backup;
mod check;
mod copy;
mod demo;
mod diff;
mod dr;
mod dr_report;
mod dr_runner;
mod find;
mod forget;
mod init;
mod key;
mod ls;
mod mount;
mod replica;
mod restore;
mod serve;
mod snapshots;
mod stats;
mod tag;
mod tenant;
mod unlock;
mod volume;
mod wal;

use std::sync::Arc;

use anyhow::{Context, Result};
use haven_repo::lock::RepoLock;
use haven_repo::progress::Progress;
use haven_repo::read::ReadView;
use haven_repo::{IndexedRepository, Repository};
pub use Access::{Exclusive, Inspect, Read, Write};

use crate::cli::{Cli, Command, Global, KeyCommand, RepairCommand};
use crate::output::ProgressView;
use haven_ops::location::SiteAccess;
use haven_store::MinSites;

pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    haven_store::throttle::set_limits(haven_store::throttle::Limits {
        upload: g.limit_upload,
        download: g.limit_download,
    });
    match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Find(a) => find::run(g, a),
        Command::Tag(a) => tag::run(g, a),
        Command::Mount(a) => mount::run(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Prune(a) => forget::prune(g, a.dry_run, a.repack_unused_percent),
        Command::Key(KeyCommand::List) => key::list(g),
        Command::Key(KeyCommand::Add(a)) => key::add(g, a),
        Command::Key(KeyCommand::Remove { id }) => key::remove(g, &id),
        Command::Key(KeyCommand::Passwd(a)) => key::passwd(g, a),
        Command::Stats => stats::run(g),
        Command::Unlock(a) => unlock::run(g, a),
        Command::Repair(a) => match a.what {
            Some(RepairCommand::Index) => unlock::repair_index(g),
            None => unlock::repair_mirror(g),
        },
        Command::Tenant(t) => tenant::run(g, t),
        Command::Dr(d) => dr::run(g, d),
        Command::Demo(a) => demo::run(g, a),
        Command::Serve(a) => serve::run(g, a),
        Command::Wal(w) => wal::run(g, w),
        Command::Replica(r) => replica::run(r),
        Command::Volume(v) => volume::run(g, v),
    }
}

/// The --min-sites rule for mirror: repositories: a verb that only reads takes its
/// lock on the sites that answer; writers need every site unless --min-sites says fewer.
pub fn min_sites(g: &Global, access: Access) -> MinSites {
    let access = match access {
        Access::Read | Access::Inspect => SiteAccess::Reading,
        Access::Write | Access::Exclusive => SiteAccess::Writing,
    };
    access.min_sites(g.min_sites)
}

pub fn location(g: &Global) -> Result<String> {
    g.repo
        .clone()
        .context("no repository given: pass --repo PATH or set HAVEN_REPOSITORY")
}

/// Open the repository (key and config), without the index, for a verb that does
/// `access` (which decides how many mirror sites it needs).
pub fn open(g: &Global, access: Access) -> Result<Repository> {
    let loc = location(g)?;
    let backend = crate::location::open_backend(&loc, min_sites(g, access))?;
    // Fail fast (before asking for a passphrase) when there is no repository.
    haven_repo::repository::require_marker(&backend)?;
    let secret = crate::secret::current(g, false)?;
    Ok(Repository::open(backend, &secret)?)
}

/// What a verb does to the repository, which decides its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: a shared lock, or none with `--no-lock` or when the device is too
    /// full to write a lock file (a warning says so).
    Read,
    /// Reads only to report damage (`check`): as `Read`, and an unreadable lock file
    /// does not stop it (FORMAT.md 16.4): it runs without a lock and the report notes
    /// the file.
    Inspect,
    /// Adds files: a shared lock.
    Write,
    /// May delete data others use: the exclusive lock.
    Exclusive,
}

/// Take the lock `access` needs; `None` when a read-only verb runs without one.
pub fn lock(
    g: &Global,
    repo: &Repository,
    access: Access,
    purpose: &str,
) -> Result<Option<RepoLock>> {
    let reads_only = matches!(access, Access::Read | Access::Inspect);
    if reads_only && g.no_lock {
        return Ok(None);
    }
    match RepoLock::acquire(repo, access == Access::Exclusive, purpose, g.lock_wait) {
        Ok(l) => Ok(Some(l)),
        Err(haven_repo::RepoError::UnreadableLock { name, .. }) if access == Access::Inspect => {
            eprintln!("haven: warning: unreadable lock file {name}; running without a lock (a concurrent prune could make this report false damage, never cause any)");
            Ok(None)
        }
        Err(e) if reads_only && e.is_no_space() => {
            eprintln!("haven: warning: no space left to write a lock file; reading without a lock (a concurrent prune could make this command fail, never damage data)");
            Ok(None)
        }
        Err(e) if reads_only && e.is_read_only() => Err(anyhow::anyhow!(
            "{e}; the repository is read-only here, so no lock file can be written: read-only commands such as this one run without a lock with --no-lock (a concurrent prune could then make them fail, never damage data)"
        )),
        Err(e) if e.is_no_space() => Err(anyhow::anyhow!(
            "{e}; free space on the repository's device first (read-only commands still work, e.g. `haven snapshots`)"
        )),
        Err(e) => Err(e.into()),
    }
}

/// Open, lock and load the index; the lock lives as long as the returned guard.
/// For writers; readers use [`open_read`].
pub fn open_locked(
    g: &Global,
    access: Access,
    purpose: &str,
) -> Result<(IndexedRepository, Option<RepoLock>)> {
    let repo = open(g, access)?;
    let lock = lock(g, &repo, access, purpose)?;
    let indexed = repo.indexed()?;
    warn_damaged_index(&indexed);
    Ok((indexed, lock))
}

/// Open and lock (shared) for reading, list the snapshots, then load the index (the
/// read ordering, FORMAT.md 17.8).
pub fn open_read(g: &Global, purpose: &str) -> Result<(ReadView, Option<RepoLock>)> {
    open_read_as(g, Read, purpose)
}

/// [`open_read`] for a reader of kind `access` (`Read` or `Inspect`).
pub fn open_read_as(
    g: &Global,
    access: Access,
    purpose: &str,
) -> Result<(ReadView, Option<RepoLock>)> {
    let repo = open(g, access)?;
    let lock = lock(g, &repo, access, purpose)?;
    let view = ReadView::open(repo)?;
    warn_damaged_index(&view.repo);
    Ok((view, lock))
}

fn warn_damaged_index(repo: &IndexedRepository) {
    for (name, why) in &repo.index.damaged {
        eprintln!("haven: warning: index file {} is unreadable ({why}); its blobs are treated as missing. Run `haven check`, then `haven repair index`", &name[..8]);
    }
}

/// Run `work` with a progress bar on a terminal.
pub fn with_progress<T>(g: &Global, label: &str, work: impl FnOnce(Arc<Progress>) -> T) -> T {
    let progress = Arc::new(Progress::default());
    let view = ProgressView::start(progress.clone(), label, !g.json && !g.quiet);
    let out = work(progress);
    view.finish();
    out
}

/// [`with_progress`] for verbs whose --json output is JSON lines (`backup`, `restore`):
/// status events while `work` runs, the summary after it.
pub fn with_json_progress<T>(g: &Global, label: &str, work: impl FnOnce(Arc<Progress>) -> T) -> T {
    if !g.json {
        return with_progress(g, label, work);
    }
    let progress = Arc::new(Progress::default());
    let status = crate::output::JsonStatus::start(progress.clone(), label);
    let out = work(progress);
    status.finish();
    out
}

/// The result of a verb: `json` with --json, else `line` unless --quiet.
pub fn report(g: &Global, line: impl AsRef<str>, json: serde_json::Value) {
    if g.json {
        crate::output::json(&json);
    } else {
        say(g, line);
    }
}

/// Print a line unless --quiet or --json.
pub fn say(g: &Global, line: impl AsRef<str>) {
    if !g.quiet && !g.json {
        println!("{}", line.as_ref());
    }
}
