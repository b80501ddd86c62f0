//! Restore: snapshot trees back to files, or one file to a stream ([`restore_to_writer`]).
//!
//! ```text
//! plan (walk trees) -> directories created
//!   -> pack readers (packs front to back, needed ranges only; one thread for a local
//!      folder, several for a remote store)
//!   -> writers (N threads): decrypt, verify, write each blob at every offset that uses it
//!   -> a file's last blob: owner, mode, mtime, rename into place (restore/file.rs)
//! -> hard links, symlinks, FIFOs and devices (restore/special.rs), directory
//!    metadata (deepest first)
//! ```
//! Every path below the target is opened relative to the target's handle and no symlink
//! is followed there (restore/beneath.rs): a symlink planted in the target cannot send a
//! write outside it; one at a folder's place is replaced by the folder.
//! One sequential reader for a local folder: on these machines cold parallel reads of
//! several packs are slower than one sequential stream; a remote store gets several
//! ([`IndexedRepository::pack_readers`]) so that round trips overlap. A file with a
//! damaged or missing blob is removed and reported by name: a restore never leaves wrong
//! bytes under a real name, and the rest continues.

mod beneath;
mod file;
pub use file::start_writeback;
mod plan;
mod special;
mod stream;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use haven_store::FileKind;

use self::beneath::Target;
use crate::error::{RepoError, Result};
use crate::id::PackId;
use crate::index::IndexedRepository;
use crate::pack;
use crate::progress::Progress;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};

pub use stream::restore_to_writer;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot (absolute, as `ls` shows them); empty: everything.
    pub include: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    /// The size of the files restored (not of what was read for files that failed).
    pub bytes: u64,
    /// Files that could not be restored, with the reason (nothing is left under their name).
    pub failed: Vec<(String, String)>,
    /// How many of `failed` failed because the target's device is full.
    pub failed_no_space: u64,
    /// Entries that cannot be recreated (sockets), with the reason.
    pub skipped: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Whether owners are restored (only root can): asked once, not once per file.
pub(crate) fn restores_owners() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| crate::host::current_uid() == 0)
}

/// A restored entry's owner, extended attributes, mode and mtime, set through its open
/// handle (no path walks), in that order (see `xattr`). Returns the attributes the target
/// refused, as warnings.
pub(crate) fn apply_metadata_to_file(file: &fs::File, node: &Node) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    if restores_owners() {
        std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid))?;
    }
    let warnings = crate::xattr::apply_fd(file, &node.xattrs);
    file.set_permissions(fs::Permissions::from_mode(node.mode))?;
    let since_epoch = std::time::Duration::new(
        node.mtime_ns.unsigned_abs() / 1_000_000_000,
        (node.mtime_ns.unsigned_abs() % 1_000_000_000) as u32,
    );
    let mtime = if node.mtime_ns >= 0 {
        std::time::UNIX_EPOCH + since_epoch
    } else {
        std::time::UNIX_EPOCH - since_epoch
    };
    file.set_times(fs::FileTimes::new().set_accessed(mtime).set_modified(mtime))?;
    Ok(warnings)
}

/// A range of a pack read from storage, with the blobs inside it.
struct ReadRange<'p> {
    /// The pack's short name, for messages.
    pack: String,
    start: u64,
    data: std::result::Result<Vec<u8>, String>,
    blobs: &'p [plan::BlobUses],
}

fn write_range(
    repo: &IndexedRepository,
    target: &Target,
    r: &mut ReadRange<'_>,
    files: &[file::FileItem],
    report: &Mutex<RestoreReport>,
    progress: &Progress,
) {
    let mut scratch = Vec::new();
    for (blob, uses) in r.blobs {
        let plain = match &mut r.data {
            Ok(buf) => {
                let at = (blob.offset as u64 - r.start) as usize;
                let sealed = &mut buf[at..at + blob.length as usize];
                pack::open_blob_in_place(&repo.repo.key, blob, sealed, &mut scratch).map_err(|e| {
                    format!(
                        "blob {} in pack {} is damaged: {e}",
                        blob.id.short(),
                        r.pack
                    )
                })
            }
            Err(e) => Err(e.clone()),
        };
        // Another indexed copy (13.1) may be intact where this one is not.
        let mut other_copy = None;
        let plain = match plain {
            Err(e) if repo.index.copies(&blob.id).nth(1).is_some() => {
                match repo.read_blob(&blob.id) {
                    Ok(p) => Ok(other_copy.insert(p).as_slice()),
                    Err(_) => Err(e),
                }
            }
            p => p,
        };
        let zero = plain.as_ref().is_ok_and(|p| p.iter().all(|&b| b == 0));
        for &(f, offset) in uses {
            let item = &files[f];
            match &plain {
                Ok(p) => item.write(target, p, offset, zero),
                Err(e) => item.fail(e.clone()),
            }
            progress.add_done(0, blob.raw_length as u64);
            if item.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                finish_file(target, item, report, progress);
            }
        }
    }
}

fn finish_file(
    target: &Target,
    item: &file::FileItem,
    report: &Mutex<RestoreReport>,
    progress: &Progress,
) {
    let result = item.finish(target);
    let mut rep = report.lock().expect("report");
    match result {
        Ok(warnings) => {
            rep.files += 1;
            rep.bytes += item.node.size;
            let path = target.display(&item.final_path);
            rep.warnings.extend(
                warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", path.display())),
            );
        }
        Err(why) => {
            rep.failed_no_space += u64::from(item.no_space());
            rep.failed
                .push((target.display(&item.final_path).display().to_string(), why));
        }
    }
    progress.add_done(1, 0);
}

/// Read one range of a pack. A range that cannot be read whole (a truncated pack) is
/// read blob by blob, so blobs before the damage still restore.
fn read_range<'p>(
    repo: &IndexedRepository,
    pack: &PackId,
    start: u64,
    end: u64,
    blobs: &'p [plan::BlobUses],
) -> Vec<ReadRange<'p>> {
    let read = |start: u64, end: u64| {
        repo.repo
            .backend
            .read_range(FileKind::Pack, &pack.to_hex(), start, end - start)
            .map_err(|e| format!("pack {} could not be read: {e}", pack.short()))
    };
    match read(start, end) {
        Err(_) if blobs.len() > 1 => (0..blobs.len())
            .map(|i| {
                let b = &blobs[i].0;
                let (s, e) = (b.offset as u64, b.offset as u64 + b.length as u64);
                ReadRange {
                    pack: pack.short(),
                    start: s,
                    data: read(s, e),
                    blobs: &blobs[i..=i],
                }
            })
            .collect(),
        data => vec![ReadRange {
            pack: pack.short(),
            start,
            data,
            blobs,
        }],
    }
}

/// Restore (part of) a snapshot below `opts.target`.
pub fn restore(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let plan = plan::make_plan(repo, snap, opts, &mut report);
    repo.trees.clear_memory();
    crate::debug::phase("restore: planned");
    if plan.files.is_empty()
        && plan.dirs.is_empty()
        && plan.others.is_empty()
        && !opts.include.is_empty()
    {
        return Err(RepoError::InvalidInput(format!(
            "nothing in the snapshot matches {:?}; see `haven ls`",
            opts.include
        )));
    }
    progress.add_total(plan.files.len() as u64, plan.bytes);
    progress.totals_final.store(true, Ordering::Relaxed);
    let target = Target::open(&opts.target)
        .map_err(|e| RepoError::io(&opts.target, "creating the target folder", e))?;
    for (path, _) in &plan.dirs {
        target
            .make_dir(path)
            .map_err(|e| RepoError::io(target.display(path), "creating folder", e))?;
    }
    report.dirs = plan.dirs.len() as u64;
    let report = Mutex::new(report);
    // Files with no blob to wait for (empty, or every blob missing) finish now.
    for item in plan
        .files
        .iter()
        .filter(|f| f.remaining.load(Ordering::Acquire) == 0)
    {
        finish_file(&target, item, &report, &progress);
    }
    let writers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let ranges: Vec<_> = plan
        .packs
        .iter()
        .flat_map(|(pack, blobs)| {
            plan::read_ranges(blobs)
                .into_iter()
                .map(move |(start, end, blobs)| (pack, start, end, blobs))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = bounded::<ReadRange<'_>>(writers + 2);
    std::thread::scope(|s| {
        for _ in 0..writers {
            let rx = rx.clone();
            let (files, report, progress, target) = (&plan.files, &report, &progress, &target);
            s.spawn(move || {
                for mut r in rx {
                    write_range(repo, target, &mut r, files, report, progress);
                }
            });
        }
        for _ in 0..repo.pack_readers() {
            let (tx, ranges, next) = (tx.clone(), &ranges, &next);
            s.spawn(move || {
                while let Some(&(pack, start, end, blobs)) =
                    ranges.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    if read_range(repo, pack, start, end, blobs)
                        .into_iter()
                        .any(|part| tx.send(part).is_err())
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
    });
    crate::debug::phase("restore: packs done");
    let mut report = report.into_inner().expect("report");
    finish_links_and_dirs(&target, &plan, &mut report);
    crate::debug::phase("restore: metadata done");
    Ok(report)
}

fn finish_links_and_dirs(target: &Target, plan: &plan::Plan, report: &mut RestoreReport) {
    for (path, first) in &plan.links {
        let src = &plan.files[*first].final_path;
        match target.hard_link(src, path) {
            Ok(()) => report.files += 1,
            Err(e) => report.failed.push((
                target.display(path).display().to_string(),
                format!("hard link to {} failed: {e}", target.display(src).display()),
            )),
        }
    }
    for (path, node) in &plan.others {
        match node.kind {
            NodeKind::Symlink => {
                let to = std::ffi::OsStr::from_bytes(&node.link_target);
                match target.symlink(to, path, node) {
                    Ok(warnings) => push_warnings(report, target, path, warnings),
                    Err(e) => report.failed.push((
                        target.display(path).display().to_string(),
                        format!("symlink: {e}"),
                    )),
                }
            }
            _ => match special::create(target, path, node) {
                special::Outcome::Created(warnings) => {
                    push_warnings(report, target, path, warnings)
                }
                special::Outcome::Skipped(why) => report
                    .skipped
                    .push((target.display(path).display().to_string(), why)),
                special::Outcome::Failed(why) => report
                    .failed
                    .push((target.display(path).display().to_string(), why)),
            },
        }
    }
    for (path, node) in plan.dirs.iter().rev() {
        match target
            .open_dir(path)
            .and_then(|dir| apply_metadata_to_file(&dir, node))
        {
            Ok(warnings) => push_warnings(report, target, path, warnings),
            Err(e) => report.warnings.push(format!(
                "{}: setting metadata failed: {e}",
                target.display(path).display()
            )),
        }
    }
}

fn push_warnings(
    report: &mut RestoreReport,
    target: &Target,
    path: &std::path::Path,
    warnings: Vec<String>,
) {
    let shown = target.display(path);
    report.warnings.extend(
        warnings
            .into_iter()
            .map(|w| format!("{}: {w}", shown.display())),
    );
}
