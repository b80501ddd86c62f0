//! `haven wal push` / `haven wal fetch`: the WAL archive of a physical PostgreSQL
//! component, as PostgreSQL's `archive_command` and `restore_command` call it
//! (`haven_ops::wal`). Exit 0 when done; `fetch` exits 1 when the file is not archived
//! (PostgreSQL's signal for "not there"); every other failure is one line on stderr and
//! a non-zero exit, which makes PostgreSQL keep the file and retry.

use anyhow::{Context, Result};
use haven_ops::wal::{fetch_wal, push_wal, Pushed};

use super::tenant::load;
use crate::cli::{Global, WalCommand};

pub fn run(g: &Global, command: WalCommand) -> Result<i32> {
    match command {
        WalCommand::Push {
            tenant,
            component,
            path,
            config,
        } => {
            let config = load(&config)?;
            let pushed =
                push_wal(&config, &tenant, &component, &path, g.lock_wait).with_context(|| {
                    format!("wal push of {} for {tenant}/{component}", path.display())
                })?;
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
    }
}
