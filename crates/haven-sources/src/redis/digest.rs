//! The fingerprint of a Redis server: per database, the number of keys, how many have a
//! TTL, and a logical digest of every key with its type and value.
//!
//! The same function fingerprints the throwaway server loaded from a backed-up RDB and a
//! live restore target, so the two compare. The digest is logical (it reads values with
//! ordinary commands) and does not depend on the server's internal encodings (listpack or
//! hashtable, ...), so it stays stable across Redis versions.
//!
//! Per database: keys are listed with `SCAN` (never `KEYS`), sorted and deduplicated; then,
//! in pipelined batches, `TYPE` + `PTTL` and the value command of each key:
//!
//! | type    | canonical value                                              |
//! |---------|--------------------------------------------------------------|
//! | string  | `GET`                                                        |
//! | list    | `LRANGE 0 -1` (in order)                                     |
//! | set     | `SMEMBERS`, sorted                                           |
//! | zset    | `ZRANGE 0 -1 WITHSCORES` (score order), scores as f64 bits   |
//! | hash    | `HGETALL`, sorted by field                                   |
//! | stream  | `XRANGE - +`: entry ids and their fields in order            |
//! | other   | the `DUMP` payload (module types; depends on the RDB version) |
//!
//! Every piece is length-prefixed before it goes into BLAKE3, so no two different
//! keyspaces hash alike by concatenation. TTLs count (a key has one or not) but their
//! values do not, since they shrink with time. Not covered: stream consumer groups and
//! last ids, key idle times and LFU counters. Redis 7 functions get one fact, `functions`,
//! over the libraries' names, engines and code, when the server has any.
//!
//! Memory: the key names of one database are held (sorted), and one value at a time; a
//! single huge collection is read in one reply.

use blake3::Hasher;

use super::resp::{Connection, Reply};
use crate::{Fingerprint, Result, SourceError};

/// Keys per pipelined batch.
const BATCH: usize = 1000;

/// The databases holding keys, from `INFO keyspace`, with their key counts.
pub fn keyspace(conn: &mut Connection) -> Result<Vec<(u32, u64)>> {
    let info = info(conn, "keyspace")?;
    let mut dbs = vec![];
    for line in info.lines() {
        let Some((name, fields)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(db) = name.strip_prefix("db").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let keys = fields
            .split(',')
            .find_map(|f| f.strip_prefix("keys="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        dbs.push((db, keys));
    }
    dbs.sort_unstable();
    Ok(dbs)
}

/// The text of `INFO <section>`.
pub fn info(conn: &mut Connection, section: &str) -> Result<String> {
    let reply = conn.call_str(&["INFO", section])?;
    reply
        .into_text()
        .ok_or_else(|| unexpected(conn, "INFO", "a bulk string"))
}

/// A field of an `INFO` text (`redis_version`, `redis_mode`, ...).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
}

pub fn unexpected(conn: &Connection, what: &str, expected: &str) -> SourceError {
    SourceError::failed(
        format!("{what} on {}", conn.target()),
        format!("unexpected reply (expected {expected})"),
    )
}

/// All keys of the selected database, in no particular order, possibly with duplicates.
pub fn scan_batch(conn: &mut Connection, cursor: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let reply = conn.call(&[b"SCAN", cursor, b"COUNT", b"1000"])?;
    let bad = || unexpected(conn, "SCAN", "a cursor and a list of keys");
    let mut parts = reply.into_array().ok_or_else(bad)?.into_iter();
    let (Some(next), Some(keys), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let next = next.into_bytes().ok_or_else(bad)?;
    let keys = keys
        .into_array()
        .ok_or_else(bad)?
        .into_iter()
        .map(|k| k.into_bytes().ok_or_else(bad))
        .collect::<Result<Vec<_>>>()?;
    Ok((next, keys))
}

fn all_keys(conn: &mut Connection) -> Result<Vec<Vec<u8>>> {
    let mut keys = vec![];
    let mut cursor = b"0".to_vec();
    loop {
        let (next, batch) = scan_batch(conn, &cursor)?;
        keys.extend(batch);
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

fn put(h: &mut Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn put_count(h: &mut Hasher, n: usize) {
    h.update(&(n as u64).to_le_bytes());
}

/// Totals of one database.
struct DbDigest {
    keys: u64,
    with_ttl: u64,
    digest: String,
}

/// The fingerprint of every database of the server.
pub fn fingerprint(conn: &mut Connection) -> Result<Fingerprint> {
    let mut fp = Fingerprint::default();
    let (mut keys, mut with_ttl, mut dbs) = (0, 0, 0);
    for (db, _) in keyspace(conn)? {
        conn.call_str(&["SELECT", &db.to_string()])?;
        let d = digest_db(conn)?;
        if d.keys > 0 {
            fp.fact(
                format!("db{db}"),
                format!("keys={} ttl={} digest={}", d.keys, d.with_ttl, d.digest),
            );
            keys += d.keys;
            with_ttl += d.with_ttl;
            dbs += 1;
        }
    }
    let mut summary = format!("{keys} keys in {dbs} databases, {with_ttl} with a TTL");
    if let Some((libraries, digest)) = functions(conn)? {
        fp.fact(
            "functions",
            format!("libraries={libraries} digest={digest}"),
        );
        summary.push_str(&format!(", {libraries} function libraries"));
    }
    fp.summary = summary;
    Ok(fp)
}

fn digest_db(conn: &mut Connection) -> Result<DbDigest> {
    let keys = all_keys(conn)?;
    let mut h = Hasher::new();
    let (mut count, mut with_ttl) = (0u64, 0u64);
    for batch in keys.chunks(BATCH) {
        for key in batch {
            conn.send(&[b"TYPE", key]);
            conn.send(&[b"PTTL", key]);
        }
        conn.flush()?;
        let mut meta = Vec::with_capacity(batch.len());
        for _ in batch {
            let kind = conn.read_ok("TYPE")?.into_text().unwrap_or_default();
            let ttl = conn.read_ok("PTTL")?.as_int().unwrap_or(-2);
            meta.push((kind, ttl));
        }
        for (key, (kind, _)) in batch.iter().zip(&meta) {
            match kind.as_str() {
                "none" => {}
                "string" => conn.send(&[b"GET", key]),
                "list" => conn.send(&[b"LRANGE", key, b"0", b"-1"]),
                "set" => conn.send(&[b"SMEMBERS", key]),
                "zset" => conn.send(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]),
                "hash" => conn.send(&[b"HGETALL", key]),
                "stream" => conn.send(&[b"XRANGE", key, b"-", b"+"]),
                _ => conn.send(&[b"DUMP", key]),
            }
        }
        conn.flush()?;
        for (key, (kind, ttl)) in batch.iter().zip(&meta) {
            if kind == "none" {
                continue; // expired or deleted since SCAN
            }
            let value = conn.read_ok(&format!("reading {kind} key"))?;
            if value == Reply::Nil {
                continue; // vanished since TYPE
            }
            put(&mut h, key);
            put(&mut h, kind.as_bytes());
            canonical(&mut h, kind, value)
                .ok_or_else(|| unexpected(conn, &format!("reading {kind} key"), "its value"))?;
            count += 1;
            if *ttl >= 0 {
                with_ttl += 1;
            }
        }
    }
    Ok(DbDigest {
        keys: count,
        with_ttl,
        digest: h.finalize().to_hex().to_string(),
    })
}

fn bulks(reply: Reply) -> Option<Vec<Vec<u8>>> {
    reply
        .into_array()?
        .into_iter()
        .map(Reply::into_bytes)
        .collect()
}

fn pairs(items: Vec<Vec<u8>>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Some(out)
}

/// Hash a value in its canonical form; `None` when the reply has an unexpected shape.
fn canonical(h: &mut Hasher, kind: &str, value: Reply) -> Option<()> {
    match kind {
        "list" => {
            let items = bulks(value)?;
            put_count(h, items.len());
            items.iter().for_each(|i| put(h, i));
        }
        "set" => {
            let mut items = bulks(value)?;
            items.sort_unstable();
            put_count(h, items.len());
            items.iter().for_each(|i| put(h, i));
        }
        "zset" => {
            let items = pairs(bulks(value)?)?;
            put_count(h, items.len());
            for (member, score) in items {
                put(h, &member);
                // Redis versions print scores differently (0.1 vs 0.10000000000000001).
                match std::str::from_utf8(&score)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                {
                    Some(f) => h.update(&f.to_bits().to_le_bytes()),
                    None => h.update(&score),
                };
            }
        }
        "hash" => {
            let mut items = pairs(bulks(value)?)?;
            items.sort_unstable();
            put_count(h, items.len());
            for (field, v) in items {
                put(h, &field);
                put(h, &v);
            }
        }
        "stream" => {
            let entries = value.into_array()?;
            put_count(h, entries.len());
            for entry in entries {
                let mut parts = entry.into_array()?.into_iter();
                let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                    return None;
                };
                put(h, &id.into_bytes()?);
                let fields = bulks(fields)?;
                put_count(h, fields.len());
                fields.iter().for_each(|f| put(h, f));
            }
        }
        // string, and the DUMP payload of any other type
        _ => put(h, &value.into_bytes()?),
    }
    Some(())
}

/// The number of function libraries and a digest of their names, engines and code; `None`
/// when there are none or the server has no functions (before Redis 7, or not allowed).
fn functions(conn: &mut Connection) -> Result<Option<(usize, String)>> {
    conn.send(&[b"FUNCTION", b"LIST", b"WITHCODE"]);
    conn.flush()?;
    let Some(libraries) = conn.read()?.into_array() else {
        return Ok(None);
    };
    let mut libs = vec![];
    for lib in libraries {
        let Some(fields) = lib.into_array() else {
            return Ok(None);
        };
        let mut name = vec![];
        let mut engine = vec![];
        let mut code = vec![];
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let slot = match k.into_text().as_deref() {
                Some("library_name") => &mut name,
                Some("engine") => &mut engine,
                Some("library_code") => &mut code,
                _ => continue,
            };
            *slot = v.into_bytes().unwrap_or_default();
        }
        libs.push((name, engine, code));
    }
    if libs.is_empty() {
        return Ok(None);
    }
    libs.sort_unstable();
    let mut h = Hasher::new();
    put_count(&mut h, libs.len());
    for (name, engine, code) in &libs {
        put(&mut h, name);
        put(&mut h, engine);
        put(&mut h, code);
    }
    Ok(Some((libs.len(), h.finalize().to_hex().to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn hash_of(kind: &str, value: Reply) -> String {
        let mut h = Hasher::new();
        canonical(&mut h, kind, value).unwrap();
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn set_and_hash_order_does_not_matter_but_list_order_does() {
        let a = Reply::Array(vec![bulk("x"), bulk("y")]);
        let b = Reply::Array(vec![bulk("y"), bulk("x")]);
        assert_eq!(hash_of("set", a.clone()), hash_of("set", b.clone()));
        assert_ne!(hash_of("list", a), hash_of("list", b));
        let h1 = Reply::Array(vec![bulk("f1"), bulk("v1"), bulk("f2"), bulk("v2")]);
        let h2 = Reply::Array(vec![bulk("f2"), bulk("v2"), bulk("f1"), bulk("v1")]);
        assert_eq!(hash_of("hash", h1), hash_of("hash", h2));
    }

    #[test]
    fn zset_scores_compare_as_numbers_not_as_text() {
        let a = Reply::Array(vec![bulk("m"), bulk("0.1")]);
        let b = Reply::Array(vec![bulk("m"), bulk("0.10000000000000001")]);
        let c = Reply::Array(vec![bulk("m"), bulk("0.2")]);
        assert_eq!(hash_of("zset", a.clone()), hash_of("zset", b));
        assert_ne!(hash_of("zset", a), hash_of("zset", c));
    }

    #[test]
    fn pieces_are_framed_so_concatenations_differ() {
        let a = Reply::Array(vec![bulk("ab"), bulk("c")]);
        let b = Reply::Array(vec![bulk("a"), bulk("bc")]);
        assert_ne!(hash_of("list", a), hash_of("list", b));
    }

    #[test]
    fn info_fields_are_found() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "redis_mode"), Some("standalone"));
        assert_eq!(info_field(info, "redis"), None);
    }
}
