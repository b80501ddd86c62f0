//! The `redis` component against real throwaway redis-servers on loopback: backup over the
//! replication protocol, restore with RESTORE, fingerprints, probes and the error classes.

use std::path::{Path, PathBuf};

use haven_sources::redis::resp::{Connection, Reply};
use haven_sources::redis::{RedisComponent, RedisConfig};
use haven_sources::servers::redis::{RedisServer, RedisServerOptions};
use haven_sources::{Fingerprint, RestoreOptions, Result, SourceError, StreamComponent};

const HOUR: i64 = 3600;

fn component(url: &str) -> RedisComponent {
    RedisComponent::new(RedisConfig {
        url: url.to_string(),
        diskless_sync: false,
    })
}

/// A fresh work directory under `root`.
fn work(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Back up into memory, as the repository would store it.
fn backup(c: &RedisComponent, work: &Path) -> Result<(Vec<u8>, Fingerprint)> {
    let mut stored = vec![];
    let fp = c.backup(
        &mut |r| {
            r.read_to_end(&mut stored)
                .map(|_| ())
                .map_err(|e| SourceError::io("storing the stream", e))
        },
        work,
    )?;
    Ok((stored, fp))
}

fn restore(c: &RedisComponent, stored: &[u8], work: &Path, force: bool) -> Result<()> {
    c.restore(
        &mut |w| {
            w.write_all(stored)
                .map_err(|e| SourceError::io("feeding the stream", e))?;
            Ok(stored.len() as u64)
        },
        work,
        &RestoreOptions { force },
    )
}

fn call(conn: &mut Connection, args: &[&[u8]]) -> Reply {
    conn.call(args).unwrap()
}

/// Send many commands pipelined and check that none failed.
fn pipeline(conn: &mut Connection, cmds: &[Vec<Vec<u8>>]) {
    for chunk in cmds.chunks(1000) {
        for cmd in chunk {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            conn.send(&args);
        }
        conn.flush().unwrap();
        for cmd in chunk {
            let reply = conn.read().unwrap();
            assert!(!matches!(reply, Reply::Error(_)), "{cmd:?}: {reply:?}");
        }
    }
}

fn cmd(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// A binary value that varies with `i` (NULs, CRLFs, high bytes).
fn binary_value(i: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..(i % 40) + 1)
        .map(|j| ((i * 31 + j * 7) % 256) as u8)
        .collect();
    v.extend_from_slice(b"\r\n\0");
    v
}

const STRINGS: usize = 50_000;

/// Every type, in db 0 and db 3, some keys with TTLs of hours, a function library.
fn fill(conn: &mut Connection) {
    let mut cmds = vec![];
    for i in 0..STRINGS {
        let key = format!("s:{i}");
        let value = if i % 2 == 0 {
            binary_value(i)
        } else {
            format!("value-{i}").into_bytes()
        };
        cmds.push(cmd(&[b"SET", key.as_bytes(), &value]));
        if i % 50 == 0 {
            cmds.push(cmd(&[
                b"EXPIRE",
                key.as_bytes(),
                (3 * HOUR).to_string().as_bytes(),
            ]));
        }
    }
    cmds.push(cmd(&[b"SET", b"bin\0key\r\n\xff", b""]));
    cmds.push(cmd(&[b"SET", b"big", &vec![b'x'; 2 << 20]]));
    for i in 0..100 {
        let k = format!("l:{i}");
        for j in 0..50 {
            cmds.push(cmd(&[
                b"RPUSH",
                k.as_bytes(),
                format!("item-{j}").as_bytes(),
            ]));
        }
        let k = format!("set:{i}");
        for j in 0..20 {
            cmds.push(cmd(&[b"SADD", k.as_bytes(), &binary_value(i * 20 + j)]));
        }
        let k = format!("z:{i}");
        for (j, score) in ["0.1", "-2.5", "1e10", "inf", "-inf", "3"]
            .iter()
            .enumerate()
        {
            cmds.push(cmd(&[
                b"ZADD",
                k.as_bytes(),
                score.as_bytes(),
                format!("m{j}").as_bytes(),
            ]));
        }
        let k = format!("h:{i}");
        for j in 0..20 {
            cmds.push(cmd(&[
                b"HSET",
                k.as_bytes(),
                format!("f{j}").as_bytes(),
                &binary_value(j),
            ]));
        }
    }
    for j in 0..10_000 {
        cmds.push(cmd(&[b"RPUSH", b"biglist", j.to_string().as_bytes()]));
    }
    for j in 0..5_000 {
        cmds.push(cmd(&[
            b"HSET",
            b"bighash",
            format!("field-{j}").as_bytes(),
            &binary_value(j),
        ]));
    }
    cmds.push(cmd(&[b"EXPIRE", b"h:7", (2 * HOUR).to_string().as_bytes()]));
    for j in 0..100 {
        cmds.push(cmd(&[
            b"XADD",
            b"events",
            b"*",
            b"n",
            j.to_string().as_bytes(),
            b"payload",
            &binary_value(j),
        ]));
    }
    cmds.push(cmd(&[b"SELECT", b"3"]));
    for i in 0..1000 {
        cmds.push(cmd(&[
            b"SET",
            format!("db3:{i}").as_bytes(),
            format!("three-{i}").as_bytes(),
        ]));
    }
    cmds.push(cmd(&[
        b"EXPIRE",
        b"db3:5",
        (5 * HOUR).to_string().as_bytes(),
    ]));
    cmds.push(cmd(&[b"RPUSH", b"db3:list", b"a", b"b", b"c"]));
    cmds.push(cmd(&[b"ZADD", b"db3:zset", b"1", b"one", b"2", b"two"]));
    cmds.push(cmd(&[b"SELECT", b"0"]));
    cmds.push(cmd(&[
        b"FUNCTION",
        b"LOAD",
        b"#!lua name=havenlib\nredis.register_function('hello', function() return 'hi' end)",
    ]));
    pipeline(conn, &cmds);
}

fn ttl(conn: &mut Connection, key: &[u8]) -> i64 {
    call(conn, &[b"TTL", key]).as_int().unwrap()
}

#[test]
fn every_type_in_every_database_round_trips_with_ttls_and_fingerprints() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    fill(&mut src.connect().unwrap());
    let source = component(&src.url());
    let live = source.fingerprint().unwrap();

    let (stored, recorded) = backup(&source, &work(tmp.path(), "w1")).unwrap();
    assert!(stored.starts_with(b"REDIS"), "not an RDB");
    assert_eq!(
        recorded, live,
        "the backup's fingerprint is the source's state"
    );
    assert!(
        recorded.facts.contains_key("db0") && recorded.facts.contains_key("db3"),
        "{recorded:?}"
    );
    assert!(recorded.facts.contains_key("functions"), "{recorded:?}");
    let n0 = STRINGS + 2 + 400 + 3;
    assert!(
        recorded.facts["db0"].starts_with(&format!("keys={n0} ttl={} ", STRINGS / 50 + 1)),
        "{recorded:?}"
    );
    assert!(
        recorded.facts["db3"].starts_with("keys=1002 ttl=1 "),
        "{recorded:?}"
    );

    // The source is gone.
    let mut conn = src.connect().unwrap();
    call(&mut conn, &[b"FLUSHALL"]);
    call(&mut conn, &[b"FUNCTION", b"FLUSH"]);
    assert!(!recorded
        .differences(&source.fingerprint().unwrap(), 10)
        .is_empty());
    drop(src);

    let dst = RedisServer::start(&tmp.path().join("dst")).unwrap();
    let target = component(&dst.url());
    restore(&target, &stored, &work(tmp.path(), "w2"), false).unwrap();
    let after = target.fingerprint().unwrap();
    assert_eq!(recorded.differences(&after, 10), Vec::<String>::new());
    assert_eq!(after, recorded);
    assert!(target.probe().unwrap().starts_with("answers PING, Redis "));

    // Spot checks, straight from the restored server.
    let mut conn = dst.connect().unwrap();
    assert_eq!(
        call(&mut conn, &[b"GET", b"s:2"]),
        Reply::Bulk(binary_value(2))
    );
    assert_eq!(
        call(&mut conn, &[b"GET", b"s:3"]),
        Reply::Bulk(b"value-3".to_vec())
    );
    assert_eq!(
        call(&mut conn, &[b"GET", b"bin\0key\r\n\xff"]),
        Reply::Bulk(vec![])
    );
    assert_eq!(call(&mut conn, &[b"STRLEN", b"big"]), Reply::Int(2 << 20));
    let t = ttl(&mut conn, b"s:50");
    assert!(t > 3 * HOUR - 120 && t <= 3 * HOUR, "TTL of s:50 is {t}");
    let t = ttl(&mut conn, b"h:7");
    assert!(t > 2 * HOUR - 120 && t <= 2 * HOUR, "TTL of h:7 is {t}");
    assert_eq!(ttl(&mut conn, b"s:51"), -1);
    assert_eq!(call(&mut conn, &[b"LLEN", b"biglist"]), Reply::Int(10_000));
    assert_eq!(
        call(&mut conn, &[b"LINDEX", b"biglist", b"9999"]),
        Reply::Bulk(b"9999".to_vec())
    );
    assert_eq!(
        call(&mut conn, &[b"ZSCORE", b"z:9", b"m3"]),
        Reply::Bulk(b"inf".to_vec())
    );
    assert_eq!(
        call(&mut conn, &[b"HGET", b"h:1", b"f4"]),
        Reply::Bulk(binary_value(4))
    );
    assert_eq!(call(&mut conn, &[b"XLEN", b"events"]), Reply::Int(100));
    assert_eq!(
        call(&mut conn, &[b"FCALL", b"hello", b"0"]),
        Reply::Bulk(b"hi".to_vec())
    );
    call(&mut conn, &[b"SELECT", b"3"]);
    assert_eq!(
        call(&mut conn, &[b"GET", b"db3:7"]),
        Reply::Bulk(b"three-7".to_vec())
    );
    let t = ttl(&mut conn, b"db3:5");
    assert!(t > 5 * HOUR - 120 && t <= 5 * HOUR, "TTL of db3:5 is {t}");

    // One changed value in db 3 is named, and only db 3.
    call(&mut conn, &[b"SET", b"db3:7", b"changed"]);
    let diff = recorded.differences(&target.fingerprint().unwrap(), 10);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].starts_with("db3: keys=1002 ttl=1 digest="),
        "{diff:?}"
    );
}

#[test]
fn a_non_empty_target_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    let mut conn = src.connect().unwrap();
    call(&mut conn, &[b"SET", b"a", b"1"]);
    call(&mut conn, &[b"HSET", b"h", b"f", b"v"]);
    let (stored, recorded) = backup(&component(&src.url()), &work(tmp.path(), "w1")).unwrap();

    let dst = RedisServer::start(&tmp.path().join("dst")).unwrap();
    let mut conn = dst.connect().unwrap();
    call(&mut conn, &[b"SELECT", b"5"]);
    call(&mut conn, &[b"SET", b"other", b"x"]);
    let target = component(&dst.url());
    let err = restore(&target, &stored, &work(tmp.path(), "w2"), false).unwrap_err();
    assert!(matches!(err, SourceError::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("db5: 1 keys"), "{err}");
    assert_eq!(
        call(&mut conn, &[b"GET", b"other"]),
        Reply::Bulk(b"x".to_vec()),
        "untouched"
    );

    restore(&target, &stored, &work(tmp.path(), "w3"), true).unwrap();
    assert_eq!(
        call(&mut conn, &[b"GET", b"other"]),
        Reply::Nil,
        "force empties the target"
    );
    assert_eq!(target.fingerprint().unwrap(), recorded);
}

#[test]
fn an_unreachable_server_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let port = haven_sources::process::free_port().unwrap();
    let c = component(&format!("redis://:pw@127.0.0.1:{port}"));
    let errs = [
        c.probe().unwrap_err(),
        c.fingerprint().unwrap_err(),
        backup(&c, &work(tmp.path(), "w1")).unwrap_err(),
        restore(&c, b"REDIS0010", &work(tmp.path(), "w2"), false).unwrap_err(),
    ];
    for err in errs {
        assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_password_is_access_denied_and_the_right_one_works() {
    let tmp = tempfile::tempdir().unwrap();
    let password = "s3cret pass/@:";
    let src = RedisServer::start_with_password(&tmp.path().join("src"), password).unwrap();
    let port = src.port();
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}"),
        format!("redis://default:wrong@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let c = component(&url);
        for err in [
            c.probe().unwrap_err(),
            backup(&c, &work(tmp.path(), "w0")).unwrap_err(),
        ] {
            assert!(
                matches!(err, SourceError::AccessDenied { .. }),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("wrong"), "{err}");
        }
    }

    let mut conn = src.connect().unwrap();
    call(&mut conn, &[b"SET", b"k", b"v"]);
    call(&mut conn, &[b"SET", b"t", b"v", b"EX", b"7200"]);
    // The server's own URL carries the password percent-encoded; the ACL user form works too.
    let source = component(&src.url());
    assert!(!source.describe().contains("s3cret"));
    let (stored, recorded) = backup(&source, &work(tmp.path(), "w1")).unwrap();
    let dst = RedisServer::start_with_password(&tmp.path().join("dst"), "other-pass").unwrap();
    let target = component(&format!(
        "redis://default:other-pass@127.0.0.1:{}",
        dst.port()
    ));
    restore(&target, &stored, &work(tmp.path(), "w2"), false).unwrap();
    assert_eq!(target.fingerprint().unwrap(), recorded);
    assert!(
        recorded.facts["db0"].starts_with("keys=2 ttl=1 "),
        "{recorded:?}"
    );
}

#[test]
fn a_diskless_transfer_ends_at_its_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start_with(
        &tmp.path().join("src"),
        &RedisServerOptions {
            config: vec![
                ("repl-diskless-sync".into(), "yes".into()),
                ("repl-diskless-sync-delay".into(), "0".into()),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let mut conn = src.connect().unwrap();
    let cmds: Vec<_> = (0..5000)
        .map(|i| cmd(&[b"SET", format!("k{i}").as_bytes(), &binary_value(i)]))
        .collect();
    pipeline(&mut conn, &cmds);
    let source = RedisComponent::new(RedisConfig {
        url: src.url(),
        diskless_sync: true,
    });
    let live = source.fingerprint().unwrap();
    let (stored, recorded) = backup(&source, &work(tmp.path(), "w1")).unwrap();
    assert_eq!(recorded, live);
    let log = std::fs::read_to_string(src.dir().join("redis.log")).unwrap();
    assert!(
        log.contains("replicas sockets"),
        "not a diskless transfer:\n{log}"
    );

    let dst = RedisServer::start(&tmp.path().join("dst")).unwrap();
    let target = component(&dst.url());
    restore(&target, &stored, &work(tmp.path(), "w2"), false).unwrap();
    assert_eq!(target.fingerprint().unwrap(), recorded);
}

#[test]
fn a_default_transfer_is_disk_based() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    call(&mut src.connect().unwrap(), &[b"SET", b"k", b"v"]);
    let (_, recorded) = backup(&component(&src.url()), &work(tmp.path(), "w1")).unwrap();
    assert!(
        recorded.facts["db0"].starts_with("keys=1 ttl=0 "),
        "{recorded:?}"
    );
    let log = std::fs::read_to_string(src.dir().join("redis.log")).unwrap();
    assert!(
        log.contains("target: disk"),
        "not a disk-based transfer:\n{log}"
    );
}

#[test]
fn a_truncated_or_foreign_stream_fails_the_restore_and_leaves_the_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    let cmds: Vec<_> = (0..2000)
        .map(|i| cmd(&[b"SET", format!("k{i}").as_bytes(), &binary_value(i)]))
        .collect();
    pipeline(&mut src.connect().unwrap(), &cmds);
    let (stored, _) = backup(&component(&src.url()), &work(tmp.path(), "w1")).unwrap();

    let dst = RedisServer::start(&tmp.path().join("dst")).unwrap();
    let target = component(&dst.url());
    let truncated = &stored[..stored.len() - 100];
    let err = restore(&target, truncated, &work(tmp.path(), "w2"), false).unwrap_err();
    assert!(matches!(err, SourceError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("cannot load this RDB"), "{err}");
    let err = restore(&target, b"PGDMP not redis", &work(tmp.path(), "w3"), true).unwrap_err();
    assert!(err.to_string().contains("not an RDB"), "{err}");
    let mut conn = dst.connect().unwrap();
    assert_eq!(call(&mut conn, &[b"DBSIZE"]), Reply::Int(0));
}

#[test]
fn a_scratch_target_is_a_fresh_server_removed_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    call(&mut src.connect().unwrap(), &[b"SET", b"k", b"v"]);
    let source = component(&src.url());
    let (stored, recorded) = backup(&source, &work(tmp.path(), "w1")).unwrap();

    let scratch_work = work(tmp.path(), "scratch");
    let scratch = source.scratch(&scratch_work).unwrap();
    let target = scratch.component();
    assert!(target.fingerprint().unwrap().facts.is_empty());
    restore_dyn(target, &stored, &work(tmp.path(), "w2"));
    assert_eq!(target.fingerprint().unwrap(), recorded);
    let url = target.describe();
    drop(scratch);
    assert!(!scratch_work.join("redis-scratch").exists());
    let again = component(&url);
    assert!(matches!(
        again.probe().unwrap_err(),
        SourceError::Unreachable { .. }
    ));
}

fn restore_dyn(c: &dyn StreamComponent, stored: &[u8], work: &Path) {
    c.restore(
        &mut |w| {
            w.write_all(stored).unwrap();
            Ok(stored.len() as u64)
        },
        work,
        &RestoreOptions::default(),
    )
    .unwrap();
}

#[test]
fn a_failing_sink_fails_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    call(&mut src.connect().unwrap(), &[b"SET", b"k", b"v"]);
    let err = component(&src.url())
        .backup(
            &mut |r| {
                let mut head = [0u8; 5];
                r.read_exact(&mut head).unwrap();
                Err(SourceError::failed("storing", "disk full"))
            },
            &work(tmp.path(), "w1"),
        )
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
}

/// Scale check, run by hand: `cargo nextest run -p haven-sources --test redis --run-ignored only`.
#[test]
#[ignore = "a scale check of about a minute"]
fn a_million_keys_back_up_restore_and_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let src = RedisServer::start(&tmp.path().join("src")).unwrap();
    let mut conn = src.connect().unwrap();
    for batch in 0..1000 {
        let cmds: Vec<_> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                cmd(&[b"SET", format!("key:{n}").as_bytes(), &binary_value(n)])
            })
            .collect();
        pipeline(&mut conn, &cmds);
    }
    let started = std::time::Instant::now();
    let source = component(&src.url());
    let (stored, recorded) = backup(&source, &work(tmp.path(), "w1")).unwrap();
    eprintln!(
        "backup of {} bytes with fingerprint: {:?}",
        stored.len(),
        started.elapsed()
    );
    assert!(
        recorded.facts["db0"].starts_with("keys=1000000 "),
        "{recorded:?}"
    );
    drop(src);
    let dst = RedisServer::start(&tmp.path().join("dst")).unwrap();
    let target = component(&dst.url());
    let started = std::time::Instant::now();
    restore(&target, &stored, &work(tmp.path(), "w2"), false).unwrap();
    eprintln!("restore: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    assert_eq!(target.fingerprint().unwrap(), recorded);
    eprintln!("fingerprint: {:?}", started.elapsed());
}
