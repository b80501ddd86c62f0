//! A whole tenant against real servers that the test starts on loopback, each with its
//! own data directory and port: PostgreSQL (filled by pgbench), Redis (keys of every
//! type), etcd (workflow-like keys), MariaDB through a `command` component, and files.
//! One recovery point; the sources are destroyed; the tenant is re-created into new
//! servers and validated; `verify` restores into scratch targets; wrong credentials make
//! a failed point. (Elasticsearch and Cassandra cannot run on this machine: their recipes
//! in the README are `command` components that are not tested here.)

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use haven_sources::servers::etcd::EtcdServer;
use haven_sources::servers::postgres::{find_bin_dir, PostgresServer};
use haven_sources::servers::redis::RedisServer;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway MariaDB server (mariadb-install-db + mariadbd) on a unix socket and a free
/// port; killed on drop.
struct Mariadb {
    child: Child,
    socket: PathBuf,
}

impl Mariadb {
    fn start(dir: &Path) -> Mariadb {
        let data = dir.join("data");
        fs::create_dir_all(&data).unwrap();
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db (Debian: mariadb-server) is needed by this test");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let socket = dir.join("mysqld.sock");
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={}", free_port()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("mysqld.log")).unwrap())
            .spawn()
            .expect("mariadbd (Debian: mariadb-server) is needed by this test");
        let db = Mariadb { child, socket };
        wait_for("mariadbd to answer", Duration::from_secs(60), || {
            db.sql("", "SELECT 1").is_ok()
        });
        db
    }

    fn client(&self) -> String {
        format!("mariadb --no-defaults -uroot -S {}", self.socket.display())
    }

    fn sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{} -N -B {db}", self.client()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fill_postgres(pg: &PostgresServer) {
    pg.create_database("app").unwrap();
    let bin = find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("pgbench"))
        .args(["-i", "-s", "2", "-q", &pg.url("app")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.psql("app", "CREATE TABLE notes (id serial primary key, body text, data bytea); INSERT INTO notes (body, data) SELECT 'note ' || g || ' ✓', decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g; INSERT INTO notes (body) VALUES (NULL);").unwrap();
}

fn fill_redis(redis: &RedisServer) {
    let mut c = redis.connect().unwrap();
    let mut n = 0;
    for i in 0..20_000u32 {
        let k = format!("k:{i}");
        match i % 6 {
            0 => c.send(&[b"SET", k.as_bytes(), &i.to_le_bytes()]),
            1 => c.send(&[
                b"HSET",
                k.as_bytes(),
                b"f",
                b"v",
                b"n",
                i.to_string().as_bytes(),
            ]),
            2 => c.send(&[b"RPUSH", k.as_bytes(), b"a", b"b", b"c"]),
            3 => c.send(&[b"SADD", k.as_bytes(), b"x", i.to_string().as_bytes()]),
            4 => c.send(&[
                b"ZADD",
                k.as_bytes(),
                b"2.5",
                b"m",
                b"-1",
                i.to_string().as_bytes(),
            ]),
            _ => c.send(&[b"SETEX", k.as_bytes(), b"36000", b"expiring"]),
        }
        n += 1;
    }
    c.send(&[b"SELECT", b"2"]);
    c.send(&[b"XADD", b"events", b"*", b"kind", b"order", b"id", b"17"]);
    c.send(&[b"SET", b"in-db-2", b"yes"]);
    n += 3;
    c.flush().unwrap();
    for _ in 0..n {
        c.read_ok("filling redis").unwrap();
    }
}

fn fill_etcd(etcd: &EtcdServer) {
    for i in 0..500u32 {
        etcd.client()
            .put(
                format!("/registry/workflows/wf-{i}").as_bytes(),
                format!("{{\"state\":\"running\",\"step\":{i}}}").as_bytes(),
            )
            .unwrap();
    }
}

#[test]
fn a_whole_tenant_is_recreated_on_new_servers_and_proves_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pg = PostgresServer::start(&root.join("pg")).unwrap();
    fill_postgres(&pg);
    let redis = RedisServer::start(&root.join("redis")).unwrap();
    fill_redis(&redis);
    let etcd = EtcdServer::start(&root.join("etcd")).unwrap();
    fill_etcd(&etcd);
    let maria = Mariadb::start(&root.join("maria"));
    maria.sql("", "CREATE DATABASE app; USE app; CREATE TABLE app.ledger (id INT PRIMARY KEY, amount DECIMAL(10,2), memo VARCHAR(50)); INSERT INTO app.ledger SELECT seq, seq * 1.5, CONCAT('entry ', seq) FROM seq_1_to_3000;").unwrap();
    let uploads = root.join("uploads");
    make_tree(&uploads, 77, TreeSpec::SMALL);
    let expected_uploads = root.join("expected-uploads");
    copy_tree(&uploads, &expected_uploads);

    // The recovery site: new, empty servers.
    let pg_dr = PostgresServer::start(&root.join("pg-dr")).unwrap();
    let redis_dr = RedisServer::start(&root.join("redis-dr")).unwrap();
    let maria_dr = Mariadb::start(&root.join("maria-dr"));
    let etcd_dr_endpoint = format!("http://127.0.0.1:{}", free_port());
    let etcd_dr_dir = root.join("etcd-dr");

    let fingerprint_sql =
        "SELECT 'rows', CAST(COUNT(*) AS CHAR) FROM ledger UNION ALL SELECT 'sum', CAST(SUM(amount) AS CHAR) FROM ledger";
    fs::write(root.join("password"), PASSWORD).unwrap();
    let config = root.join("haven.toml");
    fs::write(
        &config,
        format!(
            r#"
[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
url = "{pg}"
[tenants.acme.components.cache]
kind = "redis"
url = "{redis}"
[tenants.acme.components.state]
kind = "etcd"
endpoints = ["{etcd}"]
[tenants.acme.components.uploads]
kind = "files"
paths = ["{uploads}"]
[tenants.acme.components.ledger]
kind = "command"
backup = "{m} --single-transaction app"
restore = "{mc} app"
fingerprint = "{mc} -N -B app -e \"{fp}\""
verify-restore = "{mc} -e 'CREATE DATABASE app_verify' && {mc} app_verify"
verify-fingerprint = "{mc} -N -B app_verify -e \"{fp}\""
verify-cleanup = "{mc} -e 'DROP DATABASE IF EXISTS app_verify'"

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "{pg_dr}"
[tenants.acme-dr.components.cache]
kind = "redis"
url = "{redis_dr}"
[tenants.acme-dr.components.state]
kind = "etcd"
endpoints = ["{etcd_dr}"]
data-dir = "{etcd_dr_dir}"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{uploads_dr}"]
[tenants.acme-dr.components.ledger]
kind = "command"
backup = "{mc_dr} app"
restore = "{mc_dr} -e 'CREATE DATABASE IF NOT EXISTS app' && {mc_dr} app"
fingerprint = "{mc_dr} -N -B app -e \"{fp}\""
"#,
            repo = root.join("repo").display(),
            pg = pg.url("app"),
            redis = redis.url(),
            etcd = etcd.endpoint(),
            uploads = uploads.display(),
            m = maria.client().replace("mariadb ", "mariadb-dump "),
            mc = maria.client(),
            fp = fingerprint_sql,
            pg_dr = pg_dr.url("app"),
            redis_dr = redis_dr.url(),
            etcd_dr = etcd_dr_endpoint,
            etcd_dr_dir = etcd_dr_dir.display(),
            uploads_dr = root.join("uploads-dr").display(),
            mc_dr = maria_dr.client(),
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let tenant = |args: &[&str]| {
        let mut all = vec!["tenant"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &cfg, "--json"]);
        haven(&all, &[])
    };

    let out = tenant(&["backup", "acme"]);
    out.ok("tenant backup acme");
    let point = out.json();
    assert_eq!(point["status"], "complete", "{point}");
    for c in ["db", "cache", "state", "uploads", "ledger"] {
        assert_eq!(point["components"][c]["status"], "ok", "{c}: {point}");
    }
    assert_eq!(
        point["components"]["ledger"]["fingerprint"]["facts"]["rows"],
        "3000"
    );

    // verify (the drill, on the live tenant): every component restored into scratch
    // targets next to its source, validated, removed.
    let out = tenant(&["verify", "acme"]);
    out.ok("tenant verify acme");
    let report = out.json();
    for c in report["components"].as_array().unwrap() {
        assert_eq!(c["outcome"], "passed", "{c}");
        assert!(
            c["target"].as_str().unwrap().starts_with("scratch") || c["kind"] == "files",
            "{c}"
        );
    }
    let leftover = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'haven_verify_%'",
        )
        .unwrap();
    assert_eq!(leftover.trim(), "0", "the scratch database was dropped");

    // Disaster: every source is destroyed.
    drop(pg);
    drop(redis);
    drop(etcd);
    drop(maria);
    fs::remove_dir_all(&uploads).unwrap();

    let started = Instant::now();
    let out = tenant(&["restore", "acme", "--into", "acme-dr"]);
    let _etcd_dr = EtcdServer::adopt(&etcd_dr_dir, &etcd_dr_endpoint).ok();
    out.ok("tenant restore acme --into acme-dr");
    let report = out.json();
    let comps = report["components"].as_array().unwrap();
    assert_eq!(comps.len(), 5, "{report}");
    for c in comps {
        assert_eq!(c["outcome"], "passed", "{c}");
        let checks = c["checks"].as_array().unwrap();
        assert!(
            checks
                .iter()
                .any(|k| k["name"] == "fingerprint" && k["passed"] == true),
            "{c}"
        );
        assert!(c["restore_seconds"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert!(report["seconds"].as_f64().unwrap() <= started.elapsed().as_secs_f64());
    assert_same_tree(&expected_uploads, &root.join("uploads-dr"));
    assert_eq!(
        maria_dr
            .sql("app", "SELECT SUM(amount) FROM ledger")
            .unwrap()
            .trim(),
        "6752250.00"
    );
    let accounts = pg_dr
        .psql("app", "SELECT count(*) FROM pgbench_accounts")
        .unwrap();
    assert_eq!(accounts.trim(), "200000");

    // A restored database that holds data is not overwritten without --force; with it,
    // the data is put back (a change made after the restore is gone).
    pg_dr
        .psql(
            "app",
            "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1",
        )
        .unwrap();
    let out = tenant(&["restore", "acme", "--into", "acme-dr", "--component", "db"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    let error = out.json()["components"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("not empty") && error.contains("--force"),
        "{error}"
    );
    let out = tenant(&[
        "restore",
        "acme",
        "--into",
        "acme-dr",
        "--component",
        "db",
        "--force",
    ]);
    out.ok("restore --force");
    let balance = pg_dr
        .psql("app", "SELECT bbalance FROM pgbench_branches WHERE bid = 1")
        .unwrap();
    assert_eq!(balance.trim(), "0");
}

#[test]
fn wrong_database_credentials_make_a_failed_point_naming_tenant_and_component() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pg = PostgresServer::start_with_password(&root.join("pg"), "s3cret-pw").unwrap();
    pg.create_database("app").unwrap();
    let redis = RedisServer::start_with_password(&root.join("redis"), "redis-pw").unwrap();
    fs::write(root.join("password"), PASSWORD).unwrap();
    let config = root.join("haven.toml");
    fs::write(
        &config,
        format!(
            "[repositories.main]\nurl = \"{}\"\npassword-file = \"password\"\n[tenants.acme]\nrepository = \"main\"\n[tenants.acme.components.db]\nkind = \"postgres\"\nurl = \"{}\"\n[tenants.acme.components.cache]\nkind = \"redis\"\nurl = \"redis://:wrong-pw@127.0.0.1:{}\"\n",
            root.join("repo").display(),
            pg.url_as("postgres", Some("not-the-password"), "app"),
            redis.port()
        ),
    )
    .unwrap();
    let out = haven(
        &[
            "tenant",
            "backup",
            "acme",
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    for (component, hint) in [
        ("db", "refused the credentials"),
        ("cache", "refused the credentials"),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("tenant acme: component {component}:")))
            .unwrap_or_else(|| panic!("no line for {component}: {}", out.stderr));
        assert!(line.contains(hint), "{line}");
    }
    assert!(
        !out.stderr.contains("not-the-password") && !out.stderr.contains("wrong-pw"),
        "passwords are never shown: {}",
        out.stderr
    );
}
