//! `haven demo`: what Haven is for, on this machine, in one command. It starts throwaway
//! PostgreSQL and Redis servers with sample data and a folder of uploads (tenant `acme`),
//! backs the tenant up into a local repository as one recovery point, destroys the
//! servers and their data, re-creates the tenant from the recovery point into new servers
//! (tenant `acme-dr`), validates every component, and prints the report with the measured
//! restore time. Everything lives in one folder, removed at the end unless `--keep`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use haven_ops::backup::Observer;
use haven_ops::report::human_bytes;
use haven_ops::{Config, RestoreRequest};
use haven_sources::servers::postgres::PostgresServer;
use haven_sources::servers::redis::RedisServer;

use crate::cli::{DemoArgs, Global};

const SAMPLE_SQL: &str = "
CREATE TABLE customers AS
  SELECT g AS id, 'customer ' || g AS name, md5(g::text) || '@example.com' AS email,
         now() - g * interval '1 hour' AS since
  FROM generate_series(1, 20000) g;
ALTER TABLE customers ADD PRIMARY KEY (id);
CREATE TABLE orders AS
  SELECT g AS id, 1 + g % 20000 AS customer_id, (g % 997) * 1.25 AS amount,
         repeat(md5(g::text), 4) AS note
  FROM generate_series(1, 300000) g;
ALTER TABLE orders ADD PRIMARY KEY (id);
CREATE INDEX orders_customer ON orders (customer_id);
";

pub fn run(g: &Global, a: DemoArgs) -> Result<i32> {
    let (dir, _guard) = match a.dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = std::env::temp_dir().join(format!("haven-demo-{}", std::process::id()));
            fs::create_dir_all(&t)?;
            (t.clone(), (!a.keep).then_some(RemoveOnDrop(t)))
        }
    };
    let say = |s: &str| {
        if !g.quiet {
            println!("{s}");
        }
    };
    say(&format!("== Haven demo in {}", dir.display()));

    say("== 1. tenant acme: PostgreSQL with sample data, Redis with sample keys, a folder of uploads");
    let pg = PostgresServer::start(&dir.join("acme-postgres")).context("starting PostgreSQL")?;
    pg.create_database("app")?;
    pg.psql("app", SAMPLE_SQL)?;
    let redis = RedisServer::start(&dir.join("acme-redis")).context("starting Redis")?;
    fill_redis(&redis)?;
    let uploads = dir.join("acme-uploads");
    fill_uploads(&uploads)?;
    say(&format!(
        "   PostgreSQL {} (database app: customers 20,000 rows, orders 300,000 rows)",
        pg.url("app")
    ));
    say(&format!(
        "   Redis      {} (10,000 keys: strings, hashes, lists, sets, sorted sets; some with TTLs)",
        redis.url()
    ));
    say(&format!("   uploads    {}", uploads.display()));

    say("== 2. the recovery target acme-dr: new, empty servers (a different site in real life)");
    let pg_dr = PostgresServer::start(&dir.join("dr-postgres")).context("starting PostgreSQL")?;
    let redis_dr = RedisServer::start(&dir.join("dr-redis")).context("starting Redis")?;
    let config_path = dir.join("haven.toml");
    let password = hex::encode(haven_repo::crypto::random_bytes::<16>());
    fs::write(dir.join("password"), &password)?;
    fs::write(
        &config_path,
        format!(
            r#"# written by `haven demo`
[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
url = "{db}"
[tenants.acme.components.cache]
kind = "redis"
url = "{cache}"
[tenants.acme.components.uploads]
kind = "files"
paths = ["{uploads}"]

[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "{db_dr}"
[tenants.acme-dr.components.cache]
kind = "redis"
url = "{cache_dr}"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{uploads_dr}"]
"#,
            repo = dir.join("repository").display(),
            db = pg.url("app"),
            cache = redis.url(),
            uploads = uploads.display(),
            db_dr = pg_dr.url("app"),
            cache_dr = redis_dr.url(),
            uploads_dr = dir.join("dr-uploads").display(),
        ),
    )?;
    say(&format!("   config     {}", config_path.display()));
    let config = Config::load(&config_path)?;
    let observer = if g.quiet {
        Observer::quiet()
    } else {
        Observer::new(|line| println!("   {line}"))
    };

    say("== 3. haven tenant backup acme: one recovery point, every component, fingerprints recorded");
    let point = haven_ops::backup_tenant(&config, "acme", Duration::ZERO, &observer)?;
    let (bytes, added) = point.sizes();
    say(&format!(
        "   recovery point {}: {:?}, {} backed up, {} stored (deduplicated, compressed, AES-256-GCM encrypted)",
        point.id,
        point.status,
        human_bytes(bytes),
        human_bytes(added)
    ));
    if !point.failures().is_empty() {
        anyhow::bail!("the backup failed: {}", point.failures().join("; "));
    }

    say("== 4. disaster: the servers of acme are stopped and their data deleted");
    drop(pg);
    drop(redis);
    fs::remove_dir_all(&uploads)?;

    say("== 5. haven tenant restore acme --into acme-dr: re-create the tenant, then validate it");
    let started = Instant::now();
    let report = haven_ops::restore_tenant(
        &config,
        &RestoreRequest {
            tenant: "acme".into(),
            into: Some("acme-dr".into()),
            ..Default::default()
        },
        &observer,
    )?;
    let wall = started.elapsed();
    if !g.quiet {
        println!();
        print!("{}", report.render());
    }
    say(&format!(
        "== tenant acme re-created into new servers in {:.1} s; the repository is at {}",
        wall.as_secs_f64(),
        dir.join("repository").display()
    ));
    drop(pg_dr);
    drop(redis_dr);
    Ok(if report.passed() { 0 } else { 3 })
}

fn fill_redis(redis: &RedisServer) -> Result<()> {
    let mut c = redis.connect()?;
    for i in 0..10_000u32 {
        let key = format!("session:{i}");
        match i % 5 {
            0 => c.send(&[b"SET", key.as_bytes(), format!("user-{}", i * 7).as_bytes()]),
            1 => c.send(&[
                b"HSET",
                key.as_bytes(),
                b"user",
                i.to_string().as_bytes(),
                b"cart",
                b"3 items",
            ]),
            2 => c.send(&[
                b"RPUSH",
                key.as_bytes(),
                b"viewed:1",
                b"viewed:2",
                i.to_string().as_bytes(),
            ]),
            3 => c.send(&[
                b"SADD",
                key.as_bytes(),
                b"admin",
                b"beta",
                i.to_string().as_bytes(),
            ]),
            _ => c.send(&[
                b"ZADD",
                key.as_bytes(),
                b"1.5",
                b"a",
                i.to_string().as_bytes(),
                b"b",
            ]),
        }
        if i % 10 == 0 {
            c.send(&[b"EXPIRE", key.as_bytes(), b"86400"]);
        }
    }
    c.flush()?;
    for i in 0..10_000u32 {
        c.read_ok("filling Redis")?;
        if i % 10 == 0 {
            c.read_ok("filling Redis")?;
        }
    }
    Ok(())
}

fn fill_uploads(dir: &Path) -> Result<()> {
    for i in 0..50u32 {
        let sub = dir.join(format!("2026/{:02}", 1 + i % 12));
        fs::create_dir_all(&sub)?;
        let body: String = (0..(200 + i * 40))
            .map(|n| format!("invoice {i} line {n}\n"))
            .collect();
        fs::write(sub.join(format!("invoice-{i}.txt")), body)?;
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
