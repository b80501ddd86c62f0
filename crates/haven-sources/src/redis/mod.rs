//! `redis`: a Redis server, backed up as the RDB it sends a replica, restored key by key
//! with `RESTORE`, fingerprinted per database.
//!
//! Backup (self = source), as `redis-cli --rdb` does:
//! ```text
//! source ──SYNC──> RDB bytes ──┬──> sink (the repository; streamed, never held in memory)
//!                              └──> work/backup.rdb ──> throwaway redis-server ──> fingerprint
//! ```
//! We connect, `AUTH`, send `REPLCONF rdb-only 1` (Redis ≥ 7; an older server's refusal
//! is ignored) and `SYNC`, skip the keep-alive newlines, and stream exactly the RDB bytes
//! (`$<len>` form, or the diskless `$EOF:<mark>` form) into the sink. A copy goes to a file
//! in `work` (an RDB is compact: about the size of the dataset on disk, not in memory).
//! When the stream ends, and before its end is reported to the sink, that copy is loaded
//! into a throwaway `redis-server` ([`crate::servers::redis`]) and fingerprinted there: the
//! fingerprint is exactly the backed-up state, and an RDB that does not load (truncated,
//! corrupt) fails the stream, so it is never stored as a good backup.
//!
//! By default the source writes the RDB to its own disk first (disk-based replication, as
//! for any replica). With `diskless-sync = true` we announce `capa eof`, so a source with
//! `repl-diskless-sync yes` streams it straight from memory, after waiting
//! `repl-diskless-sync-delay` (5 s by default) for other replicas.
//!
//! Restore (self = target):
//! ```text
//! feed ──> work/restore.rdb ──> throwaway redis-server ──DUMP+PTTL──> RESTORE ... REPLACE ──> target
//! ```
//! The stored RDB is loaded into a throwaway server; for every database and key we read
//! `DUMP` and `PTTL` there and send `RESTORE key ttl payload REPLACE` to the target, in
//! pipelined batches with `SELECT` per database. Redis 7 functions are copied with
//! `FUNCTION DUMP` / `FUNCTION RESTORE ... REPLACE` (libraries already on the target are
//! kept, same-named ones replaced). A target that already holds keys is
//! refused ([`SourceError::TargetNotEmpty`]) unless `force` is given: then it is emptied
//! with `FLUSHALL` first, once the stored RDB has loaded.
//!
//! Fingerprint: see [`digest`]: fact `db<n>` = `keys=<count> ttl=<keys with a TTL>
//! digest=<blake3>` over every key, its type and its value in canonical form.
//!
//! Limits, plainly:
//! - TTLs: an RDB stores absolute expiry times. Keys are restored with their remaining TTL
//!   as of the restore, so a key that expired between backup and restore is gone (and the
//!   fingerprint comparison reports the missing key); remaining TTLs drift by the few
//!   milliseconds of a batch.
//! - Versions: the local `redis-server` must load the source's RDB (same or newer Redis
//!   than the source), and the target must accept its `DUMP` payloads (same or newer Redis
//!   than the local `redis-server`).
//! - Memory: backup and restore load the RDB into a throwaway server on this machine,
//!   which needs about as much RAM as the dataset.
//! - Keys written to the target by others during a restore mix with the restored ones; keys
//!   changing on the source are no concern (the RDB is a point-in-time snapshot).
//! - Redis Cluster is not supported (refused); neither is TLS (`rediss://`).
//! - Module data types need the module loaded on the throwaway server and the target;
//!   their digest is the `DUMP` payload, which depends on the RDB version.
//! - Not part of a backup: the server's config, ACL users, replication settings.

mod digest;
pub mod rdb;
pub mod resp;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::servers::redis::RedisServer;
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
};
use rdb::{read_sync_header, RdbBody};
use resp::{Connection, RedisUrl, Reply};

/// The settings of a `redis` component.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisConfig {
    /// The server: `redis://host:port`, `redis://:password@host:port` or
    /// `redis://user:password@host:port` (an ACL user; percent-encode special characters).
    /// The port defaults to 6379. A backup covers every database of the server.
    pub url: String,
    /// Ask for a diskless transfer (`REPLCONF capa eof`): a source configured with
    /// `repl-diskless-sync yes` then streams the RDB without writing it to its disk, after
    /// its `repl-diskless-sync-delay`. Default false: the source writes the RDB to its disk
    /// first, as for any replica.
    #[serde(default)]
    pub diskless_sync: bool,
}

#[derive(Debug, Clone)]
pub struct RedisComponent {
    pub config: RedisConfig,
}

/// Keys per pipelined restore batch.
const RESTORE_BATCH: usize = 1000;
/// Bytes of queued `RESTORE` commands after which they are sent.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

impl RedisComponent {
    pub fn new(config: RedisConfig) -> Self {
        RedisComponent { config }
    }

    fn url(&self) -> Result<RedisUrl> {
        RedisUrl::parse(&self.config.url)
    }

    fn connect(&self) -> Result<Connection> {
        Connection::connect(&self.url()?)
    }
}

/// `INFO server` of a connection: the version, and a refusal of Redis Cluster.
fn server_version(conn: &mut Connection, refuse_cluster: bool) -> Result<String> {
    let info = digest::info(conn, "server")?;
    if refuse_cluster && digest::info_field(&info, "redis_mode") == Some("cluster") {
        return Err(SourceError::Unsupported(format!(
            "{} runs in Redis Cluster mode, which the redis component does not support; back up a standalone server or a replica of it",
            conn.target()
        )));
    }
    Ok(digest::info_field(&info, "redis_version")
        .unwrap_or("(unknown version)")
        .to_string())
}

/// `db0: 3 keys, db3: 1 keys` when the server holds keys.
fn keys_held(conn: &mut Connection) -> Result<Option<String>> {
    let dbs: Vec<String> = digest::keyspace(conn)?
        .into_iter()
        .filter(|(_, keys)| *keys > 0)
        .map(|(db, keys)| format!("db{db}: {keys} keys"))
        .collect();
    Ok((!dbs.is_empty()).then(|| dbs.join(", ")))
}

impl StreamComponent for RedisComponent {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn describe(&self) -> String {
        match self.url() {
            Ok(url) => url.describe(),
            Err(_) => "redis (invalid url)".to_string(),
        }
    }

    fn stream_name(&self) -> &'static str {
        "dump.rdb"
    }

    /// Redis runs no tool with a deadline: the source is read over a socket with I/O
    /// timeouts, and the throwaway servers live as long as the run that needs them.
    fn set_deadline(&mut self, _deadline: Option<std::time::Instant>) {}

    fn backup(&self, sink: &mut Sink<'_>, work: &Path) -> Result<Fingerprint> {
        let mut conn = self.connect()?;
        server_version(&mut conn, true)?;
        if self.config.diskless_sync {
            conn.send(&[b"REPLCONF", b"capa", b"eof"]);
        }
        // Redis ≥ 7: no replication stream after the RDB. Older servers refuse; that is fine.
        conn.send(&[b"REPLCONF", b"rdb-only", b"1"]);
        conn.flush()?;
        if self.config.diskless_sync {
            conn.read()?;
        }
        conn.read()?;
        conn.send(&[b"SYNC"]);
        conn.flush()?;
        let delimiter = match read_sync_header(conn.reader()) {
            Ok(Ok(d)) => d,
            Ok(Err(message)) => return Err(resp::reply_error(conn.target(), "SYNC", &message)),
            Err(e) => return Err(conn.io_error(e)),
        };
        let copy_path = work.join("backup.rdb");
        let copy = File::create(&copy_path)
            .map_err(|e| SourceError::io(format!("creating {}", copy_path.display()), e))?;
        let target = conn.target().to_string();
        let mut stream = BackupStream {
            body: RdbBody::new(conn.reader(), delimiter),
            copy: BufWriter::with_capacity(1 << 20, copy),
            copy_path: copy_path.clone(),
            work,
            target,
            state: State::Streaming,
        };
        let stored = sink(&mut stream);
        let state = std::mem::replace(&mut stream.state, State::Streaming);
        drop(stream);
        let _ = fs::remove_file(&copy_path);
        match (stored, state) {
            (Ok(()), State::Done(fp)) => Ok(fp),
            (Ok(()), State::Failed(e)) => Err(e),
            (Ok(()), _) => Err(SourceError::failed(
                "backup of redis",
                "the repository stopped reading before the end of the RDB",
            )),
            (Err(_), State::Failed(e)) => Err(e),
            (Err(e), _) => Err(e),
        }
    }

    fn restore(&self, feed: &mut Feed<'_>, work: &Path, opts: &RestoreOptions) -> Result<()> {
        let url = self.url()?;
        // Fail fast, before reading the stream; checked again right before writing.
        {
            let mut target = Connection::connect(&url)?;
            server_version(&mut target, true)?;
            if !opts.force {
                if let Some(held) = keys_held(&mut target)? {
                    return Err(SourceError::TargetNotEmpty {
                        target: target.target().to_string(),
                        detail: held,
                    });
                }
            }
        }
        let rdb_path = work.join("restore.rdb");
        write_feed(feed, &rdb_path)?;
        let loaded = RedisServer::start_with_rdb(&work.join("loaded"), &rdb_path)
            .map_err(|e| load_error(&rdb_path, e))?;
        let _ = fs::remove_file(&rdb_path);
        let mut source = loaded.connect()?;
        let mut target = Connection::connect(&url)?;
        let version = server_version(&mut target, true)?;
        if let Some(held) = keys_held(&mut target)? {
            if !opts.force {
                return Err(SourceError::TargetNotEmpty {
                    target: target.target().to_string(),
                    detail: held,
                });
            }
            target.call_str(&["FLUSHALL"])?;
        }
        copy_keys(&mut source, &mut target, &version)?;
        copy_functions(&mut source, &mut target)?;
        Ok(())
    }

    fn fingerprint(&self) -> Result<Fingerprint> {
        digest::fingerprint(&mut self.connect()?)
    }

    fn probe(&self) -> Result<String> {
        let mut conn = self.connect()?;
        match conn.call_str(&["PING"])? {
            Reply::Status(s) if s == "PONG" => {}
            other => {
                return Err(SourceError::failed(
                    format!("PING of {}", conn.target()),
                    format!("answered {other:?} instead of PONG"),
                ))
            }
        }
        let version = server_version(&mut conn, false)?;
        Ok(format!("answers PING, Redis {version}"))
    }

    fn scratch(&self, work: &Path) -> Result<Box<dyn ScratchTarget>> {
        let server = RedisServer::start(&work.join("redis-scratch"))?;
        let component = RedisComponent::new(RedisConfig {
            url: server.url(),
            diskless_sync: false,
        });
        Ok(Box::new(RedisScratch {
            component,
            _server: server,
        }))
    }
}

enum State {
    Streaming,
    Done(Fingerprint),
    Failed(SourceError),
}

/// The RDB as the sink reads it: bytes are copied to a file as they pass, and at the end
/// of the stream the copy is loaded and fingerprinted before the end is reported.
struct BackupStream<'a> {
    body: RdbBody<&'a mut BufReader<TcpStream>>,
    copy: BufWriter<File>,
    copy_path: PathBuf,
    work: &'a Path,
    target: String,
    state: State,
}

impl BackupStream<'_> {
    fn finish(&mut self) -> Result<Fingerprint> {
        self.copy
            .flush()
            .map_err(|e| SourceError::io(format!("writing {}", self.copy_path.display()), e))?;
        let server = RedisServer::start_with_rdb(&self.work.join("loaded"), &self.copy_path)
            .map_err(|e| load_error(&self.copy_path, e))?;
        digest::fingerprint(&mut server.connect()?)
    }
}

impl Read for BackupStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Streaming => {}
            State::Done(_) => return Ok(0),
            State::Failed(e) => return Err(io::Error::other(e.to_string())),
        }
        let n = match self.body.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let err = SourceError::io(format!("receiving the RDB from {}", self.target), e);
                let message = err.to_string();
                self.state = State::Failed(err);
                return Err(io::Error::other(message));
            }
        };
        if n > 0 {
            self.copy.write_all(&buf[..n]).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing {}: {e}", self.copy_path.display()),
                )
            })?;
            return Ok(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.finish() {
            Ok(fp) => {
                self.state = State::Done(fp);
                Ok(0)
            }
            Err(e) => {
                let message = e.to_string();
                self.state = State::Failed(e);
                Err(io::Error::other(message))
            }
        }
    }
}

/// A stored RDB that the local redis-server refused: say what to check.
fn load_error(rdb: &Path, e: SourceError) -> SourceError {
    if !matches!(e, SourceError::Failed { .. }) {
        return e;
    }
    let mut head = [0u8; 9];
    let header = File::open(rdb)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()
        .filter(|_| head.starts_with(b"REDIS"))
        .map(|_| {
            let v = String::from_utf8_lossy(&head[5..]).into_owned();
            v.trim_start_matches('0').to_string()
        });
    let detail = match header {
        Some(v) => format!(
            "the local redis-server cannot load this RDB (format version {v}): {e}. If the source runs a newer Redis than the local redis-server, install one at least as new"
        ),
        None => format!("the data is not an RDB file (no REDIS header): {e}"),
    };
    SourceError::failed("loading the RDB into a throwaway redis-server", detail)
}

fn write_feed(feed: &mut Feed<'_>, path: &Path) -> Result<()> {
    let file = File::create(path)
        .map_err(|e| SourceError::io(format!("creating {}", path.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = feed(&mut w)?;
    w.flush()
        .map_err(|e| SourceError::io(format!("writing {}", path.display()), e))?;
    if n == 0 {
        return Err(SourceError::failed(
            "restore of redis",
            "the stored stream is empty",
        ));
    }
    Ok(())
}

/// A key for messages: text when it is, escaped otherwise, cut when long.
fn show_key(key: &[u8]) -> String {
    let shown: String = key
        .iter()
        .take(80)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > 80 {
        format!("{shown}...")
    } else {
        shown
    }
}

/// Copy every key of `source` into `target` with DUMP/PTTL and RESTORE ... REPLACE.
fn copy_keys(
    source: &mut Connection,
    target: &mut Connection,
    target_version: &str,
) -> Result<u64> {
    let mut restored = 0;
    for (db, _) in digest::keyspace(source)? {
        let db_arg = db.to_string();
        source.call_str(&["SELECT", &db_arg])?;
        target.call_str(&["SELECT", &db_arg]).map_err(|e| {
            SourceError::failed(
                format!("restore into {}", target.target()),
                format!("the backup has keys in database {db}, which the target cannot select ({e}); raise `databases` in its config"),
            )
        })?;
        let mut pending: Vec<Vec<u8>> = vec![];
        let mut cursor = b"0".to_vec();
        loop {
            let (next, keys) = digest::scan_batch(source, &cursor)?;
            for key in &keys {
                source.send(&[b"DUMP", key]);
                source.send(&[b"PTTL", key]);
            }
            source.flush()?;
            for key in keys {
                let payload = source.read_ok("DUMP")?;
                let ttl = source.read_ok("PTTL")?.as_int().unwrap_or(-2);
                let (Reply::Bulk(payload), true) = (payload, ttl != -2) else {
                    continue; // expired since SCAN
                };
                // PTTL -1: no expiry (RESTORE ttl 0); 0 would also mean none, so round up.
                let ttl = if ttl < 0 { 0 } else { ttl.max(1) };
                target.send(&[
                    b"RESTORE",
                    &key,
                    ttl.to_string().as_bytes(),
                    &payload,
                    b"REPLACE",
                ]);
                pending.push(key);
                if pending.len() >= RESTORE_BATCH || target.queued_bytes() >= RESTORE_BATCH_BYTES {
                    restored += drain_restores(target, db, &mut pending, target_version)?;
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
        restored += drain_restores(target, db, &mut pending, target_version)?;
    }
    Ok(restored)
}

/// Send the queued RESTOREs and check every reply.
fn drain_restores(
    target: &mut Connection,
    db: u32,
    pending: &mut Vec<Vec<u8>>,
    target_version: &str,
) -> Result<u64> {
    target.flush()?;
    let mut first_error = None;
    for key in pending.iter() {
        // Read every reply even after an error, so the connection stays in step.
        if let Reply::Error(message) = target.read()? {
            first_error.get_or_insert((key.clone(), message));
        }
    }
    let n = pending.len() as u64;
    pending.clear();
    if let Some((key, message)) = first_error {
        let hint = if message.contains("payload version") || message.contains("Bad data format") {
            format!(
                "; the target runs Redis {target_version}, older than the local redis-server that produced the payload: restore into a Redis at least as new"
            )
        } else {
            String::new()
        };
        let err = resp::reply_error(
            target.target(),
            &format!("RESTORE of key `{}` in db {db}", show_key(&key)),
            &format!("{message}{hint}"),
        );
        return Err(err);
    }
    Ok(n)
}

/// Copy Redis 7 function libraries, if the backup has any.
fn copy_functions(source: &mut Connection, target: &mut Connection) -> Result<()> {
    source.send(&[b"FUNCTION", b"LIST"]);
    source.flush()?;
    match source.read()? {
        Reply::Array(libs) if !libs.is_empty() => {}
        _ => return Ok(()),
    }
    let payload = source
        .call_str(&["FUNCTION", "DUMP"])?
        .into_bytes()
        .ok_or_else(|| digest::unexpected(source, "FUNCTION DUMP", "a payload"))?;
    target.call(&[b"FUNCTION", b"RESTORE", &payload, b"REPLACE"])?;
    Ok(())
}

struct RedisScratch {
    component: RedisComponent,
    _server: RedisServer,
}

impl ScratchTarget for RedisScratch {
    fn component(&self) -> &dyn StreamComponent {
        &self.component
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_keys() {
        let c: RedisConfig =
            serde_json::from_str(r#"{"url": "redis://:pw@127.0.0.1:6380"}"#).unwrap();
        assert!(!c.diskless_sync);
        let c: RedisConfig =
            serde_json::from_str(r#"{"url": "redis://h", "diskless-sync": true}"#).unwrap();
        assert!(c.diskless_sync);
        assert!(serde_json::from_str::<RedisConfig>(r#"{"url": "redis://h", "db": 3}"#).is_err());
    }

    #[test]
    fn describe_hides_the_password() {
        let c = RedisComponent::new(RedisConfig {
            url: "redis://bob:hunter2@10.0.0.1:7000".into(),
            diskless_sync: false,
        });
        assert_eq!(c.describe(), "redis://bob@10.0.0.1:7000");
        assert_eq!(c.stream_name(), "dump.rdb");
    }

    #[test]
    fn keys_are_shown_escaped_and_cut() {
        assert_eq!(show_key(b"user:1"), "user:1");
        assert_eq!(show_key(b"a\r\n\x00"), "a\\r\\n\\x00");
        assert!(show_key(&[b'x'; 200]).ends_with("..."));
    }
}
