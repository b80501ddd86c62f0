//! Restore: snapshot trees back to files, or one file to a stream.
//!
//! Plan, then work by pack:
//! 1. Walk the trees; create directories; create every file under a temporary name
//!    (`.haven-restore-N`) at its final size (holes stay sparse).
//! 2. Group the needed blobs by pack and read each pack's needed ranges once;
//!    worker threads decrypt, verify and write each blob at every offset that uses it
//!    (out of order, all-zero blobs skipped to keep files sparse).
//! 3. A file whose last blob lands gets its owner, mode and mtime and is renamed into
//!    place. A file with a damaged or missing blob is removed and reported by name: a
//!    restore never leaves wrong bytes under a real name, and the rest continues.
//! 4. Hard links, symlinks, then directory metadata (deepest first).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use haven_store::FileKind;

use crate::error::{RepoError, Result};
use crate::id::{BlobId, PackId};
use crate::index::IndexedRepository;
use crate::pack::{self, PackBlob};
use crate::progress::Progress;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk;

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
    pub bytes: u64,
    /// Files that could not be restored, with the reason (nothing is left under their name).
    pub failed: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

struct FileItem {
    final_path: PathBuf,
    temp_path: PathBuf,
    node: Node,
    remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileItem>,
    links: Vec<(PathBuf, usize)>,
    others: Vec<(PathBuf, Node)>,
    packs: BTreeMap<PackId, Vec<(PackBlob, Vec<(usize, u64)>)>>,
    bytes: u64,
}

fn target_path(target: &Path, snap_path: &Path) -> PathBuf {
    target.join(snap_path.strip_prefix("/").unwrap_or(snap_path))
}

fn make_plan(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<Plan> {
    let mut plan = Plan {
        dirs: vec![],
        files: vec![],
        links: vec![],
        others: vec![],
        packs: BTreeMap::new(),
        bytes: 0,
    };
    let mut first_link: HashMap<(u64, u64), usize> = HashMap::new();
    let mut blob_uses: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
    let mut errors = vec![];
    walk::walk(
        repo,
        &snap.tree,
        &mut |path, node| {
            let (inside, descend) = walk::included(path, &opts.include);
            let dest = target_path(&opts.target, path);
            match node.kind {
                NodeKind::Dir => {
                    if descend {
                        plan.dirs.push((dest, node.clone()));
                    }
                }
                NodeKind::File if inside => {
                    if node.links > 1 {
                        if let Some(&first) = first_link.get(&(node.device, node.inode)) {
                            plan.links.push((dest, first));
                            return false;
                        }
                        first_link.insert((node.device, node.inode), plan.files.len());
                    }
                    let idx = plan.files.len();
                    let mut offset = 0u64;
                    for b in &node.content {
                        blob_uses.entry(*b).or_default().push((idx, offset));
                        offset += repo
                            .index
                            .get(b)
                            .map(|l| l.blob.raw_length as u64)
                            .unwrap_or(0);
                    }
                    plan.bytes += node.size;
                    let temp = dest.with_file_name(format!(".haven-restore-{idx}"));
                    plan.files.push(FileItem {
                        final_path: dest,
                        temp_path: temp,
                        node: node.clone(),
                        remaining: AtomicUsize::new(0),
                        failure: Mutex::new(None),
                    });
                }
                _ if inside => plan.others.push((dest, node.clone())),
                _ => {}
            }
            descend
        },
        &mut |path, e| errors.push((path.display().to_string(), e.to_string())),
    );
    for (path, e) in errors {
        report
            .failed
            .push((path, format!("the folder's listing could not be read: {e}")));
    }
    for (id, uses) in blob_uses {
        match repo.index.get(&id) {
            Some(loc) => {
                for (f, _) in &uses {
                    plan.files[*f].remaining.fetch_add(1, Ordering::Relaxed);
                }
                plan.packs
                    .entry(loc.pack)
                    .or_default()
                    .push((loc.blob, uses));
            }
            None => {
                for (f, _) in uses {
                    let item = &plan.files[f];
                    *item.failure.lock().expect("failure") = Some(format!(
                        "blob {} is missing from the repository index",
                        id.short()
                    ));
                }
            }
        }
    }
    for blobs in plan.packs.values_mut() {
        blobs.sort_by_key(|(b, _)| b.offset);
    }
    Ok(plan)
}

/// Finish one file: metadata and rename, or removal when any blob failed.
fn finalize_file(item: &FileItem, report: &Mutex<RestoreReport>) {
    let failure = item.failure.lock().expect("failure").clone();
    let mut rep = report.lock().expect("report");
    match failure {
        Some(why) => {
            let _ = fs::remove_file(&item.temp_path);
            rep.failed
                .push((item.final_path.display().to_string(), why));
        }
        None => {
            if let Err(e) = apply_metadata(&item.temp_path, &item.node, false)
                .and_then(|_| fs::rename(&item.temp_path, &item.final_path))
            {
                let _ = fs::remove_file(&item.temp_path);
                rep.failed
                    .push((item.final_path.display().to_string(), e.to_string()));
            } else {
                rep.files += 1;
            }
        }
    }
}

fn apply_metadata(path: &Path, node: &Node, is_symlink: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if crate::host::current_uid() == 0 {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if is_symlink {
        return filetime::set_symlink_file_times(path, mtime, mtime);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
    filetime::set_file_times(path, mtime, mtime)
}

/// Ranges of one pack to read together: blobs closer than this are read in one go.
const MAX_GAP: u64 = 1 << 20;
const MAX_RANGE: u64 = 8 << 20;

fn restore_pack(
    repo: &IndexedRepository,
    pack: &PackId,
    blobs: &[(PackBlob, Vec<(usize, u64)>)],
    files: &[FileItem],
    report: &Mutex<RestoreReport>,
    progress: &Progress,
) {
    let mut i = 0;
    while i < blobs.len() {
        let start = blobs[i].0.offset as u64;
        let mut j = i + 1;
        let mut end = start + blobs[i].0.length as u64;
        while j < blobs.len() {
            let b = &blobs[j].0;
            if (b.offset as u64) > end + MAX_GAP || (b.offset + b.length) as u64 - start > MAX_RANGE
            {
                break;
            }
            end = end.max((b.offset + b.length) as u64);
            j += 1;
        }
        let range =
            repo.repo
                .backend
                .read_range(FileKind::Pack, &pack.to_hex(), start, end - start);
        for (blob, uses) in &blobs[i..j] {
            let plain = match &range {
                Ok(buf) => {
                    let at = (blob.offset as u64 - start) as usize;
                    pack::open_blob(&repo.repo.key, blob, &buf[at..at + blob.length as usize])
                        .map_err(|e| {
                            format!(
                                "blob {} in pack {} is damaged: {e}",
                                blob.id.short(),
                                pack.short()
                            )
                        })
                }
                Err(e) => Err(format!("blob {} could not be read: {e}", blob.id.short())),
            };
            let zero = plain
                .as_ref()
                .map(|p| p.iter().all(|&b| b == 0))
                .unwrap_or(false);
            for &(f, offset) in uses {
                let item = &files[f];
                let result = match &plain {
                    Ok(_) if zero || item.failure.lock().expect("failure").is_some() => Ok(()),
                    Ok(p) => OpenOptions::new()
                        .write(true)
                        .open(&item.temp_path)
                        .and_then(|fh| fh.write_all_at(p, offset))
                        .map_err(|e| format!("writing {} failed: {e}", item.temp_path.display())),
                    Err(e) => Err(e.clone()),
                };
                if let Err(e) = result {
                    item.failure.lock().expect("failure").get_or_insert(e);
                }
                progress.add_done(0, blob.raw_length as u64);
                if item.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    finalize_file(item, report);
                    progress.add_done(1, 0);
                }
            }
        }
        i = j;
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
    let plan = make_plan(repo, snap, opts, &mut report)?;
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
    fs::create_dir_all(&opts.target)
        .map_err(|e| RepoError::io(&opts.target, "creating the target folder", e))?;
    for (path, _) in &plan.dirs {
        fs::create_dir_all(path).map_err(|e| RepoError::io(path, "creating folder", e))?;
    }
    report.dirs = plan.dirs.len() as u64;
    let report = Mutex::new(report);
    for item in &plan.files {
        let created = fs::File::create(&item.temp_path).and_then(|f| f.set_len(item.node.size));
        if let Err(e) = created {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(RepoError::io(
                    &item.final_path,
                    "creating (no space left on the target device)",
                    e,
                ));
            }
            item.failure
                .lock()
                .expect("failure")
                .get_or_insert(format!("creating failed: {e}"));
        }
    }
    // Files with no blob to wait for (empty, or every blob missing) finish now.
    for item in plan
        .files
        .iter()
        .filter(|f| f.remaining.load(Ordering::Acquire) == 0)
    {
        finalize_file(item, &report);
        progress.add_done(1, 0);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3)
        .clamp(2, 8);
    let (tx, rx) = bounded::<(&PackId, &Vec<(PackBlob, Vec<(usize, u64)>)>)>(workers);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = rx.clone();
            let (files, report, progress) = (&plan.files, &report, &progress);
            s.spawn(move || {
                for (pack, blobs) in rx {
                    restore_pack(repo, pack, blobs, files, report, progress);
                }
            });
        }
        for p in &plan.packs {
            let _ = tx.send(p);
        }
        drop(tx);
    });
    let mut report = report.into_inner().expect("report");
    for (path, first) in &plan.links {
        let src = &plan.files[*first].final_path;
        let _ = fs::remove_file(path);
        match fs::hard_link(src, path) {
            Ok(()) => report.files += 1,
            Err(e) => report.failed.push((
                path.display().to_string(),
                format!("hard link to {} failed: {e}", src.display()),
            )),
        }
    }
    for (path, node) in &plan.others {
        match node.kind {
            NodeKind::Symlink => {
                let _ = fs::remove_file(path);
                let target = std::ffi::OsStr::from_bytes(&node.link_target);
                if let Err(e) = std::os::unix::fs::symlink(target, path)
                    .and_then(|_| apply_metadata(path, node, true))
                {
                    report
                        .failed
                        .push((path.display().to_string(), format!("symlink: {e}")));
                }
            }
            other => report.warnings.push(format!(
                "{}: {other:?} entries are not restored",
                path.display()
            )),
        }
    }
    for (path, node) in plan.dirs.iter().rev() {
        if let Err(e) = apply_metadata(path, node, false) {
            report
                .warnings
                .push(format!("{}: setting metadata failed: {e}", path.display()));
        }
    }
    report.bytes = progress.bytes_done.load(Ordering::Relaxed);
    Ok(report)
}

/// Write one file of a snapshot to `out`: the only file of a `--stdin` snapshot, or
/// the file at `path`. Blobs are read ahead in a second thread; memory stays constant.
pub fn restore_to_writer(
    repo: &IndexedRepository,
    snap: &Snapshot,
    path: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut found: Vec<(PathBuf, Node)> = vec![];
    walk::walk(
        repo,
        &snap.tree,
        &mut |p, n| {
            if n.kind == NodeKind::File && path.is_none_or(|want| want == p) {
                found.push((p.to_path_buf(), n.clone()));
            }
            true
        },
        &mut |_, _| {},
    );
    let (fpath, node) = match found.len() {
        1 => found.pop().expect("one"),
        0 => {
            return Err(RepoError::InvalidInput(
                "no such file in the snapshot; see `haven ls`".into(),
            ))
        }
        n => {
            return Err(RepoError::InvalidInput(format!(
                "the snapshot holds {n} files; name one with --include PATH"
            )))
        }
    };
    let (tx, rx) = bounded::<Result<Vec<u8>>>(4);
    let mut written = 0u64;
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            for id in &node.content {
                let r = repo.read_blob(id);
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    return;
                }
            }
        });
        for r in rx {
            let data = r.map_err(|e| {
                RepoError::InvalidInput(format!(
                    "{}: {e}; the output is incomplete",
                    fpath.display()
                ))
            })?;
            out.write_all(&data)
                .map_err(|e| RepoError::io("standard output", "writing", e))?;
            written += data.len() as u64;
        }
        Ok(())
    })?;
    out.flush()
        .map_err(|e| RepoError::io("standard output", "writing", e))?;
    Ok(written)
}
