//! `files`: directory trees, backed up by the repository engine's own tree backup, with
//! pre/post hooks. The fingerprint comes from the snapshot itself: per configured path,
//! the file count, total size and a digest over every entry's relative path, size and
//! content-chunk ids. After a restore the restored tree is chunked again with the
//! repository's chunker and keyed hash, so the same digest proves the same bytes.
//!
//! Restoring into another tenant puts the contents of the n-th source path into the n-th
//! path of the target component: each path is restored into a staging folder beside its
//! target and renamed into place, so a failed restore never leaves a half-filled target.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use haven_repo::backup::{backup_paths, BackupOptions, BackupResult};
use haven_repo::chunker::ChunkStream;
use haven_repo::progress::Progress;
use haven_repo::restore::{restore, RestoreOptions};
use haven_repo::snapshot::Snapshot;
use haven_repo::tree::NodeKind;
use haven_repo::{walk, IndexedRepository, Repository};
use haven_sources::Fingerprint;

use crate::config::FilesConfig;
use crate::run::RunEnv;
use crate::OpsError;

/// Run a hook with `sh -c` (through [`RunEnv::hook`]: no secrets, a timeout); its error
/// says which hook failed and why.
fn run_hook(env: &RunEnv, which: &str, script: &str, cfg: &FilesConfig) -> Result<(), String> {
    env.hook(which, script, cfg)
        .run()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Back up the paths of a files component (hooks around it). Returns the backup and the
/// warnings to record (a failing post-hook, unreadable files).
pub(crate) fn backup_files(
    repo: &IndexedRepository,
    env: &RunEnv,
    cfg: &FilesConfig,
    tags: Vec<String>,
    progress: Arc<Progress>,
) -> Result<(BackupResult, Fingerprint, Vec<String>), OpsError> {
    let pre = cfg
        .pre
        .as_deref()
        .map_or(Ok(()), |pre| run_hook(env, "pre", pre, cfg));
    let exclude = cfg
        .exclude_rules()
        .map_err(|e| OpsError::Invalid(format!("{e}; the component was not backed up")));
    let result = match (pre, exclude) {
        (Err(e), _) => Err(OpsError::Invalid(format!(
            "{e}; the component was not backed up"
        ))),
        (_, Err(e)) => Err(e),
        (Ok(()), Ok(exclude)) => backup_paths(
            repo.clone(),
            &BackupOptions {
                paths: cfg.paths.clone(),
                tags,
                exclude: (!exclude.is_empty()).then(|| exclude.into_exclude()),
                ..Default::default()
            },
            progress,
        )
        .map_err(OpsError::from),
    };
    // The post-hook always runs, also after a failed pre-hook (it undoes what pre may
    // have half done, e.g. a freeze).
    let mut warnings = vec![];
    if let Some(post) = &cfg.post {
        if let Err(e) = run_hook(env, "post", post, cfg) {
            warnings.push(e);
        }
    }
    let result = result?;
    warnings.extend(result.warnings.iter().cloned());
    warnings.extend(result.notices.iter().cloned());
    // The index loaded at the start does not know the trees this backup just wrote.
    let reloaded = repo.repo.clone().indexed()?;
    let fingerprint = snapshot_fingerprint(&reloaded, &result.snapshot, &cfg.paths)?;
    Ok((result, fingerprint, warnings))
}

/// Accumulates entries of one path into the fingerprint fact.
#[derive(Default)]
struct PathDigest {
    entries: Vec<(String, String)>,
    files: u64,
    bytes: u64,
}

impl PathDigest {
    fn file(&mut self, rel: &Path, size: u64, ids: Vec<String>) {
        self.files += 1;
        self.bytes += size;
        let rel = rel.display().to_string();
        self.entries
            .push((rel.clone(), format!("F {rel} {size} {}", ids.join(","))));
    }

    fn other(&mut self, rel: &Path, line: String) {
        self.entries.push((rel.display().to_string(), line));
    }

    fn fact(mut self) -> String {
        self.entries.sort();
        let mut h = blake3::Hasher::new();
        for (_, line) in &self.entries {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        format!(
            "files={} bytes={} digest={}",
            self.files,
            self.bytes,
            &h.finalize().to_hex()[..32]
        )
    }
}

fn fact_name(n: usize) -> String {
    format!("path {}", n + 1)
}

fn summary(fp: &Fingerprint, paths: usize) -> String {
    let (mut files, mut bytes) = (0u64, 0u64);
    for v in fp.facts.values() {
        for part in v.split(' ') {
            if let Some(n) = part.strip_prefix("files=") {
                files += n.parse::<u64>().unwrap_or(0);
            } else if let Some(n) = part.strip_prefix("bytes=") {
                bytes += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    format!("{paths} paths, {files} files, {bytes} bytes")
}

/// The fingerprint of `paths` as stored in a snapshot.
pub fn snapshot_fingerprint(
    repo: &IndexedRepository,
    snap: &Snapshot,
    paths: &[PathBuf],
) -> Result<Fingerprint, OpsError> {
    let mut digests: Vec<PathDigest> = paths.iter().map(|_| PathDigest::default()).collect();
    let mut error = None;
    walk::walk(
        repo,
        &snap.tree,
        &mut |path, node| {
            for (i, root) in paths.iter().enumerate() {
                let Ok(rel) = path.strip_prefix(root) else {
                    continue;
                };
                let d = &mut digests[i];
                match node.kind {
                    NodeKind::File => d.file(
                        rel,
                        node.size,
                        node.content.iter().map(|b| b.to_hex()).collect(),
                    ),
                    NodeKind::Dir if !rel.as_os_str().is_empty() => {
                        d.other(rel, format!("D {}", rel.display()))
                    }
                    NodeKind::Symlink => d.other(
                        rel,
                        format!(
                            "L {} {}",
                            rel.display(),
                            String::from_utf8_lossy(&node.link_target)
                        ),
                    ),
                    _ => {}
                }
            }
            true
        },
        &mut |path, e| {
            error.get_or_insert_with(|| format!("{}: {e}", path.display()));
        },
    );
    if let Some(e) = error {
        return Err(OpsError::Invalid(format!(
            "reading the snapshot's trees failed: {e}"
        )));
    }
    let mut fp = Fingerprint::default();
    for (i, d) in digests.into_iter().enumerate() {
        fp.fact(fact_name(i), d.fact());
    }
    fp.summary = summary(&fp, paths.len());
    Ok(fp)
}

/// The fingerprint of folders on disk (restored targets), comparable with
/// [`snapshot_fingerprint`] of the source paths in the same order.
pub fn disk_fingerprint(repo: &Repository, paths: &[PathBuf]) -> Result<Fingerprint, OpsError> {
    let mut fp = Fingerprint::default();
    for (i, root) in paths.iter().enumerate() {
        let mut d = PathDigest::default();
        let meta = std::fs::symlink_metadata(root)
            .map_err(|e| OpsError::Invalid(format!("{}: {e}", root.display())))?;
        if meta.is_dir() {
            digest_dir(repo, root, Path::new(""), &mut d)?;
        } else {
            digest_entry(repo, root, Path::new(""), &meta, &mut d)?;
        }
        fp.fact(fact_name(i), d.fact());
    }
    fp.summary = summary(&fp, paths.len());
    Ok(fp)
}

fn digest_dir(
    repo: &Repository,
    dir: &Path,
    rel: &Path,
    d: &mut PathDigest,
) -> Result<(), OpsError> {
    let io = |e: std::io::Error| OpsError::Invalid(format!("{}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        let rel = rel.join(entry.file_name());
        digest_entry(repo, &entry.path(), &rel, &meta, d)?;
    }
    Ok(())
}

fn digest_entry(
    repo: &Repository,
    path: &Path,
    rel: &Path,
    meta: &std::fs::Metadata,
    d: &mut PathDigest,
) -> Result<(), OpsError> {
    let io = |e: std::io::Error| OpsError::Invalid(format!("{}: {e}", path.display()));
    if meta.is_dir() {
        d.other(rel, format!("D {}", rel.display()));
        digest_dir(repo, path, rel, d)
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io)?;
        d.other(rel, format!("L {} {}", rel.display(), target.display()));
        Ok(())
    } else if meta.is_file() {
        let file = std::fs::File::open(path).map_err(io)?;
        let mut stream = ChunkStream::new(repo.chunker(), file);
        let mut ids = vec![];
        let mut size = 0;
        while let Some(chunk) = stream.next_chunk().map_err(io)? {
            size += chunk.len() as u64;
            ids.push(hex::encode(repo.key().id_of(&chunk)));
        }
        d.file(rel, size, ids);
        Ok(())
    } else {
        Ok(())
    }
}

/// Restore each source path of the snapshot into the target path at the same position.
/// A target that exists and is not empty is refused unless `force`, which moves it aside
/// to `TARGET.haven-replaced-POINT-TIME` (nothing is deleted).
pub fn restore_files(
    repo: &IndexedRepository,
    snap: &Snapshot,
    sources: &[PathBuf],
    targets: &[PathBuf],
    force: bool,
    point: &str,
) -> Result<u64, OpsError> {
    if sources.len() != targets.len() {
        return Err(OpsError::Invalid(format!(
            "the backup has {} paths but the target component lists {}; list as many paths, in the same order",
            sources.len(),
            targets.len()
        )));
    }
    for target in targets {
        if let Ok(mut entries) = std::fs::read_dir(target) {
            if entries.next().is_some() && !force {
                return Err(OpsError::Invalid(format!(
                    "{} is not empty; restore into an empty folder, or pass --force (the folder is then moved aside, not deleted)",
                    target.display()
                )));
            }
        } else if target.exists() && !force {
            return Err(OpsError::Invalid(format!(
                "{} exists and is not a folder; pass --force to move it aside",
                target.display()
            )));
        }
    }
    let mut bytes = 0;
    for (source, target) in sources.iter().zip(targets) {
        bytes += restore_one(repo, snap, source, target, point)?;
    }
    Ok(bytes)
}

fn restore_one(
    repo: &IndexedRepository,
    snap: &Snapshot,
    source: &Path,
    target: &Path,
    point: &str,
) -> Result<u64, OpsError> {
    let io = |what: &Path, e: std::io::Error| OpsError::Invalid(format!("{}: {e}", what.display()));
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.haven-restore-{point}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    let report = restore(
        repo,
        snap,
        &RestoreOptions {
            target: staging.clone(),
            include: vec![source.to_path_buf()],
        },
        Arc::new(Progress::default()),
    );
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&staging);
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            cleanup();
            return Err(e.into());
        }
    };
    if !report.failed.is_empty() {
        cleanup();
        let (path, why) = &report.failed[0];
        return Err(OpsError::Invalid(format!(
            "{} files could not be restored (first: {path}: {why}); run `haven check`",
            report.failed.len()
        )));
    }
    let restored = staging.join(source.strip_prefix("/").unwrap_or(source));
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        let empty_dir = meta.is_dir()
            && std::fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if empty_dir {
            std::fs::remove_dir(target).map_err(|e| io(target, e))?;
        } else {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
            let aside = parent.join(format!("{name}.haven-replaced-{point}-{stamp}"));
            std::fs::rename(target, &aside).map_err(|e| io(target, e))?;
        }
    }
    std::fs::rename(&restored, target).map_err(|e| io(target, e))?;
    cleanup();
    Ok(report.bytes)
}
