//! What an archived WAL segment holds that a restore needs to know before it starts: the
//! time of its last transaction (the end of the restorable window, and whether a time
//! target can be reached) and the restore points made in it (`--name`), read with
//! `pg_waldump` (records of the `Transaction` and `XLOG` resource managers).
//!
//! `pg_waldump` ends with "invalid record length" at the end of the written WAL of the
//! segment that was current when it was archived early (`archive_timeout`,
//! `pg_switch_wal`); the records before it are what counts, so its exit status is not.

use std::path::Path;
use std::process::Stdio;

use crate::process::Tool;
use crate::{Result, SourceError};

/// What one segment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The newest commit (or abort) time, as `pg_waldump` prints it
    /// (`2026-12-05 23:47:51.908668 UTC`).
    pub last_commit: Option<String>,
    /// `pg_create_restore_point` names, in WAL order.
    pub restore_points: Vec<String>,
}

/// Summarize the segment at `path` with the `pg_waldump` program at `pg_waldump`.
pub fn summarize(pg_waldump: &Path, path: &Path) -> Result<SegmentSummary> {
    let transactions = dump(pg_waldump, path, "Transaction")?;
    let xlog = dump(pg_waldump, path, "XLOG")?;
    Ok(parse(&transactions, &xlog))
}

fn dump(pg_waldump: &Path, path: &Path, rmgr: &str) -> Result<String> {
    let what = format!("pg_waldump of {}", path.display());
    let mut cmd = Tool::new(pg_waldump, &what, super::super::NOT_INSTALLED_HINT);
    cmd.arg("-r").arg(rmgr).arg(path).stdout(Stdio::piped());
    let out = cmd.run_any_status()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.is_empty() && !out.status.success() {
        let err = crate::process::stderr_tail(&out.stderr);
        // A segment with no record of this kind is fine; one pg_waldump cannot read is not.
        if !err.contains("invalid record length") && !err.contains("could not find a valid record")
        {
            return Err(SourceError::failed(what, err));
        }
    }
    Ok(text)
}

/// Parse the two dumps.
pub fn parse(transactions: &str, xlog: &str) -> SegmentSummary {
    let mut summary = SegmentSummary::default();
    for line in transactions.lines() {
        let Some(desc) = line.split_once("desc: ").map(|(_, d)| d) else {
            continue;
        };
        let time = ["COMMIT ", "ABORT ", "COMMIT_PREPARED ", "ABORT_PREPARED "]
            .iter()
            .find_map(|k| desc.strip_prefix(k));
        if let Some(rest) = time {
            let time = rest.split(';').next().unwrap_or(rest).trim();
            // Later records are later in time; keep the last.
            summary.last_commit = Some(time.to_string());
        }
    }
    for line in xlog.lines() {
        if let Some(name) = line
            .split_once("desc: RESTORE_POINT ")
            .map(|(_, n)| n.trim_end())
        {
            summary.restore_points.push(name.to_string());
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_restore_points_are_found() {
        let tx = "rmgr: Transaction len (rec/tot):    162/   162, tx:        734, lsn: 0/0303A848, prev 0/0303A808, desc: COMMIT 2026-12-05 23:47:51.908668 UTC; inval msgs: catcache 63\n\
                  rmgr: Transaction len (rec/tot):    34/    34, tx:        735, lsn: 0/030565D0, prev 0/03056590, desc: COMMIT 2026-12-06 00:00:26.108982 UTC\n";
        let xlog = "rmgr: XLOG        len (rec/tot):     98/    98, tx:        735, lsn: 0/03056528, prev 0/030564E8, desc: RESTORE_POINT before-x\n\
                    rmgr: XLOG        len (rec/tot):     114/   114, tx:          0, lsn: 0/03056600, prev 0/030565D0, desc: CHECKPOINT_ONLINE redo 0/3056600\n";
        let s = parse(tx, xlog);
        assert_eq!(
            s.last_commit.as_deref(),
            Some("2026-12-06 00:00:26.108982 UTC")
        );
        assert_eq!(s.restore_points, vec!["before-x".to_string()]);
        assert_eq!(parse("", ""), SegmentSummary::default());
    }
}
