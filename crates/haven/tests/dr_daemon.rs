//! `haven serve` with the real runbook engine: a runbook's `drill-schedule` makes the
//! daemon drill it (restore of a real recovery point into scratch targets, then a command
//! step), the drill is a job and a run in the catalog; the API starts a drill at once and
//! answers 202 with its run id, serves the run with its steps and audit log, and the
//! readiness report counts the drill as the proof of its point and its measured time as
//! the predicted RTO.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "test-token-0123456789";

#[test]
fn the_daemon_drills_runbooks_on_schedule_and_the_api_starts_and_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("password"), PASSWORD).unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    std::fs::create_dir_all(root.join("acme/uploads")).unwrap();
    std::fs::write(root.join("acme/uploads/a.txt"), "the data").unwrap();
    std::fs::create_dir_all(root.join("dr/uploads")).unwrap();
    let config = root.join("haven.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state-dir = "state"
api-token-file = "token"
shutdown-grace = "1s"
retention-schedule = "0 0 1 1 *"

[repositories.main]
url = "{root}/repo"
password-file = "password"

[tenants.acme]
repository = "main"
schedule = "0 0 1 1 *"
[tenants.acme.components.uploads]
kind = "files"
paths = ["{root}/acme/uploads"]

[tenants.acme-dr]
repository = "main"
schedule = "0 0 1 1 *"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{root}/dr/uploads"]

[runbooks.acme-failover]
tenant = "acme"
into = "acme-dr"
rto = "10m"
drill-schedule = "*/3 * * * * *"

[[runbooks.acme-failover.steps]]
name = "restore"
kind = "restore"

[[runbooks.acme-failover.steps]]
name = "provision"
kind = "command"
run = ["sh", "-c", "echo lb_ip=127.0.0.1"]
needs = ["restore"]
"#,
            root = root.display()
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let backup = haven(&["tenant", "backup", "acme", "--config", &cfg], &[]);
    assert_eq!(backup.code, 0, "{backup:?}");

    let addr = free_addr();
    let _served = serve(&config, &addr);
    let get = |path: &str| {
        let (status, body) = http(&addr, "GET", path, Some(TOKEN)).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        json(&body)
    };

    // The schedule: a drill job, and a drill run that succeeded.
    wait_for(
        "a scheduled drill that succeeded",
        Duration::from_secs(120),
        || {
            get("/api/v1/dr/runs")
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["mode"] == "drill" && r["state"] == "succeeded")
        },
    );
    let runs = get("/api/v1/dr/runs");
    let scheduled = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "succeeded")
        .unwrap();
    assert_eq!(scheduled["actor"], "haven-daemon (drill-schedule)");
    assert_eq!(scheduled["tenant"], "acme");
    wait_for("the drill job", Duration::from_secs(60), || {
        get("/api/v1/jobs?tenant=acme")
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "drill" && j["status"] == "succeeded")
    });

    // The API: a drill now, 202 with its run id, followed to its end.
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/runbooks/acme-failover/drill",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["run"].as_str().unwrap().to_string();
    assert!(id.starts_with("dr-"), "{id}");
    wait_for("the API's drill to end", Duration::from_secs(120), || {
        get(&format!("/api/v1/dr/runs/{id}"))["state"] != "running"
    });
    let run = get(&format!("/api/v1/dr/runs/{id}"));
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["actor"], "api");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"restore") && steps.contains(&"provision"),
        "{run:#}"
    );
    assert!(run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["state"] == "succeeded" && s["seconds"].is_number()));
    assert!(!run["audit"].as_array().unwrap().is_empty(), "{run:#}");

    // Readiness: the drill proved the point and measured the RTO.
    let readiness = get("/api/v1/readiness");
    let acme = readiness
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme")
        .unwrap();
    assert_eq!(acme["newest_verified"]["kind"], "drill", "{acme:#}");
    assert_eq!(acme["predicted_rto"]["basis"], "drill", "{acme:#}");
    assert_eq!(acme["runbooks"][0]["rto_exceeded"], false, "{acme:#}");
    assert_eq!(acme["ready"], true, "{acme:#}");

    let (status, body) = http(&addr, "POST", "/api/v1/runbooks/nope/drill", Some(TOKEN)).unwrap();
    assert_eq!(status, 404, "{body}");
}
