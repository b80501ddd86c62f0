//! Rollback after a failed upgrade with a labelled point, against real PostgreSQL and
//! Redis servers on loopback: `tenant backup --label`, an "upgrade" that changes both,
//! another backup, then `tenant restore --point label:NAME --force` puts the tenant back
//! as it was before the upgrade, validated. `tenant points` shows the label; `label` and
//! `unlabel` work from the command line; an unknown label is a one-line error.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use haven_sources::servers::postgres::{find_bin_dir, PostgresServer};
use haven_sources::servers::redis::RedisServer;

fn redis_get(redis: &RedisServer, key: &str) -> String {
    let reply = redis.connect().unwrap().call_str(&["GET", key]).unwrap();
    reply.into_text().unwrap_or_default()
}

#[test]
fn a_labelled_point_rolls_a_failed_upgrade_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pg = PostgresServer::start(&root.join("pg")).unwrap();
    pg.create_database("app").unwrap();
    let bin = find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("pgbench"))
        .args(["-i", "-s", "1", "-q", &pg.url("app")])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
    let redis = RedisServer::start(&root.join("redis")).unwrap();
    let mut c = redis.connect().unwrap();
    for i in 0..1000u32 {
        c.send(&[b"SET", format!("k:{i}").as_bytes(), b"v2.3"]);
    }
    c.send(&[b"SET", b"schema", b"2.3"]);
    c.flush().unwrap();
    for _ in 0..1001 {
        c.read_ok("filling redis").unwrap();
    }
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
retention = {{ keep-last = 1 }}
[tenants.acme.components.db]
kind = "postgres"
url = "{pg}"
[tenants.acme.components.cache]
kind = "redis"
url = "{redis}"
"#,
            repo = root.join("repo").display(),
            pg = pg.url("app"),
            redis = redis.url(),
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let tenant = |args: &[&str]| {
        let mut all = vec!["tenant"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &cfg]);
        haven(&all, &[])
    };
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--json");
        tenant(&all)
    };

    let out = json(&[
        "backup",
        "acme",
        "--label",
        "pre-upgrade-2.4",
        "--label-expires",
        "30d",
    ]);
    out.ok("tenant backup --label");
    let before = out.json()["id"].as_str().unwrap().to_string();

    // The upgrade: a schema change and new data in both components; then it "fails" and
    // the daemon has already made another point of the broken state.
    pg.psql(
        "app",
        "ALTER TABLE pgbench_accounts ADD COLUMN tier int DEFAULT 2; DELETE FROM pgbench_history; UPDATE pgbench_branches SET bbalance = 99;",
    )
    .unwrap();
    let mut c = redis.connect().unwrap();
    c.send(&[b"SET", b"schema", b"2.4-broken"]);
    c.send(&[b"DEL", b"k:7"]);
    c.flush().unwrap();
    c.read_ok("upgrading redis").unwrap();
    c.read_ok("upgrading redis").unwrap();
    let out = json(&["backup", "acme"]);
    out.ok("tenant backup after the upgrade");
    let after = out.json()["id"].as_str().unwrap().to_string();

    let out = json(&["points", "acme"]);
    out.ok("tenant points --json");
    let points = out.json();
    assert_eq!(points[0]["id"], before.as_str(), "{points}");
    assert_eq!(
        points[0]["labels"][0]["name"], "pre-upgrade-2.4",
        "{points}"
    );
    assert!(points[0]["labels"][0]["expires"].is_string(), "{points}");
    assert_eq!(points[1]["labels"].as_array().unwrap().len(), 0, "{points}");
    let out = tenant(&["points", "acme"]);
    out.ok("tenant points");
    assert!(
        out.stdout
            .contains(&format!("label pre-upgrade-2.4 -> {before} (until ")),
        "{}",
        out.stdout
    );

    // Rollback: not over live data without --force; with it, validated.
    let out = json(&["restore", "acme", "--point", "label:pre-upgrade-2.4"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("--force"), "{}", out.stdout);
    let out = json(&[
        "restore",
        "acme",
        "--point",
        "label:pre-upgrade-2.4",
        "--force",
    ]);
    out.ok("tenant restore --point label:pre-upgrade-2.4 --force");
    let report = out.json();
    assert_eq!(report["point"], before.as_str(), "{report}");
    for c in report["components"].as_array().unwrap() {
        assert_eq!(c["outcome"], "passed", "{c}");
    }
    let columns = pg
        .psql(
            "app",
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'pgbench_accounts' AND column_name = 'tier'",
        )
        .unwrap();
    assert_eq!(columns.trim(), "0", "the schema change is rolled back");
    let balance = pg
        .psql("app", "SELECT sum(bbalance) FROM pgbench_branches")
        .unwrap();
    assert_eq!(balance.trim(), "0");
    assert_eq!(redis_get(&redis, "schema"), "2.3");
    assert_eq!(redis_get(&redis, "k:7"), "v2.3");

    // label / unlabel from the command line; an unknown label is one line with a hint.
    let out = tenant(&["label", "acme", &after[..8], "broken-2.4"]);
    out.ok("tenant label");
    assert!(out.stdout.contains(&after), "{}", out.stdout);
    tenant(&["unlabel", "acme", "broken-2.4"]).ok("tenant unlabel");
    let out = tenant(&["restore", "acme", "--point", "label:broken-2.4", "--force"]);
    out.assert_one_line_error(1, &["no label \"broken-2.4\"", "haven tenant points acme"]);
}
