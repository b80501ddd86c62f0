//! The issue's flow against real PostgreSQL servers on loopback: site A's database is
//! backed up, site A dies (its server stopped and its data deleted), a dry run changes
//! nothing on site B, then the runbook provisions (a command printing site B's port),
//! restores into site B with validation, proves the data with a sql step, checks the
//! "application" over HTTP, and notifies a webhook.

mod support;

use std::time::Duration;

use haven_dr::StartOptions;
use haven_ops::backup::Observer;
use haven_ops::catalog::{DrMode, DrRunState, DrStepState};
use haven_sources::servers::postgres::PostgresServer;
use support::{dr, Http};

#[test]
fn failover_of_a_postgres_tenant_restores_proves_with_sql_and_a_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hook = Http::start(|_, _| (200, String::new()));
    let app = Http::start(|_, _| (200, "ok".into()));
    let pg = PostgresServer::start(&d.join("pg-a")).unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 1000) g;").unwrap();
    let pg_b = PostgresServer::start(&d.join("pg-b")).unwrap();
    pg_b.create_database("app").unwrap();
    std::fs::write(d.join("password"), "correct horse battery staple").unwrap();
    let text = format!(
        r#"[repositories.main]
url = "{repo}"
password-file = "password"
[alerts.ops]
kind = "webhook"
url = "http://{hook}/hook"
[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
url = "{a}"
[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "{b}"
[runbooks.fo]
tenant = "acme"
into = "acme-dr"
[[runbooks.fo.steps]]
name = "provision"
kind = "command"
run = ["sh", "-c", "echo db_port={port}; echo app=http://{app}"]
outputs = ["db_port", "app"]
[[runbooks.fo.steps]]
name = "restore"
kind = "restore"
needs = ["provision"]
[[runbooks.fo.steps]]
name = "accounts"
kind = "sql"
query = "SELECT count(*) || ':' || sum(balance) FROM accounts"
expect = "1000:5005000"
needs = ["restore"]
[[runbooks.fo.steps]]
name = "smoke"
kind = "http"
url = "${{steps.provision.app}}/health"
needs = ["restore"]
[[runbooks.fo.steps]]
name = "tell"
kind = "notify"
needs = ["accounts", "smoke"]
message = "acme is served from port ${{steps.provision.db_port}}"
"#,
        repo = d.join("repo").display(),
        hook = hook.addr,
        a = pg.url("app"),
        b = pg_b.url("app"),
        port = pg_b.port(),
        app = app.addr,
    );
    std::fs::write(d.join("haven.toml"), text).unwrap();
    let engine = dr(d, &d.join("haven.toml"));
    let point = haven_ops::backup_tenant(
        &engine.config,
        "acme",
        Duration::from_secs(60),
        &Observer::quiet(),
    )
    .unwrap();
    // Site A dies.
    drop(pg);
    assert!(!d.join("pg-a").exists());

    let tables = || {
        pg_b.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'",
        )
        .unwrap()
        .trim()
        .to_string()
    };
    let dry = engine
        .start(
            "fo",
            &StartOptions {
                mode: Some(DrMode::DryRun),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dry.state, DrRunState::Succeeded, "{dry:?}");
    let steps = engine.catalog.dr_steps(&dry.run_id).unwrap();
    let restore = steps.iter().find(|s| s.step == "restore").unwrap();
    assert!(
        restore
            .message
            .as_deref()
            .unwrap()
            .contains(&format!("point {} of", point.id)),
        "{restore:?}"
    );
    assert_eq!(tables(), "0", "the dry run created the table");
    assert_eq!(hook.hits(), 0, "the dry run notified");

    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert_eq!(
        pg_b.psql("app", "SELECT count(*) FROM accounts")
            .unwrap()
            .trim(),
        "1000"
    );
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert!(
        steps.iter().all(|s| s.state == DrStepState::Succeeded),
        "{steps:?}"
    );
    assert_eq!(
        steps.iter().find(|s| s.step == "accounts").unwrap().outputs["answer"],
        "1000:5005000"
    );
    let body = hook.requests.lock().unwrap()[0].body.clone();
    assert!(
        body.contains(&format!("served from port {}", pg_b.port())),
        "{body}"
    );
    for s in &steps {
        eprintln!("step {:<10} {:>6.2}s", s.step, s.seconds.unwrap_or(0.0));
    }
    // A wrong answer fails the proof.
    let text = std::fs::read_to_string(d.join("haven.toml"))
        .unwrap()
        .replace("1000:5005000", "999:0");
    std::fs::write(d.join("haven.toml"), text).unwrap();
    let engine = dr(d, &d.join("haven.toml"));
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed);
    assert!(
        out.error.as_deref().unwrap().contains("expected \"999:0\""),
        "{out:?}"
    );
}
