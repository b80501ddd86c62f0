//! The etcd cluster as one client: every call goes to the member that answered last, and on
//! any failure to the next one in turn, so that a member cut off with its site (or killed)
//! costs one short timeout, once, and not every call.
//!
//! Retrying on another member after a failure is safe for every call of this module: reads
//! and lease refreshes are idempotent, and every write is a transaction whose comparison
//! fails when an earlier attempt already applied it (the callers read a failed comparison
//! as "lost", never as "done").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use haven_sources::etcd::EtcdClient;
use haven_sources::SourceError;

use super::{CoordError, Result};

/// How long one call to one member may take (connecting, then each read of the answer).
/// A controller's lease is a few seconds: a call that takes longer is of no use to it.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    members: Arc<[EtcdClient]>,
    /// The index of the member that answered last.
    good: Arc<AtomicUsize>,
}

impl Cluster {
    pub(crate) fn new(endpoints: &[String], timeout: Duration) -> Result<Cluster> {
        let members = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                EtcdClient::new(e)
                    .map(|c| c.with_timeout(timeout))
                    .map_err(|e| CoordError::Etcd(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if members.is_empty() {
            return Err(CoordError::Unreachable {
                endpoints: "(none)".into(),
                detail: "no etcd endpoint given".into(),
            });
        }
        Ok(Cluster {
            members: members.into(),
            good: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The endpoints, comma-separated (as `--etcd` takes them).
    pub(crate) fn endpoints(&self) -> String {
        let urls: Vec<&str> = self.members.iter().map(EtcdClient::url).collect();
        urls.join(",")
    }

    /// Run `call` on the last good member, then on each other one in turn until one
    /// answers. When none does: `Unreachable` if no member could be reached at all, else
    /// the last member's error.
    pub(crate) fn run<T>(
        &self,
        mut call: impl FnMut(&EtcdClient) -> haven_sources::Result<T>,
    ) -> Result<T> {
        let start = self.good.load(Ordering::Relaxed);
        let n = self.members.len();
        let mut failures = Vec::with_capacity(n);
        let mut all_unreachable = true;
        for i in 0..n {
            let index = (start + i) % n;
            let member = &self.members[index];
            match call(member) {
                Ok(value) => {
                    if index != start {
                        self.good.store(index, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(e) => {
                    all_unreachable &= e.is_unreachable();
                    failures.push(describe(member, &e));
                }
            }
        }
        let detail = failures.join("; ");
        if all_unreachable {
            Err(CoordError::Unreachable {
                endpoints: self.endpoints(),
                detail,
            })
        } else {
            Err(CoordError::Etcd(detail))
        }
    }
}

fn describe(member: &EtcdClient, e: &SourceError) -> String {
    match e {
        SourceError::Unreachable { detail, .. } => format!("{}: {detail}", member.url()),
        other => other.to_string(),
    }
}
