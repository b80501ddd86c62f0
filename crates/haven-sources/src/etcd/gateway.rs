//! etcd's gRPC gateway spoken over plain HTTP/1.1 (std only): the JSON form of the v3 API
//! that every etcd 3.x serves on its client URLs. [`EtcdClient`] makes the calls Haven needs
//! (the maintenance snapshot stream, ranges, health, version) and the few writes tests and
//! the demo need to fill a server.
//!
//! Gateway conventions: 64-bit integers are JSON strings, byte strings are base64; an
//! error is `{"error": ..., "code": <gRPC code>, "message": ...}` with a non-200 status, or,
//! inside a stream, a line `{"error": {"grpc_code": ..., "message": ...}}`.
//!
//! Limits: `http://` only (no TLS, no client certificates) and no authentication (a
//! cluster with auth enabled answers with "user name is empty": reported as
//! [`SourceError::AccessDenied`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::stream::SnapshotStream;
use crate::{Result, SourceError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call may wait for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Puts per transaction in [`EtcdClient::put_all`] (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 100;
/// Bytes of keys and values per transaction (etcd's default `--max-request-bytes` is 1.5 MiB,
/// and base64 adds a third).
const TXN_BYTES: usize = 512 << 10;

/// A minimal etcd v3 client over the gRPC gateway (HTTP/JSON). Cheap to clone; every call
/// opens its own connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdClient {
    url: String,
    /// `host:port` to connect to.
    authority: String,
    /// Overrides both the connect and the read timeouts ([`EtcdClient::with_timeout`]).
    timeout: Option<Duration>,
}

/// One key-value pair of a range, as etcd stores it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int")]
    pub create_revision: i64,
    #[serde(deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int")]
    pub version: i64,
    #[serde(deserialize_with = "int")]
    pub lease: i64,
}

/// One page of a range.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangePage {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// Keys in the whole range (not only this page).
    #[serde(deserialize_with = "int")]
    pub count: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    #[serde(deserialize_with = "int")]
    pub revision: i64,
}

impl EtcdClient {
    /// A client of the member at `url` (`http://HOST:PORT`; the port defaults to 2379).
    /// `https://` URLs and URLs with a path or credentials are refused as unsupported.
    pub fn new(url: &str) -> Result<EtcdClient> {
        let trimmed = url.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(SourceError::Unsupported(format!(
                "etcd endpoint {url}: TLS is not supported; Haven's etcd component speaks plain \
                 HTTP to etcd's gateway, so give it an http:// client URL (e.g. add a loopback \
                 listener with etcd's --listen-client-urls)"
            )));
        }
        let rest = trimmed.strip_prefix("http://").unwrap_or("");
        if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
            return Err(SourceError::Unsupported(format!(
                "etcd endpoint {url:?}: expected a client URL like http://127.0.0.1:2379 \
                 (no path, no credentials)"
            )));
        }
        let has_port = rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let authority = if has_port {
            rest.to_string()
        } else {
            format!("{rest}:2379")
        };
        Ok(EtcdClient {
            url: format!("http://{authority}"),
            authority,
            timeout: None,
        })
    }

    /// The same client with every call bounded by `timeout` (connecting, and waiting for
    /// each part of the answer) instead of the defaults (3 s to connect, 120 s to read),
    /// for callers that hold a lease of a few seconds.
    pub fn with_timeout(mut self, timeout: Duration) -> EtcdClient {
        self.timeout = Some(timeout);
        self
    }

    /// The client URL, normalised (`http://host:port`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET /health`: true when the member has a leader and serves reads.
    pub fn health(&self) -> Result<bool> {
        let (status, body) = self.exchange("GET", "/health", b"")?;
        let value: Value = serde_json::from_slice(&body).unwrap_or_default();
        match (status, value["health"].as_str()) {
            (_, Some(health)) => Ok(health == "true"),
            _ => Err(self.error("the health check", status, &body)),
        }
    }

    /// The server's version (`GET /version`), e.g. "3.4.23".
    pub fn version(&self) -> Result<String> {
        let (status, body) = self.exchange("GET", "/version", b"")?;
        let value: Value = serde_json::from_slice(&body).unwrap_or_default();
        match value["etcdserver"].as_str() {
            Some(v) if status == 200 => Ok(v.to_string()),
            _ => Err(self.error("asking for the version", status, &body)),
        }
    }

    /// The current revision of the key-value store.
    pub fn revision(&self) -> Result<i64> {
        let page = self.range(&[0], &[0], 0, 1, true)?;
        Ok(page.header.revision)
    }

    /// One page of the keys in `[key, range_end)` at `revision` (0: the current one), at most
    /// `limit` keys (0: all).
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
        limit: u64,
        count_only: bool,
    ) -> Result<RangePage> {
        self.call(
            "/v3/kv/range",
            json!({
                "key": base64_encode(key),
                "range_end": base64_encode(range_end),
                "revision": revision.to_string(),
                "limit": limit.to_string(),
                "count_only": count_only,
            }),
        )
    }

    /// The value of `key` now, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let page = self.range(key, &[], 0, 1, false)?;
        Ok(page.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Put one key; returns the revision of the change.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<i64> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Put {
            header: Header,
        }
        let put: Put = self.call(
            "/v3/kv/put",
            json!({"key": base64_encode(key), "value": base64_encode(value)}),
        )?;
        Ok(put.header.revision)
    }

    /// Put many keys, in transactions of at most 100 keys and 512 KiB.
    pub fn put_all(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut ops = vec![];
        let mut bytes = 0;
        for (i, (key, value)) in pairs.iter().enumerate() {
            ops.push(json!({"request_put": {
                "key": base64_encode(key), "value": base64_encode(value)}}));
            bytes += key.len() + value.len();
            let next = pairs.get(i + 1).map_or(0, |(k, v)| k.len() + v.len());
            if ops.len() == TXN_OPS || bytes + next > TXN_BYTES || i + 1 == pairs.len() {
                let _: Value = self.call("/v3/kv/txn", json!({ "success": ops }))?;
                ops.clear();
                bytes = 0;
            }
        }
        Ok(())
    }

    /// Delete one key; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Deleted {
            #[serde(deserialize_with = "int")]
            deleted: u64,
        }
        let deleted: Deleted =
            self.call("/v3/kv/deleterange", json!({"key": base64_encode(key)}))?;
        Ok(deleted.deleted > 0)
    }

    /// Delete every key starting with `prefix` (all keys for an empty prefix); returns how
    /// many were deleted.
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Deleted {
            #[serde(deserialize_with = "int")]
            deleted: u64,
        }
        let (key, end) = if prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            (prefix.to_vec(), prefix_end(prefix))
        };
        let deleted: Deleted = self.call(
            "/v3/kv/deleterange",
            json!({"key": base64_encode(&key), "range_end": base64_encode(&end)}),
        )?;
        Ok(deleted.deleted)
    }

    /// Compact the history up to `revision`, waiting until it is applied to the database.
    pub fn compact(&self, revision: i64) -> Result<()> {
        let _: Value = self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )?;
        Ok(())
    }

    /// Start the maintenance snapshot (`POST /v3/maintenance/snapshot`): the answer's body
    /// is a stream of JSON messages, decoded by [`SnapshotStream`].
    pub(crate) fn snapshot(&self) -> Result<SnapshotStream<BufReader<Body<TcpStream>>>> {
        let (status, body) = self.open("POST", "/v3/maintenance/snapshot", b"{}")?;
        let mut body = BufReader::with_capacity(1 << 16, body);
        if status != 200 {
            let mut text = vec![];
            let _ = body.read_to_end(&mut text);
            return Err(self.error("the snapshot", status, &text));
        }
        Ok(SnapshotStream::new(body, self.url.clone()))
    }

    /// POST any JSON request of the v3 gateway (`path` like `/v3/kv/range`) and decode the
    /// JSON answer: for the calls without a method of their own.
    pub fn call_json<T: DeserializeOwned>(&self, path: &str, request: Value) -> Result<T> {
        self.call(path, request)
    }

    /// Grant a lease of `ttl_secs` seconds; returns its id.
    pub fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Granted {
            #[serde(rename = "ID", deserialize_with = "int")]
            id: i64,
            error: String,
        }
        let granted: Granted =
            self.call("/v3/lease/grant", json!({"TTL": ttl_secs.to_string()}))?;
        if granted.id == 0 {
            return Err(SourceError::failed(
                format!("granting a lease on {}", self.url),
                format!("no lease id in the answer {}", granted.error),
            ));
        }
        Ok(granted.id)
    }

    /// Refresh lease `id` once; returns its new TTL in seconds, or None when the lease is
    /// gone (expired or revoked: the gateway then answers without a TTL).
    pub fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Answer {
            result: KeptAlive,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct KeptAlive {
            #[serde(rename = "TTL", deserialize_with = "int")]
            ttl: i64,
        }
        let answer: Answer = self.call("/v3/lease/keepalive", json!({"ID": id.to_string()}))?;
        Ok((answer.result.ttl > 0).then_some(answer.result.ttl))
    }

    /// Revoke lease `id`, deleting every key bound to it; false when it was already gone.
    pub fn lease_revoke(&self, id: i64) -> Result<bool> {
        match self.call::<Value>("/v3/lease/revoke", json!({"ID": id.to_string()})) {
            Ok(_) => Ok(true),
            Err(SourceError::Failed { detail, .. }) if detail.contains("lease not found") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Run a transaction (`POST /v3/kv/txn`).
    pub fn txn(&self, txn: &Txn) -> Result<TxnResponse> {
        self.call(
            "/v3/kv/txn",
            json!({"compare": txn.compare, "success": txn.success, "failure": txn.failure}),
        )
    }

    /// POST a JSON request and decode the JSON answer.
    fn call<T: DeserializeOwned>(&self, path: &str, request: Value) -> Result<T> {
        let what = format!("{path} on {}", self.url);
        let (status, body) = self.exchange("POST", path, request.to_string().as_bytes())?;
        if status != 200 {
            return Err(self.error(&what, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            SourceError::failed(
                what,
                format!("an answer that is not the expected JSON: {e}"),
            )
        })
    }

    /// One request with the whole answer read.
    fn exchange(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let (status, mut reader) = self.open(method, path, body)?;
        let mut out = vec![];
        reader.read_to_end(&mut out).map_err(|e| {
            SourceError::failed(format!("{method} {}{path}", self.url), e.to_string())
        })?;
        Ok((status, out))
    }

    fn connect(&self) -> Result<TcpStream> {
        let unreachable = |detail: String| SourceError::Unreachable {
            target: format!("etcd at {}", self.url),
            detail,
        };
        let addrs = self
            .authority
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.authority)))?;
        let mut last = format!("{} resolves to no address", self.authority);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout.unwrap_or(CONNECT_TIMEOUT)) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e.to_string(),
            }
        }
        Err(unreachable(last))
    }

    /// Send a request; returns the status and the body as a reader.
    fn open(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Body<TcpStream>)> {
        let stream = self.connect()?;
        let failed = |e: io::Error| {
            SourceError::failed(format!("{method} {}{path}", self.url), e.to_string())
        };
        stream
            .set_read_timeout(Some(self.timeout.unwrap_or(READ_TIMEOUT)))
            .map_err(failed)?;
        stream
            .set_write_timeout(Some(self.timeout.unwrap_or(READ_TIMEOUT)))
            .map_err(failed)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            body.len()
        );
        let mut writer = &stream;
        writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body))
            .map_err(failed)?;
        Body::read_head(BufReader::new(stream)).map_err(failed)
    }

    /// The error for a non-200 answer: the gateway's message, as AccessDenied when the
    /// cluster wants credentials.
    fn error(&self, what: &str, status: u16, body: &[u8]) -> SourceError {
        let value: Value = serde_json::from_slice(body).unwrap_or_default();
        let message = value["message"]
            .as_str()
            .or(value["error"].as_str())
            .or(value["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(300)
                    .collect()
            });
        let code = value["code"]
            .as_i64()
            .or(value["error"]["grpc_code"].as_i64());
        let auth = [
            "user name is empty",
            "permission denied",
            "invalid auth token",
        ];
        if matches!(code, Some(7 | 16)) || auth.iter().any(|a| message.contains(a)) {
            return SourceError::AccessDenied {
                target: format!("etcd at {}", self.url),
                detail: format!(
                    "{message}; the cluster has authentication enabled, and Haven's etcd \
                     component has no credentials support: give it an endpoint without auth"
                ),
            };
        }
        SourceError::failed(what, format!("{message} (HTTP {status})"))
    }
}

/// A transaction for [`EtcdClient::txn`]: comparisons (all must hold), then the operations
/// run when they hold (`then_*`) or when one does not (`else_*`).
#[derive(Debug, Clone, Default)]
pub struct Txn {
    compare: Vec<Value>,
    success: Vec<Value>,
    failure: Vec<Value>,
}

/// The answer to a transaction: `responses` has one entry per operation of the branch
/// that ran, in order.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

/// One operation's answer: the field of its kind is set.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnOpResponse {
    pub response_range: Option<RangePage>,
    pub response_put: Option<Value>,
    pub response_delete_range: Option<Value>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    fn when(mut self, key: &[u8], target: &str, result: &str, field: &str, n: i64) -> Txn {
        self.compare.push(json!({
            "key": base64_encode(key), "target": target, "result": result,
            field: n.to_string(),
        }));
        self
    }

    /// The key's version (0: absent) equals `version`.
    pub fn when_version(self, key: &[u8], version: i64) -> Txn {
        self.when(key, "VERSION", "EQUAL", "version", version)
    }

    /// The key's version is above `version` (`when_version_above(k, 0)`: k exists).
    pub fn when_version_above(self, key: &[u8], version: i64) -> Txn {
        self.when(key, "VERSION", "GREATER", "version", version)
    }

    /// The key's create revision (0: absent) equals `revision`.
    pub fn when_create_revision(self, key: &[u8], revision: i64) -> Txn {
        self.when(key, "CREATE", "EQUAL", "create_revision", revision)
    }

    /// The key is bound to lease `lease` (0: to none).
    pub fn when_lease(self, key: &[u8], lease: i64) -> Txn {
        self.when(key, "LEASE", "EQUAL", "lease", lease)
    }

    fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
        json!({"request_put": {"key": base64_encode(key), "value": base64_encode(value),
            "lease": lease.to_string()}})
    }

    fn range(key: &[u8], prefix: bool) -> Value {
        let end = if prefix { prefix_end(key) } else { vec![] };
        json!({"request_range": {"key": base64_encode(key), "range_end": base64_encode(&end)}})
    }

    fn delete(key: &[u8], prefix: bool) -> Value {
        let end = if prefix { prefix_end(key) } else { vec![] };
        json!({"request_delete_range": {"key": base64_encode(key),
            "range_end": base64_encode(&end)}})
    }

    /// Put `key` (bound to `lease`, 0: none) when the comparisons hold.
    pub fn then_put(mut self, key: &[u8], value: &[u8], lease: i64) -> Txn {
        self.success.push(Txn::put(key, value, lease));
        self
    }

    /// Read `key` (every key starting with it when `prefix`) when the comparisons hold.
    pub fn then_range(mut self, key: &[u8], prefix: bool) -> Txn {
        self.success.push(Txn::range(key, prefix));
        self
    }

    /// Delete `key` (every key starting with it when `prefix`) when the comparisons hold.
    pub fn then_delete(mut self, key: &[u8], prefix: bool) -> Txn {
        self.success.push(Txn::delete(key, prefix));
        self
    }

    /// Read `key` (every key starting with it when `prefix`) when a comparison fails.
    pub fn else_range(mut self, key: &[u8], prefix: bool) -> Txn {
        self.failure.push(Txn::range(key, prefix));
        self
    }
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An HTTP/1.1 answer's body: chunked, sized, or up to the closed connection.
pub(crate) enum Body<R> {
    Chunked {
        reader: BufReader<R>,
        left: usize,
        done: bool,
    },
    Sized {
        reader: BufReader<R>,
        left: u64,
    },
    ToEnd(BufReader<R>),
}

impl<R: Read> Body<R> {
    /// Read the status line and the headers.
    fn read_head(mut reader: BufReader<R>) -> io::Result<(u16, Body<R>)> {
        let status_line = read_line(&mut reader)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| status_line.starts_with("HTTP/1."))
            .ok_or_else(|| bad_data(format!("not an HTTP answer: {status_line:?}")))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let line = read_line(&mut reader)?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name == "content-length" {
                length = Some(value.parse().map_err(|_| bad_data("bad Content-Length"))?);
            }
        }
        let body = match (chunked, length) {
            (true, _) => Body::Chunked {
                reader,
                left: 0,
                done: false,
            },
            (false, Some(left)) => Body::Sized { reader, left },
            (false, None) => Body::ToEnd(reader),
        };
        Ok((status, body))
    }
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self {
            Body::ToEnd(reader) => reader.read(buf),
            Body::Sized { reader, left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n as u64;
                Ok(n)
            }
            Body::Chunked { reader, left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let line = read_line(reader)?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    *left = usize::from_str_radix(size, 16)
                        .map_err(|_| bad_data(format!("bad chunk size {line:?}")))?;
                    if *left == 0 {
                        while !read_line(reader)?.is_empty() {}
                        *done = true;
                        return Ok(0);
                    }
                }
                let want = buf.len().min(*left);
                let n = reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n;
                if *left == 0 && !read_line(reader)?.is_empty() {
                    return Err(bad_data("a chunk does not end with CRLF"));
                }
                Ok(n)
            }
        }
    }
}

/// One CRLF-terminated line of an HTTP head (at most 8 KiB).
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = vec![];
    let n = reader.take(8192).read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended in the middle of an HTTP answer",
        ));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A gateway integer: a JSON string (64-bit values) or number; absent means 0.
pub(super) fn int<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Default,
{
    use serde::de::Error;
    let text = match Value::deserialize(d)? {
        Value::Null => return Ok(T::default()),
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => {
            return Err(D::Error::custom(format!(
                "expected an integer, got {other}"
            )))
        }
    };
    text.parse()
        .map_err(|_| D::Error::custom(format!("expected an integer, got {text:?}")))
}

/// A gateway byte string (base64).
pub(super) fn bytes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<u8>, D::Error> {
    use serde::de::Error;
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    base64_decode(&text).ok_or_else(|| D::Error::custom("invalid base64"))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding; None if `text` is not that.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, quad) in text.chunks(4).enumerate() {
        let last = i + 1 == text.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            let v = BASE64.iter().position(|&a| a == c)? as u32;
            n = n << 6 | v;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let text = base64_encode(&data);
            assert_eq!(base64_decode(&text).unwrap(), data, "{text}");
        }
        assert_eq!(base64_encode(b"v1"), "djE=");
        assert_eq!(base64_decode("L3JlZ2lzdHJ5L2sx").unwrap(), b"/registry/k1");
        for bad in ["abc", "a===", "ab=c", "ab==abcd", "ab!d"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_and_truncation_is_an_error() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        let (status, mut body) = Body::read_head(BufReader::new(Cursor::new(&answer[..]))).unwrap();
        let mut out = String::new();
        body.read_to_string(&mut out).unwrap();
        assert_eq!((status, out.as_str()), (200, "hello, world"));

        let cut = &answer[..answer.len() - 12];
        let (_, mut body) = Body::read_head(BufReader::new(Cursor::new(cut))).unwrap();
        assert!(body.read_to_end(&mut vec![]).is_err());

        let sized = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nabcdef";
        let (status, mut body) = Body::read_head(BufReader::new(Cursor::new(&sized[..]))).unwrap();
        let mut out = String::new();
        body.read_to_string(&mut out).unwrap();
        assert_eq!((status, out.as_str()), (503, "abc"));
    }

    #[test]
    fn transactions_are_the_gateways_json() {
        let txn = Txn::new()
            .when_create_revision(b"/k", 7)
            .when_lease(b"/k", 42)
            .then_put(b"/k", b"v1", 0)
            .then_range(b"/a", true)
            .else_range(b"/k", false);
        assert_eq!(
            serde_json::to_value(&txn.compare).unwrap(),
            json!([
                {"key": "L2s=", "target": "CREATE", "result": "EQUAL", "create_revision": "7"},
                {"key": "L2s=", "target": "LEASE", "result": "EQUAL", "lease": "42"},
            ])
        );
        assert_eq!(
            txn.success[0],
            json!({"request_put": {"key": "L2s=", "value": "djE=", "lease": "0"}})
        );
        assert_eq!(
            txn.success[1],
            json!({"request_range": {"key": "L2E=", "range_end": "L2I="}})
        );
        assert_eq!(
            txn.failure[0],
            json!({"request_range": {"key": "L2s=", "range_end": ""}})
        );
    }

    #[test]
    fn endpoints_are_normalised_and_tls_is_refused() {
        assert_eq!(
            EtcdClient::new("http://127.0.0.1:2379/").unwrap().url(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            EtcdClient::new("http://etcd").unwrap().authority(),
            "etcd:2379"
        );
        assert_eq!(
            EtcdClient::new("http://[::1]:23").unwrap().authority(),
            "[::1]:23"
        );
        let err = EtcdClient::new("https://10.0.0.1:2379").unwrap_err();
        assert!(matches!(err, SourceError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("TLS"), "{err}");
        for bad in ["127.0.0.1:2379", "http://u:p@h:1", "http://h:1/v3"] {
            assert!(EtcdClient::new(bad).is_err(), "{bad}");
        }
        assert_eq!(prefix_end(b"/a\xff"), b"/b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
