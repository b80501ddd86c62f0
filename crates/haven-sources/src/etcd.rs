//! `etcd`: cluster and workflow state. The backup is etcd's own snapshot, taken over the
//! maintenance API; a restore brings up a new member from it; the fingerprint describes
//! the key-value store at the snapshot's revision.
//!
//! Data flow:
//! ```text
//! backup:  POST {endpoint}/v3/maintenance/snapshot (gRPC gateway, JSON lines, base64)
//!            -> SnapshotStream (decoded on the fly; ends with the SHA-256 of the database)
//!            -> sink: snapshot.db, byte for byte what `etcdctl snapshot save` writes
//!            \-> bolt::RevisionFinder: the snapshot's revision R, read from the passing pages
//!          then the fingerprint of the source at revision R
//! restore: feed -> work/snapshot.db -> `etcdctl snapshot restore` into `data-dir`
//!            -> `setsid etcd ...` (a new single-member cluster, left running) -> /health
//! ```
//! The fingerprint is `revision`, `keys` (how many keys) and `kv-digest` (BLAKE3 over every
//! key with its value, create and mod revisions, version and lease, in key order), read
//! with paged ranges at one revision. A backup records it at the snapshot's own revision
//! R, so writes during the backup do not matter; a restored member starts at exactly R
//! with the same keys, and a target's fingerprint is taken at its current revision, so
//! any change after the restore shows. etcd's `HashKV` is not used: etcd 3.4's gateway
//! routes `/v3/maintenance/hash` to `Hash` (the whole backend, which differs after a
//! restore), and `HashKV` at R fails when R is also the compaction revision.
//!
//! Parts: `gateway` ([`EtcdClient`]: HTTP/1.1 to etcd's gRPC gateway, std only),
//! `stream` (the snapshot's JSON messages back to bytes, failing on a broken stream),
//! `bolt` (the revision, read from the snapshot's pages); the member processes Haven
//! starts are in [`crate::servers::etcd`]. The backup checks the stream's framing (sizes
//! add up, the checksum message ends it); the SHA-256 itself is stored with the snapshot
//! and verified by `etcdctl snapshot restore`.
//!
//! A restore target must be free: its `data-dir` empty (or `--force`, which also stops a
//! member Haven restored there before) and nothing listening on its client or peer URL
//! (refused even with `--force`: Haven only stops processes it started).
//!
//! All calls go to the first endpoint that answers; only unreachable endpoints are
//! skipped. Errors: unreachable endpoints -> [`SourceError::Unreachable`] naming them;
//! `etcd`/`etcdctl` missing -> [`SourceError::MissingTool`]; `https://` -> unsupported;
//! a cluster with authentication -> [`SourceError::AccessDenied`].
//!
//! Limits, plainly: no TLS and no authentication; the restore brings up one member (a
//! multi-member cluster is rebuilt by restoring the same snapshot member by member with
//! `etcdctl`, not automated here); Haven starts that member itself, detached in its own
//! session, logging to `<data-dir>.log` with its pid in `<data-dir>.pid`, and it keeps
//! running after Haven exits — hand it to a service manager by stopping it and starting
//! it with the same flags (the log's first line has them); keys with leases expire on
//! the restored member like on the source (their TTL restarts at the restore).

mod bolt;
mod gateway;
mod stream;

use std::fs::{self, File};
use std::io::BufWriter;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use gateway::{EtcdClient, Header, KeyValue, RangePage, Txn, TxnOpResponse, TxnResponse};

use crate::process::{free_port, Limits, Span, Tool};
use crate::servers::etcd::{self as member, Member};
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://HOST:PORT`). Backup, fingerprint and
    /// probe use the first one that answers. As a restore target: the client URL the
    /// restored member listens on and advertises (the first one; use an IP address).
    pub endpoints: Vec<String>,
    /// Restore target only, required there: the data directory of the new member. It must
    /// not exist or be empty; with `--force` it is replaced (and a member Haven restored
    /// into it earlier is stopped). The member logs to `<data-dir>.log` and its process id
    /// is in `<data-dir>.pid`.
    pub data_dir: Option<PathBuf>,
    /// Restore target: the new member's name (default `haven-restored`).
    pub name: Option<String>,
    /// Restore target: the new member's peer URL (default `http://127.0.0.1:<a free port>`).
    pub peer_url: Option<String>,
    /// The directory holding `etcd` and `etcdctl` (default: found on the PATH).
    pub bin_dir: Option<PathBuf>,
    /// How long `etcdctl snapshot restore` may run before it is stopped (default
    /// [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout: Option<Span>,
}

const ETCDCTL_HINT: &str =
    "install etcd-client (Debian), or set `bin-dir` to the directory holding etcdctl";
const ETCD_HINT: &str =
    "install etcd-server (Debian), or set `bin-dir` to the directory holding etcd";
/// Keys per range call of the fingerprint.
const PAGE: u64 = 1000;
/// How long a restored member may take to become healthy (it loads the whole database).
const RESTORE_READY: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct EtcdComponent {
    pub config: EtcdConfig,
    deadline: Option<Instant>,
}

/// How long `etcdctl` may run when the config gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

impl EtcdComponent {
    pub fn new(config: EtcdConfig) -> Self {
        EtcdComponent {
            config,
            deadline: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits::timeout(self.config.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0)).until(self.deadline)
    }

    fn clients(&self) -> Result<Vec<EtcdClient>> {
        if self.config.endpoints.is_empty() {
            return Err(SourceError::Unsupported(
                "the etcd component has no `endpoints`; list the client URLs, e.g. \
                 endpoints = [\"http://127.0.0.1:2379\"]"
                    .into(),
            ));
        }
        self.config
            .endpoints
            .iter()
            .map(|e| EtcdClient::new(e))
            .collect()
    }

    /// Run `call` against the endpoints in order until one answers.
    fn first_answering<T>(
        &self,
        mut call: impl FnMut(&EtcdClient) -> Result<T>,
    ) -> Result<(EtcdClient, T)> {
        let mut unreachable = vec![];
        for client in self.clients()? {
            match call(&client) {
                Ok(value) => return Ok((client, value)),
                Err(SourceError::Unreachable { detail, .. }) => {
                    unreachable.push(format!("{}: {detail}", client.url()));
                }
                Err(e) => return Err(e),
            }
        }
        Err(SourceError::Unreachable {
            target: self.describe(),
            detail: format!(
                "{}; check that etcd runs and listens on these client URLs",
                unreachable.join("; ")
            ),
        })
    }

    fn tool(&self, name: &str, hint: &str) -> Result<PathBuf> {
        find_tool(self.config.bin_dir.as_deref(), name, hint)
    }

    /// The restore target as configured, with defaults filled in.
    fn restore_target(&self) -> Result<RestoreTarget> {
        let url = self.config.endpoints.first().ok_or_else(|| {
            SourceError::Unsupported(
                "an etcd restore target needs `endpoints`: the client URL the restored \
                 member will serve on"
                    .into(),
            )
        })?;
        let client = EtcdClient::new(url)?;
        let data_dir = self.config.data_dir.as_deref().ok_or_else(|| {
            SourceError::Unsupported(
                "an etcd restore target needs `data-dir`: the directory the restored member \
                 keeps its data in (Haven starts a new member there)"
                    .into(),
            )
        })?;
        let data_dir = std::path::absolute(data_dir)
            .map_err(|e| SourceError::io(format!("resolving {}", data_dir.display()), e))?;
        let peer_chosen = self.config.peer_url.is_none();
        let peer = match &self.config.peer_url {
            Some(url) => EtcdClient::new(url)?,
            None => free_peer(&client)?,
        };
        Ok(RestoreTarget {
            client,
            peer,
            peer_chosen,
            data_dir,
            name: self
                .config
                .name
                .clone()
                .unwrap_or_else(|| "haven-restored".into()),
        })
    }
}

/// A loopback peer URL on a free port other than the client's.
fn free_peer(client: &EtcdClient) -> Result<EtcdClient> {
    loop {
        let peer = EtcdClient::new(&format!("http://127.0.0.1:{}", free_port()?))?;
        if peer.authority() != client.authority() {
            return Ok(peer);
        }
    }
}

fn listening(url: &EtcdClient) -> bool {
    url.authority()
        .to_socket_addrs()
        .map(|mut addrs| {
            addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
        })
        .unwrap_or(false)
}

struct RestoreTarget {
    client: EtcdClient,
    peer: EtcdClient,
    /// The peer URL was picked here (no `peer-url`): when its port was taken meanwhile
    /// another is picked instead of failing.
    peer_chosen: bool,
    data_dir: PathBuf,
    name: String,
}

impl RestoreTarget {
    /// A restore starts a new member: nothing may listen on its URLs yet.
    fn check_free(&mut self) -> Result<()> {
        for _ in 0..5 {
            if !(self.peer_chosen && listening(&self.peer)) {
                break;
            }
            self.peer = free_peer(&self.client)?;
        }
        for url in [&self.client, &self.peer] {
            if listening(url) {
                return Err(SourceError::failed(
                    format!("restoring etcd into {}", self.client.url()),
                    format!(
                        "something already listens on {}; a restore starts a new member \
                         there: stop what listens, or choose other `endpoints`/`peer-url`",
                        url.authority()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn member<'a>(&'a self, etcd: &'a Path) -> Member<'a> {
        Member {
            etcd,
            name: &self.name,
            data_dir: &self.data_dir,
            client_url: self.client.url(),
            peer_url: self.peer.url(),
        }
    }
}

/// `name` in `bin_dir`, or on the PATH.
pub(crate) fn find_tool(bin_dir: Option<&Path>, name: &str, hint: &str) -> Result<PathBuf> {
    let found = match bin_dir {
        Some(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        }),
    };
    found.ok_or_else(|| SourceError::MissingTool {
        tool: match bin_dir {
            Some(dir) => dir.join(name).display().to_string(),
            None => name.to_string(),
        },
        hint: hint.to_string(),
    })
}

/// The fingerprint of the store at `revision` (0: the current one); see the module doc.
pub(crate) fn fingerprint_at(client: &EtcdClient, revision: i64) -> Result<Fingerprint> {
    let mut digest = blake3::Hasher::new();
    let (mut from, mut revision, mut keys, mut total) = (vec![0u8], revision, 0u64, None);
    loop {
        let page = client.range(&from, &[0], revision, PAGE, false)?;
        if revision == 0 {
            revision = page.header.revision;
        }
        total.get_or_insert(page.count);
        for kv in &page.kvs {
            digest.update(&(kv.key.len() as u64).to_le_bytes());
            digest.update(&kv.key);
            digest.update(&(kv.value.len() as u64).to_le_bytes());
            digest.update(&kv.value);
            for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
                digest.update(&n.to_le_bytes());
            }
            keys += 1;
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    if total != Some(keys) {
        return Err(SourceError::failed(
            format!("fingerprinting etcd at {}", client.url()),
            format!("read {keys} keys at revision {revision}, but etcd counts {total:?}"),
        ));
    }
    let mut fp = Fingerprint::new(format!("{keys} keys at revision {revision}"));
    fp.fact("revision", revision.to_string())
        .fact("keys", keys.to_string())
        .fact("kv-digest", digest.finalize().to_hex().to_string());
    Ok(fp)
}

/// How many entries `dir` has (0 when it does not exist).
fn entries(dir: &Path) -> Result<usize> {
    match fs::read_dir(dir) {
        Ok(list) => Ok(list.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(SourceError::io(format!("reading {}", dir.display()), e)),
    }
}

impl StreamComponent for EtcdComponent {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn describe(&self) -> String {
        format!("etcd at {}", self.config.endpoints.join(", "))
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn stream_name(&self) -> &'static str {
        "snapshot.db"
    }

    fn backup(&self, sink: &mut Sink<'_>, _work: &Path) -> Result<Fingerprint> {
        let (client, mut stream) = self.first_answering(EtcdClient::snapshot)?;
        let sunk = sink(&mut stream);
        if let Some(failure) = stream.take_failure() {
            return Err(failure);
        }
        sunk?;
        let revision = stream.finish()?;
        fingerprint_at(&client, revision as i64).map_err(|e| match e {
            SourceError::Failed { what, detail } if detail.contains("compacted") => {
                SourceError::failed(
                    what,
                    format!(
                        "{detail}: the cluster compacted its history past the snapshot's \
                         revision {revision} before Haven could fingerprint it; run the \
                         backup again"
                    ),
                )
            }
            e => e,
        })
    }

    fn restore(&self, feed: &mut Feed<'_>, work: &Path, opts: &RestoreOptions) -> Result<()> {
        let mut target = self.restore_target()?;
        let etcdctl = self.tool("etcdctl", ETCDCTL_HINT)?;
        let etcd = self.tool("etcd", ETCD_HINT)?;
        let data_dir = &target.data_dir.clone();
        let shown = data_dir.display().to_string();
        let previous = member::running_pid(data_dir);
        if !opts.force {
            if let Some(pid) = previous {
                return Err(SourceError::TargetNotEmpty {
                    target: shown,
                    detail: format!("the etcd member Haven restored there still runs, pid {pid}"),
                });
            }
            let n = entries(data_dir)?;
            if n > 0 {
                return Err(SourceError::TargetNotEmpty {
                    target: shown,
                    detail: format!("{n} entries"),
                });
            }
        }
        if previous.is_none() {
            target.check_free()?;
        }

        let file = work.join("snapshot.db");
        let io = |e| SourceError::io(format!("writing {}", file.display()), e);
        let mut out = BufWriter::new(File::create(&file).map_err(io)?);
        feed(&mut out)?;
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;

        if let Some(pid) = previous {
            member::stop(pid, data_dir)?;
            target.check_free()?;
        }
        if data_dir.exists() {
            fs::remove_dir_all(data_dir)
                .map_err(|e| SourceError::io(format!("removing {shown}"), e))?;
        }
        if let Some(parent) = data_dir.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| SourceError::io(format!("creating {}", parent.display()), e))?;
        }
        let cluster = format!("{}={}", target.name, target.peer.url());
        let mut restore = Tool::new(&etcdctl, "etcdctl snapshot restore", ETCDCTL_HINT);
        restore
            .limits(self.limits())
            .work(work)
            .env("ETCDCTL_API", "3")
            .arg("snapshot")
            .arg("restore")
            .arg(&file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--name", &target.name, "--initial-cluster", &cluster])
            .args(["--initial-cluster-token", member::CLUSTER_TOKEN])
            .args(["--initial-advertise-peer-urls", target.peer.url()]);
        restore.run()?;
        let child = member::launch(&target.member(&etcd), true, RESTORE_READY)?;
        member::detach(child);
        Ok(())
    }

    fn fingerprint(&self) -> Result<Fingerprint> {
        let (_, fp) = self.first_answering(|client| fingerprint_at(client, 0))?;
        Ok(fp)
    }

    fn probe(&self) -> Result<String> {
        let (client, healthy) = self.first_answering(EtcdClient::health)?;
        if !healthy {
            return Err(SourceError::failed(
                format!("the health check of etcd at {}", client.url()),
                "it answers {\"health\":\"false\"}: the member has no leader or cannot serve; \
                 see its log",
            ));
        }
        Ok(format!(
            "{} healthy, etcd {}",
            client.url(),
            client.version()?
        ))
    }

    fn scratch(&self, work: &Path) -> Result<Box<dyn ScratchTarget>> {
        let client = free_port()?;
        let peer = loop {
            let port = free_port()?;
            if port != client {
                break port;
            }
        };
        let config = EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{client}")],
            data_dir: Some(work.join("etcd-scratch")),
            name: Some("haven-scratch".into()),
            peer_url: Some(format!("http://127.0.0.1:{peer}")),
            bin_dir: self.config.bin_dir.clone(),
            timeout: self.config.timeout,
        };
        Ok(Box::new(EtcdScratch {
            component: EtcdComponent {
                config,
                deadline: self.deadline,
            },
        }))
    }
}

/// A restore target in `work` on free loopback ports; dropping it stops the member the
/// restore started and removes its files.
struct EtcdScratch {
    component: EtcdComponent,
}

impl ScratchTarget for EtcdScratch {
    fn component(&self) -> &dyn StreamComponent {
        &self.component
    }
}

impl Drop for EtcdScratch {
    fn drop(&mut self) {
        let Some(data_dir) = self.component.config.data_dir.as_deref() else {
            return;
        };
        let stopped = match member::running_pid(data_dir) {
            Some(pid) => member::stop(pid, data_dir),
            None => Ok(()),
        };
        if let Err(e) = stopped.and_then(|()| member::remove_files(data_dir)) {
            eprintln!("haven: warning: cleaning up the scratch etcd: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_kebab_case_keys_and_refuses_unknown_ones() {
        let config: EtcdConfig = serde_json::from_str(
            r#"{"endpoints": ["http://127.0.0.1:2379"], "data-dir": "/srv/etcd",
                "peer-url": "http://127.0.0.1:2380", "bin-dir": "/opt/etcd"}"#,
        )
        .unwrap();
        assert_eq!(config.data_dir.as_deref(), Some(Path::new("/srv/etcd")));
        assert_eq!(config.name, None);
        assert!(serde_json::from_str::<EtcdConfig>(r#"{"endpoints": [], "dir": "x"}"#).is_err());
    }

    #[test]
    fn a_restore_target_needs_a_data_dir_and_tools_are_looked_up_in_bin_dir() {
        let c = EtcdComponent::new(EtcdConfig {
            endpoints: vec!["http://127.0.0.1:1".into()],
            data_dir: None,
            name: None,
            peer_url: None,
            bin_dir: Some("/nonexistent".into()),
            timeout: None,
        });
        let err = c
            .restore(
                &mut |_| Ok(0),
                Path::new("/tmp"),
                &RestoreOptions::default(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("data-dir"), "{err}");
        let err = c.tool("etcdctl", ETCDCTL_HINT).unwrap_err();
        assert!(matches!(err, SourceError::MissingTool { .. }), "{err}");
        assert!(err.to_string().contains("etcd-client"), "{err}");
    }
}
