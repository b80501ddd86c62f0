//! Components restored side by side: a tenant of PostgreSQL (pgbench), Redis, etcd and
//! files, on real servers on loopback, restored with `--parallel 1` into one set of new
//! servers and with `--parallel 4` into another. Both give the same validated result; the
//! parallel report shows the components' intervals overlapping. The two wall times are
//! printed (the before/after figure of ADR 0016). `HAVEN_PARALLEL_SCALE=N` multiplies
//! the data (pgbench scale 3N, 30,000N Redis keys, a N MiB random file): the benchmark
//! line in bench/README.md.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::*;
use haven_sources::servers::etcd::EtcdServer;
use haven_sources::servers::postgres::{find_bin_dir, PostgresServer};
use haven_sources::servers::redis::RedisServer;
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The recovery site's servers for one restore (etcd is started by the restore itself).
struct Site {
    pg: PostgresServer,
    redis: RedisServer,
    etcd_endpoint: String,
    etcd_dir: std::path::PathBuf,
    uploads: std::path::PathBuf,
}

impl Site {
    fn start(dir: &Path) -> Site {
        Site {
            pg: PostgresServer::start(&dir.join("pg")).unwrap(),
            redis: RedisServer::start(&dir.join("redis")).unwrap(),
            etcd_endpoint: format!("http://127.0.0.1:{}", free_port()),
            etcd_dir: dir.join("etcd"),
            uploads: dir.join("uploads"),
        }
    }

    fn tenant_toml(&self, name: &str) -> String {
        format!(
            r#"
[tenants.{name}]
repository = "main"
[tenants.{name}.components.db]
kind = "postgres"
url = "{pg}"
[tenants.{name}.components.cache]
kind = "redis"
url = "{redis}"
[tenants.{name}.components.state]
kind = "etcd"
endpoints = ["{etcd}"]
data-dir = "{etcd_dir}"
[tenants.{name}.components.uploads]
kind = "files"
paths = ["{uploads}"]
"#,
            pg = self.pg.url("app"),
            redis = self.redis.url(),
            etcd = self.etcd_endpoint,
            etcd_dir = self.etcd_dir.display(),
            uploads = self.uploads.display(),
        )
    }
}

/// The data multiplier (`HAVEN_PARALLEL_SCALE`, default 1).
fn scale() -> u32 {
    std::env::var("HAVEN_PARALLEL_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn fill(pg: &PostgresServer, redis: &RedisServer, etcd: &EtcdServer) {
    pg.create_database("app").unwrap();
    let bin = find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("pgbench"))
        .args(["-i", "-s", &(3 * scale()).to_string(), "-q", &pg.url("app")])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
    let mut c = redis.connect().unwrap();
    let keys = 30_000 * scale();
    for batch in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        for i in batch {
            c.send(&[b"SET", format!("k:{i}").as_bytes(), &i.to_le_bytes()]);
        }
        c.flush().unwrap();
        for _ in batch {
            c.read_ok("filling redis").unwrap();
        }
    }
    for i in 0..300u32 {
        etcd.client()
            .put(
                format!("/wf/{i}").as_bytes(),
                format!("step {i}").as_bytes(),
            )
            .unwrap();
    }
}

fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name}: {report}"))
}

fn assert_all_passed(report: &Value) {
    let comps = report["components"].as_array().unwrap();
    assert_eq!(comps.len(), 4, "{report}");
    for c in comps {
        assert_eq!(c["outcome"], "passed", "{c}");
        assert!(
            c["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["name"] == "fingerprint" && k["passed"] == true),
            "{c}"
        );
        let (start, end) = (
            c["start_seconds"].as_f64().unwrap(),
            c["end_seconds"].as_f64().unwrap(),
        );
        assert!(start > 0.0 && end > start, "{c}");
        assert!(end <= report["seconds"].as_f64().unwrap(), "{c} {report}");
    }
}

#[test]
fn components_restored_side_by_side_give_the_same_validated_result() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pg = PostgresServer::start(&root.join("pg")).unwrap();
    let redis = RedisServer::start(&root.join("redis")).unwrap();
    let etcd = EtcdServer::start(&root.join("etcd")).unwrap();
    fill(&pg, &redis, &etcd);
    let uploads = root.join("uploads");
    make_tree(
        &uploads,
        16,
        TreeSpec {
            big_random: (scale() as usize - 1) << 20,
            ..TreeSpec::SMALL
        },
    );
    let one = Site::start(&root.join("one"));
    let four = Site::start(&root.join("four"));
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
{one}{four}"#,
            repo = root.join("repo").display(),
            pg = pg.url("app"),
            redis = redis.url(),
            etcd = etcd.endpoint(),
            uploads = uploads.display(),
            one = one.tenant_toml("acme-one"),
            four = four.tenant_toml("acme-four"),
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
    tenant(&["backup", "acme"]).ok("tenant backup acme");

    let out = tenant(&["restore", "acme", "--into", "acme-one", "--parallel", "1"]);
    let _etcd_one = EtcdServer::adopt(&one.etcd_dir, &one.etcd_endpoint).ok();
    out.ok("restore --parallel 1");
    let serial = out.json();
    assert_eq!(serial["parallelism"], 1, "{serial}");
    assert_all_passed(&serial);
    // One after another: each component starts after the previous one ended.
    let mut intervals: Vec<(f64, f64)> = serial["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["start_seconds"].as_f64().unwrap(),
                c["end_seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in intervals.windows(2) {
        assert!(w[1].0 >= w[0].1, "{serial}");
    }

    let out = tenant(&["restore", "acme", "--into", "acme-four", "--parallel", "4"]);
    let _etcd_four = EtcdServer::adopt(&four.etcd_dir, &four.etcd_endpoint).ok();
    out.ok("restore --parallel 4");
    let parallel = out.json();
    assert_eq!(parallel["parallelism"], 4, "{parallel}");
    assert_all_passed(&parallel);
    // Side by side: the database's interval overlaps every other component's.
    let db = component(&parallel, "db");
    for name in ["cache", "state", "uploads"] {
        let c = component(&parallel, name);
        assert!(
            c["start_seconds"].as_f64() < db["end_seconds"].as_f64()
                && db["start_seconds"].as_f64() < c["end_seconds"].as_f64(),
            "{name} does not overlap db: {parallel}"
        );
    }
    // The same data in both: the fingerprints each restore compared are the backup's.
    for name in ["db", "cache", "state", "uploads"] {
        let detail = |r: &Value| component(r, name)["checks"][0]["detail"].clone();
        assert_eq!(detail(&serial), detail(&parallel), "{name}");
    }
    assert_eq!(
        four.pg
            .psql("app", "SELECT count(*) FROM pgbench_accounts")
            .unwrap()
            .trim(),
        (300_000 * scale()).to_string()
    );
    assert_same_tree(&uploads, &four.uploads);
    let sum = |r: &Value| -> f64 {
        r["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["restore_seconds"].as_f64().unwrap() + c["validate_seconds"].as_f64().unwrap()
            })
            .sum()
    };
    let per_component = |r: &Value| -> String {
        r["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {:.2}+{:.2} s",
                    c["name"].as_str().unwrap(),
                    c["restore_seconds"].as_f64().unwrap(),
                    c["validate_seconds"].as_f64().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "restore wall time (scale {}): --parallel 1 {:.2} s (sum {:.2} s: {}); --parallel 4 {:.2} s (sum {:.2} s: {})",
        scale(),
        serial["seconds"].as_f64().unwrap(),
        sum(&serial),
        per_component(&serial),
        parallel["seconds"].as_f64().unwrap(),
        sum(&parallel),
        per_component(&parallel)
    );

    // verify runs side by side too, into scratch targets.
    let out = tenant(&["verify", "acme", "--parallel", "3"]);
    out.ok("tenant verify --parallel 3");
    let report = out.json();
    assert_eq!(report["parallelism"], 3, "{report}");
    assert_all_passed(&report);
}
