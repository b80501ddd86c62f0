//! `haven mount MOUNTPOINT`: the snapshots as read-only folders (FUSE, see
//! [`crate::mount`] for the layout) until SIGINT, SIGTERM, SIGHUP or an unmount from
//! outside (`fusermount3 -u`, `umount`).
//!
//! Stopping: the first signal unmounts lazily (`MNT_DETACH`, or `fusermount3 -u -z`
//! when not root), so the folder is free at once even while a program holds a file of
//! the mount open; such files stay readable until closed, and the command ends when
//! the last one is. A second signal ends it at once. The repository keeps a shared
//! lock all along (prune waits; backups go on, and their snapshots appear in the
//! folders within seconds).
//!
//! `--json`: one line `{"event":"mounted",...}` once the folders can be used, one line
//! `{"event":"unmounted",...}` at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{anyhow, bail, Context, Result};
use fuser::MountOption;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{Global, MountArgs};
use crate::mount::{Budget, HavenFs};

/// Why the command stops waiting.
enum Stop {
    Signal,
    /// The session loop ended: the kernel let go of the mount.
    Unmounted,
}

pub fn run(g: &Global, a: MountArgs) -> Result<i32> {
    let mountpoint = check_mountpoint(&a.mountpoint)?;
    let (view, lock) = super::open_read(g, "mount")?;
    let snapshots = view.snapshots.len();
    let open_files = Arc::new(AtomicUsize::new(0));
    let budget = Budget {
        blobs: usize::try_from(a.cache_size).unwrap_or(usize::MAX),
        trees: 16 << 20,
    };
    let fs = HavenFs::new(view, budget, open_files.clone());
    // Before mounting, so that no signal in between ends the process with the mount
    // left behind.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("haven".into()),
        MountOption::Subtype("haven".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    if a.allow_other {
        options.push(MountOption::AllowOther);
    }
    let mut session = fuser::Session::new(fs, &mountpoint, &options).map_err(|e| {
        anyhow!(
            "could not mount at {}: {e}; mounting needs /dev/fuse and, when not root, fusermount3 (Debian package fuse3){}",
            mountpoint.display(),
            if a.allow_other { ", and user_allow_other in /etc/fuse.conf for --allow-other" } else { "" }
        )
    })?;
    if g.json {
        crate::output::json_line(&serde_json::json!({
            "event": "mounted", "mountpoint": mountpoint, "snapshots": snapshots,
        }));
    } else {
        super::say(
            g,
            format!(
                "mounted {snapshots} snapshots at {} (folders ids/, snapshots/, hosts/, tags/); Ctrl-C or `fusermount3 -u {}` unmounts",
                mountpoint.display(),
                mountpoint.display()
            ),
        );
    }

    let (tx, rx) = mpsc::channel();
    let loop_ended = tx.clone();
    // The session loop answers the kernel until it lets go of the mount; the session
    // (and its mount handle) is dropped in that thread only then, so an early end of
    // the command never unmounts whatever is mounted there later.
    std::thread::spawn(move || {
        if let Err(e) = session.run() {
            eprintln!("haven: error: the FUSE session ended with an error: {e}");
        }
        let _ = loop_ended.send(Stop::Unmounted);
    });
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if tx.send(Stop::Signal).is_err() {
                break;
            }
        }
    });

    let mut code = 0;
    match rx.recv() {
        Ok(Stop::Signal) => {
            unmount_lazily(&mountpoint)?;
            let still_open = open_files.load(Ordering::SeqCst);
            if still_open > 0 {
                eprintln!(
                    "haven: unmounted {}; {still_open} open file(s) stay readable until closed (signal again to stop now)",
                    mountpoint.display()
                );
            }
            if let Ok(Stop::Signal) = rx.recv() {
                let left = open_files.load(Ordering::SeqCst);
                eprintln!("haven: stopped with {left} file(s) of the mount still open; reading them now fails");
                code = 130;
            }
        }
        Ok(Stop::Unmounted) | Err(_) => {}
    }
    drop(lock);
    if g.json {
        crate::output::json_line(
            &serde_json::json!({"event": "unmounted", "mountpoint": mountpoint}),
        );
    } else {
        super::say(g, format!("unmounted {}", mountpoint.display()));
    }
    // After a second signal the session thread still serves the detached mount; the
    // process ends with it.
    Ok(code)
}

/// The mount point as an absolute path, if it is an empty folder.
fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow!(
            "mount point {}: {e}; create an empty folder for it first",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        bail!(
            "mount point {} is not a folder; give an empty folder",
            path.display()
        );
    }
    let not_empty = std::fs::read_dir(path)
        .with_context(|| format!("reading mount point {}", path.display()))?
        .next()
        .is_some();
    if not_empty {
        bail!(
            "mount point {} is not empty (or something is mounted there already); give an empty folder",
            path.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: this machine (or container) has no FUSE; load the fuse module, or give the container the device (--device /dev/fuse)");
    }
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Detach the mount now; the kernel lets go of it when its last open file is closed.
fn unmount_lazily(mountpoint: &Path) -> Result<()> {
    use rustix::io::Errno;
    use rustix::mount::{unmount, UnmountFlags};
    match unmount(mountpoint, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        // Not root: the setuid helper may.
        Err(Errno::PERM) => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(mountpoint)
                .status()
                .context("running fusermount3 -u -z (Debian package fuse3)")?;
            if !status.success() {
                bail!(
                    "fusermount3 -u -z {} failed ({status})",
                    mountpoint.display()
                );
            }
            Ok(())
        }
        // Unmounted from outside meanwhile.
        Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(anyhow!("unmounting {}: {e}", mountpoint.display())),
    }
}
