//! `haven wal push` / `haven wal fetch`: the WAL archive of a physical PostgreSQL
//! component, as PostgreSQL's `archive_command` and `restore_command` call it
//! (`haven_ops::wal`). Exit 0 when done; `fetch` exits 1 when the file is not archived
//! (PostgreSQL's signal for "not there"); every other failure is one line on stderr and
//! a non-zero exit, which makes PostgreSQL keep the file and retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use haven_ops::wal::{fetch_wal, push_wal, Pushed};
use haven_ops::wal_receiver::{default_spool, receive, ReceiverEvent, ReceiverOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::tenant::load;
use crate::cli::{Global, WalCommand};

pub fn run(g: &Global, command: WalCommand) -> Result<i32> {
    match command {
        WalCommand::Push {
            tenant,
            component,
            path,
            ahead,
            config,
        } => {
            let config = load(&config)?;
            let pushed = push_wal(
                &config,
                &tenant,
                &component,
                &path,
                usize::from(ahead),
                g.lock_wait,
            )
            .with_context(|| format!("wal push of {} for {tenant}/{component}", path.display()))?;
            if !g.quiet && pushed == Pushed::AlreadyArchived {
                eprintln!(
                    "haven: {} was archived already with the same content",
                    path.display()
                );
            }
            Ok(0)
        }
        WalCommand::Fetch {
            tenant,
            component,
            name,
            path,
            config,
        } => {
            let config = load(&config)?;
            let found = fetch_wal(&config, &tenant, &component, &name, &path, g.lock_wait)
                .with_context(|| format!("wal fetch of {name} for {tenant}/{component}"))?;
            Ok(if found { 0 } else { 1 })
        }
        WalCommand::Receive {
            tenant,
            component,
            spool,
            check_every,
            config,
        } => {
            let config = load(&config)?;
            let spool = spool.unwrap_or_else(|| default_spool(&config, &tenant, &component));
            let mut options = ReceiverOptions::new(spool);
            options.lock_wait = g.lock_wait;
            options.check_every = check_every;
            let stop = Arc::new(AtomicBool::new(false));
            let mut signals =
                Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
            {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    if signals.forever().next().is_some() {
                        stop.store(true, Ordering::SeqCst);
                    }
                });
            }
            let quiet = g.quiet;
            receive(&config, &tenant, &component, &options, &stop, &mut |e| {
                // Each stored partial is a line a second: only with --verbose-like runs.
                let routine = matches!(e, ReceiverEvent::Stored { .. } | ReceiverEvent::Lag { .. });
                if !(quiet && routine) {
                    println!("haven: wal receive {tenant}/{component}: {e}");
                }
            })
            .with_context(|| format!("wal receive for {tenant}/{component}"))?;
            Ok(0)
        }
    }
}
