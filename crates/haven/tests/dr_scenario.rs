//! The disaster-recovery game day of issue 11, end to end with the real `haven` binary:
//! site A (127.0.0.1: PostgreSQL with pgbench data, Redis, etcd, files, the application)
//! backed up and then destroyed; `haven dr run acme-failover` provisions site B
//! (127.0.0.2), restores, proves it (HTTP, SQL), fails to scale down A (continue), points
//! `acme.example.test.` at site B in a real BIND 9, and tells the webhook. Then the ways it
//! must not go wrong: a failed validation never touches DNS, a wrong TSIG key stops the dns
//! step and `resume` finishes after the key is fixed, a dry run changes nothing, a drill
//! leaves nothing behind. The world: crates/haven-dr/tests/support (site.rs).

#[path = "../../haven-dns/tests/support/bind.rs"]
mod bind;
mod common;
#[path = "../../haven-dr/tests/support/site.rs"]
mod site;
#[path = "../../haven-ops/tests/common/webhook.rs"]
mod webhook;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;
use site::{http_get, poll, Scale, World, DRILL_RECORD, RECORD, SITE_B_IP};

fn cfg(w: &World) -> String {
    w.config.display().to_string()
}

/// `haven dr ARGS --config C` (and `--json` when asked).
fn dr(w: &World, args: &[&str], json: bool) -> Out {
    let c = cfg(w);
    let mut all = vec!["dr"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &c]);
    if json {
        all.push("--json");
    }
    run_to_end(haven_command(&all, &[]), None, Duration::from_secs(240))
}

fn backup(w: &World) -> Value {
    let c = cfg(w);
    let out = haven(&["tenant", "backup", "acme", "--config", &c, "--json"], &[]);
    out.ok("tenant backup acme");
    let point = out.json();
    assert_eq!(point["status"], "complete", "{point}");
    point
}

/// The run id a `dr run|drill|resume --json` printed (the run's status: {run, steps, audit}).
fn run_id(out: &Out) -> String {
    let v = out.json();
    v["run"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id in {v}\nstderr: {}", out.stderr))
        .to_string()
}

/// `dr status RUN --json`: the run's state and each step's outcome by name.
fn status(w: &World, run: &str) -> Value {
    let out = dr(w, &["status", run], true);
    out.ok("dr status");
    out.json()
}

fn step_outcome(status: &Value, step: &str) -> String {
    status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["step"] == step))
        .and_then(|s| s["state"].as_str())
        .unwrap_or("not run")
        .to_string()
}

fn databases_on_b(w: &World) -> Option<String> {
    w.b.psql("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'")
}

#[test]
fn the_world_stands_up_and_provision_brings_up_an_empty_site_b() {
    let w = World::start(Scale::TEST);
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);
    let a = w.a.as_ref().unwrap();
    let (code, body) = http_get("127.0.0.1", a.app_port, "/count").unwrap();
    assert_eq!((code, body.trim()), (200, "100000"));
    assert!(w.b.anything_listening().is_empty());

    let out = Command::new("sh")
        .arg(site::support_dir().join("provision.sh"))
        .arg(&w.b.dir)
        .arg("acme-dr")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "provision.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("lb_ip={SITE_B_IP}")), "{stdout}");
    assert!(
        stdout.contains(&format!("app_port={}", w.b.app_port)),
        "{stdout}"
    );
    // Empty: no application database yet, so the application is not healthy.
    assert_eq!(databases_on_b(&w).as_deref(), Some(""));
    assert_eq!(
        http_get(SITE_B_IP, w.b.app_port, "/health").map(|r| r.0),
        Some(503)
    );
    // A second call finds it running (the runbook may retry it).
    let again = Command::new("sh")
        .arg(site::support_dir().join("provision.sh"))
        .arg(&w.b.dir)
        .output()
        .unwrap();
    assert!(again.status.success());
    w.b.teardown();
    poll("site B to stop", Duration::from_secs(20), || {
        w.b.anything_listening().is_empty()
    });
}

/// The webhook bodies that carry a runbook notice.
fn notices(w: &World) -> Vec<Value> {
    w.hook
        .received()
        .into_iter()
        .filter(|b| b.to_string().contains("runbook"))
        .collect()
}

#[test]
fn game_day_site_a_dies_and_the_runbook_moves_acme_to_site_b() {
    let mut w = World::start(Scale::TEST);
    backup(&w);
    w.kill_site_a();
    let serial = w.bind.serial();

    let out = dr(&w, &["run", "acme-failover"], true);
    out.ok("dr run acme-failover");
    let run = run_id(&out);
    let st = status(&w, &run);
    println!("{st:#}");
    for step in ["provision", "restore", "smoke", "accounts", "dns", "tell"] {
        assert_eq!(step_outcome(&st, step), "succeeded", "{step}: {st:#}");
    }
    assert_eq!(
        step_outcome(&st, "scale-down-old"),
        "failed",
        "site A is dead: {st:#}"
    );

    // Traffic moved: BIND answers site B's address, and the zone changed.
    assert_eq!(w.dns_answer(), vec![SITE_B_IP]);
    assert!(w.bind.serial() > serial);
    // Site B serves the restored data.
    let (code, body) = http_get(SITE_B_IP, w.b.app_port, "/count").unwrap();
    assert_eq!((code, body.trim()), (200, "100000"));
    assert_eq!(w.b.provision_runs(), 1);
    assert!(
        w.path().join("state/catalog.sqlite").exists(),
        "the run is kept in this world's catalog"
    );
    // The operators were told, with the new address.
    poll(
        "the runbook notice at the webhook",
        Duration::from_secs(30),
        || !notices(&w).is_empty(),
    );
    let n = notices(&w);
    assert!(n.iter().any(|b| b.to_string().contains(SITE_B_IP)), "{n:?}");
}

#[test]
fn a_restore_whose_validation_fails_never_touches_dns() {
    let mut w = World::start(Scale::TEST);
    // Site B's Redis is too small: keys are evicted as they are restored.
    w.b.undersize_redis();
    backup(&w);
    w.kill_site_a();
    let serial = w.bind.serial();

    let out = dr(&w, &["run", "acme-failover"], true);
    assert_ne!(out.code, 0, "the run must fail: {}", out.stdout);
    let st = status(&w, &run_id(&out));
    println!("{st:#}");
    assert_eq!(step_outcome(&st, "restore"), "failed", "{st:#}");
    let text = st.to_string();
    assert!(
        text.contains("validation failed") && text.contains("cache (fingerprint)"),
        "{st:#}"
    );
    assert_ne!(step_outcome(&st, "dns"), "succeeded", "{st:#}");
    assert_eq!(w.bind.serial(), serial, "the zone must not change");
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);
}

#[test]
fn a_failed_system_test_never_touches_dns() {
    let mut w = World::start(Scale::TEST);
    // The restored data must have 999 accounts: it has 100000, so the sql check fails.
    w.write_config_with("", "SELECT count(*) FROM pgbench_accounts", "999");
    backup(&w);
    w.kill_site_a();
    let serial = w.bind.serial();

    let out = dr(&w, &["run", "acme-failover"], true);
    assert_ne!(out.code, 0, "the run must fail: {}", out.stdout);
    let st = status(&w, &run_id(&out));
    assert_eq!(step_outcome(&st, "restore"), "succeeded", "{st:#}");
    assert_eq!(step_outcome(&st, "accounts"), "failed", "{st:#}");
    assert_ne!(step_outcome(&st, "dns"), "succeeded", "{st:#}");
    assert_eq!(w.bind.serial(), serial, "the zone must not change");
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);
}

#[test]
fn a_wrong_tsig_key_fails_the_dns_step_and_resume_finishes_after_the_fix() {
    let mut w = World::start(Scale::TEST);
    fs::copy(&w.bind.wrong_secret_file, &w.dns_key).unwrap();
    backup(&w);
    w.kill_site_a();
    let serial = w.bind.serial();

    let out = dr(&w, &["run", "acme-failover"], true);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let run = run_id(&out);
    let st = status(&w, &run);
    assert_eq!(step_outcome(&st, "dns"), "failed", "{st:#}");
    let text = st.to_string();
    assert!(
        text.contains(&w.bind.addr.to_string()) && text.contains("haven-test."),
        "the error names server and key: {st:#}"
    );
    assert!(text.contains("BADSIG"), "{st:#}");
    assert!(
        !text.contains(
            &fs::read_to_string(&w.dns_key)
                .unwrap()
                .split('"')
                .nth(3)
                .unwrap()
                .to_string()
        ),
        "the secret is never shown"
    );
    assert_eq!(w.bind.serial(), serial);
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);

    // The operator fixes the key file and resumes: finished steps are not redone.
    fs::copy(&w.bind.key_file, &w.dns_key).unwrap();
    let c = cfg(&w);
    let out = run_to_end(
        haven_command(&["dr", "resume", &run, "--config", &c, "--json"], &[]),
        None,
        Duration::from_secs(240),
    );
    out.ok("dr resume");
    let st = status(&w, &run);
    assert_eq!(step_outcome(&st, "dns"), "succeeded", "{st:#}");
    assert_eq!(step_outcome(&st, "tell"), "succeeded", "{st:#}");
    assert_eq!(w.dns_answer(), vec![SITE_B_IP]);
    assert_eq!(w.b.provision_runs(), 1, "provision is not run again");
}

#[test]
fn a_dry_run_creates_no_database_and_changes_no_zone() {
    let w = World::start(Scale::TEST);
    backup(&w);
    let serial = w.bind.serial();
    let out = dr(&w, &["run", "acme-failover", "--dry-run"], true);
    out.ok("dr run --dry-run");
    println!("{}", out.stdout);
    assert_eq!(w.bind.serial(), serial);
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);
    assert_eq!(w.b.provision_runs(), 0);
    assert!(
        w.b.anything_listening().is_empty(),
        "nothing started on site B"
    );
    assert_eq!(databases_on_b(&w), None, "no PostgreSQL on site B at all");

    // It checks what it can: a key the server refuses fails the dry run, naming the key.
    fs::copy(&w.bind.wrong_secret_file, &w.dns_key).unwrap();
    let out = dr(&w, &["run", "acme-failover", "--dry-run"], true);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("haven-test.") && all.contains(&w.bind.addr.to_string()),
        "{all}"
    );
    assert_eq!(w.bind.serial(), serial);
}

#[test]
fn a_drill_leaves_no_server_database_or_record_behind() {
    let w = World::start(Scale::TEST);
    backup(&w);
    let a = w.a.as_ref().unwrap();
    let databases = |w: &World| {
        w.a.as_ref()
            .unwrap()
            .pg
            .psql(
                "postgres",
                "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
            )
            .unwrap()
    };
    let before = databases(&w);
    let serial = w.bind.serial();
    // Haven's work folders (scratch servers live there) go under our own TMPDIR.
    let tmp = w.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let c = cfg(&w);
    let t = tmp.display().to_string();
    let out = run_to_end(
        haven_command(
            &["dr", "drill", "acme-failover", "--config", &c, "--json"],
            &[("TMPDIR", &t)],
        ),
        None,
        Duration::from_secs(240),
    );
    out.ok("dr drill");
    let st = status(&w, &run_id(&out));
    println!("{st:#}");
    assert_eq!(step_outcome(&st, "dns"), "succeeded", "{st:#}");

    // No record: the drill record is gone, the real one untouched.
    assert!(w
        .bind
        .answer(DRILL_RECORD, haven_dns::RecordType::A)
        .is_empty());
    assert_eq!(w.dns_answer(), vec!["127.0.0.1"]);
    assert_eq!(
        w.bind.answer(RECORD, haven_dns::RecordType::A),
        vec!["127.0.0.1"]
    );
    assert!(
        w.bind.serial() > serial,
        "the drill did change (and then delete) its record"
    );
    // No database: site A has exactly the databases it had.
    assert_eq!(databases(&w), before);
    // No server: nothing on site B, nothing running from the work folders, none left.
    assert!(w.b.anything_listening().is_empty());
    assert_eq!(w.b.provision_runs(), 0);
    let leftovers: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&t))
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes left from the drill: {leftovers:?}"
    );
    let files: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "work folders left: {files:?}");
    // The live site kept serving and was not scaled down.
    assert_eq!(
        http_get("127.0.0.1", a.app_port, "/scaled-down").map(|r| r.1.trim().to_string()),
        Some("no".into())
    );
}
