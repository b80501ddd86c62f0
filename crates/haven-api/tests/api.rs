//! The JSON API, /metrics and the OpenAPI document over a fake daemon (`common::FakeView`),
//! through a real server on loopback.

mod common;

use std::collections::BTreeSet;

use common::*;
use haven_api::{ApiConfig, ApiError};
use haven_ops::daemon::view::{JobKind, RunbookMode};

/// Every protected route, as (method, path) with real parameters.
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/api/v1/tenants"),
    ("GET", "/api/v1/tenants/shop-eu"),
    ("GET", "/api/v1/tenants/shop-eu/points"),
    ("POST", "/api/v1/tenants/shop-eu/backup"),
    ("POST", "/api/v1/tenants/shop-eu/verify"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/7"),
    ("POST", "/api/v1/reload"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/readiness"),
    ("GET", "/api/v1/dr/runs"),
    ("GET", "/api/v1/dr/runs/dr-20261205T040000Z-ab12"),
    ("POST", "/api/v1/runbooks/shop-failover/run"),
    ("POST", "/api/v1/runbooks/shop-failover/dry-run"),
    ("POST", "/api/v1/runbooks/shop-failover/drill"),
];

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{what}: {reply:?}"
    );
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("Authorization: Bearer"), "{what}: {error}");
}

#[test]
fn missing_token_is_401_and_nothing_is_done() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    for (method, path) in PROTECTED {
        let reply = request(server.addr(), method, path, None);
        assert_refused(&reply, &format!("{method} {path} without a token"));
        assert!(reply.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("missing API token"));
    }
    assert!(view.triggered().is_empty());
    assert_eq!(view.calls(), 0, "the daemon was asked something");
}

#[test]
fn wrong_token_is_401_and_nothing_is_done() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let prefix = bearer(&TOKEN[..TOKEN.len() - 1]);
    let longer = bearer(&format!("{TOKEN}x"));
    let basic = format!("Basic {TOKEN}");
    let wrong: [&str; 5] = ["Bearer nope", &prefix, &longer, &basic, "Bearer "];
    for (method, path) in PROTECTED {
        for auth in wrong {
            let reply = request(server.addr(), method, path, Some(auth));
            assert_refused(&reply, &format!("{method} {path} with {auth:?}"));
        }
    }
    assert!(view.triggered().is_empty());
    assert_eq!(view.calls(), 0, "the daemon was asked something");
    // The scheme is case-insensitive (RFC 7235), the token is not.
    let reply = request(
        server.addr(),
        "GET",
        "/api/v1/tenants",
        Some(&format!("bearer {TOKEN}")),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let upper = bearer(&TOKEN.to_uppercase());
    let reply = request(server.addr(), "GET", "/api/v1/tenants", Some(&upper));
    assert_eq!(reply.status, 401, "{reply:?}");
}

#[test]
fn trigger_queues_a_backup_or_verify_of_that_tenant() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let reply = post(server.addr(), "/api/v1/tenants/shop-eu/backup");
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json(), serde_json::json!({ "job": 101 }));
    assert_eq!(reply.header("location"), Some("/api/v1/jobs/101"));
    let reply = post(server.addr(), "/api/v1/tenants/blog-us/verify");
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json()["job"], 102);
    assert_eq!(
        view.triggered(),
        vec![
            (BREACHED.to_string(), JobKind::Backup),
            (HEALTHY.to_string(), JobKind::Verify)
        ]
    );
    // A GET does not trigger.
    let reply = get(server.addr(), "/api/v1/tenants/shop-eu/backup");
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_eq!(view.triggered().len(), 2);
}

#[test]
fn unknown_tenant_or_job_is_404_conflict_409_unavailable_503() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    for (method, path) in [
        ("GET", "/api/v1/tenants/nope"),
        ("GET", "/api/v1/tenants/nope/points"),
        ("POST", "/api/v1/tenants/nope/backup"),
        ("POST", "/api/v1/tenants/nope/verify"),
    ] {
        let reply = request(server.addr(), method, path, Some(&bearer(TOKEN)));
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        assert_eq!(reply.json()["error"], "no tenant \"nope\" in the config");
    }
    let reply = get(server.addr(), "/api/v1/jobs/999");
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.json()["error"], "no job 999");
    let reply = get(server.addr(), "/api/v1/jobs/abc");
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.json()["error"].as_str().unwrap().contains("integer"));
    let reply = get(server.addr(), "/api/v1/nothing-here");
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("openapi.json"));

    // blog-us has a backup running: another one conflicts.
    let reply = post(server.addr(), "/api/v1/tenants/blog-us/backup");
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("already running"));

    view.catalog_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reply = get(server.addr(), "/api/v1/tenants/shop-eu/points");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("catalog is locked"));
    assert!(view.triggered().is_empty());
}

#[test]
fn tenants_points_jobs_and_a_jobs_progress_and_log_are_served() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let tenants = get(server.addr(), "/api/v1/tenants").json();
    let names: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [BREACHED, HEALTHY]);

    let reply = get(server.addr(), "/api/v1/tenants/shop-eu");
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let shop = reply.json();
    assert_eq!(shop["rpo_breached"], true);
    assert_eq!(shop["rpo_target_seconds"], 3600);
    assert!(shop["effective_rpo_seconds"].as_f64().unwrap() > 5.0 * 3600.0 - 60.0);
    assert_eq!(shop["last_verify"]["restore_seconds"], 83.0);
    assert_eq!(shop["components"].as_array().unwrap().len(), 2);

    let points = get(server.addr(), "/api/v1/tenants/shop-eu/points").json();
    assert_eq!(points[0]["id"], "rp-0003");
    assert_eq!(points[0]["components"], serde_json::json!(["db", "cache"]));

    let jobs = get(server.addr(), "/api/v1/jobs?tenant=blog-us&limit=1").json();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], RUNNING_JOB);
    let all = get(server.addr(), "/api/v1/jobs").json();
    assert_eq!(all.as_array().unwrap().len(), 4);
    // Above the document's maximum: refused, not clamped (regression_api.rs).
    let huge = get(server.addr(), "/api/v1/jobs?limit=99999999");
    assert_eq!(huge.status, 400);
    assert_eq!(
        *view.job_queries.lock().unwrap(),
        vec![(Some(HEALTHY.to_string()), 1), (None, 50)]
    );
    let reply = get(server.addr(), "/api/v1/jobs?limit=many");
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("`limit` must be an integer from 0 to 1000"));

    let job = get(server.addr(), &format!("/api/v1/jobs/{RUNNING_JOB}")).json();
    assert_eq!(job["status"], "running");
    assert_eq!(job["kind"], "backup");
    assert_eq!(job["progress"]["bytes_done"], 400 * 1024 * 1024);
    assert_eq!(job["progress"]["bytes_total"], 1000 * 1024 * 1024);
    assert_eq!(job["progress"]["component"], "uploads");
    assert_eq!(job["log"][1]["line"], "uploads: 400 MiB of 1000 MiB");
}

/// `/api/v1/jobs/{id}` with the fake's real values, so every documented route is asked for.
fn concrete(path: &str) -> String {
    if path.starts_with("/api/v1/runbooks/") {
        return path.replace("{name}", RUNBOOK);
    }
    if path.starts_with("/api/v1/dr/runs/") {
        return path.replace("{id}", FAILED_DRILL);
    }
    path.replace("{name}", BREACHED)
        .replace("{id}", &RUNNING_JOB.to_string())
}

#[test]
fn openapi_document_and_router_list_the_same_routes() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    // Served without a token.
    let reply = request(server.addr(), "GET", "/api/v1/openapi.json", None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/tenants"),
        ("GET", "/api/v1/tenants/{name}"),
        ("GET", "/api/v1/tenants/{name}/points"),
        ("POST", "/api/v1/tenants/{name}/backup"),
        ("POST", "/api/v1/tenants/{name}/verify"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{id}"),
        ("POST", "/api/v1/reload"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/readiness"),
        ("GET", "/api/v1/dr/runs"),
        ("GET", "/api/v1/dr/runs/{id}"),
        ("POST", "/api/v1/runbooks/{name}/run"),
        ("POST", "/api/v1/runbooks/{name}/dry-run"),
        ("POST", "/api/v1/runbooks/{name}/drill"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);
    // Every protected route the tests know is documented...
    for (method, path) in PROTECTED {
        assert!(
            documented
                .iter()
                .any(|(m, p)| m == method && concrete(p) == *path),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    // ...and every documented route is served, and refused without a token unless the
    // document says it needs none.
    for (method, path) in &documented {
        let url = concrete(path);
        let reply = request(server.addr(), method, &url, Some(&bearer(TOKEN)));
        assert!(
            (200..300).contains(&reply.status),
            "{method} {url} is documented but answers {reply:?}"
        );
        let open = doc["paths"][path][method.to_lowercase()]["security"] == serde_json::json!([]);
        let anonymous = request(server.addr(), method, &url, None);
        assert_eq!(
            anonymous.status == 401,
            !open,
            "{method} {url}: {anonymous:?}"
        );
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.get(reply.status.to_string()).is_some(),
            "{method} {path}: status {} not documented",
            reply.status
        );
        if !open {
            assert!(responses.get("401").is_some(), "{method} {path}: no 401");
        }
    }
    // Every schema reference resolves.
    let text = serde_json::to_string(&doc).unwrap();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let pointer = target.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
}

#[test]
fn metrics_have_every_series_with_labels() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let reply = get(server.addr(), "/metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = &reply.body;
    let families = [
        ("haven_last_success_timestamp_seconds", "gauge"),
        ("haven_last_backup_duration_seconds", "gauge"),
        ("haven_last_backup_bytes_added", "gauge"),
        ("haven_effective_rpo_seconds", "gauge"),
        ("haven_rpo_breached", "gauge"),
        ("haven_rpo_target_seconds", "gauge"),
        ("haven_backup_failures_total", "counter"),
        ("haven_backup_retries_total", "counter"),
        ("haven_verify_failures_total", "counter"),
        ("haven_queue_depth", "gauge"),
        ("haven_running_jobs", "gauge"),
    ];
    for (name, kind) in families {
        assert_eq!(
            text.matches(&format!("# TYPE {name} {kind}\n")).count(),
            1,
            "{name}:\n{text}"
        );
        assert_eq!(text.matches(&format!("# HELP {name} ")).count(), 1);
    }
    // Samples follow their own family's TYPE line (the format wants families contiguous).
    let mut family = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, family, "sample outside its family: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "bad value: {line}"
            );
        }
    }

    let sample = |series: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no sample {series}:\n{text}"));
        let value = line.rsplit(' ').next().unwrap();
        if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap()
        }
    };
    let rpo = sample(r#"haven_effective_rpo_seconds{tenant="shop-eu",component="db"}"#);
    assert!(
        (5.0 * 3600.0 - 60.0..5.0 * 3600.0 + 60.0).contains(&rpo),
        "{rpo}"
    );
    let success =
        sample(r#"haven_last_success_timestamp_seconds{tenant="blog-us",component="uploads"}"#);
    let ten_minutes_ago = (chrono::Utc::now() - chrono::Duration::minutes(10)).timestamp() as f64;
    assert!((success - ten_minutes_ago).abs() < 60.0, "{success}");
    assert_eq!(
        sample(r#"haven_last_backup_duration_seconds{tenant="shop-eu",component="cache"}"#),
        12.5
    );
    assert_eq!(
        sample(r#"haven_last_backup_bytes_added{tenant="shop-eu",component="db"}"#),
        1_048_576.0
    );
    assert_eq!(
        sample(r#"haven_rpo_breached{tenant="shop-eu",component="db"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"haven_rpo_breached{tenant="blog-us",component="uploads"}"#),
        0.0
    );
    assert_eq!(
        sample(r#"haven_rpo_target_seconds{tenant="shop-eu"}"#),
        3600.0
    );
    assert_eq!(
        sample(r#"haven_backup_failures_total{tenant="shop-eu"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"haven_backup_retries_total{tenant="blog-us"}"#),
        2.0
    );
    assert_eq!(
        sample(r#"haven_verify_failures_total{tenant="blog-us"}"#),
        1.0
    );
    assert_eq!(sample("haven_queue_depth"), 3.0);
    assert_eq!(sample("haven_running_jobs"), 1.0);
    // Never backed up: RPO +Inf, no last-success sample; the name's quote and backslash
    // are escaped.
    let odd = r#"{tenant="blog-us",component="odd \"name\"\\"}"#;
    assert_eq!(
        sample(&format!("haven_effective_rpo_seconds{odd}")),
        f64::INFINITY
    );
    assert!(!text.contains(&format!("haven_last_success_timestamp_seconds{odd}")));
}

#[test]
fn dashboard_shell_carries_no_data_and_a_strict_policy() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let reply = request(server.addr(), "GET", "/", None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(!reply.body.contains(BREACHED) && !reply.body.contains(HEALTHY));
    assert_eq!(view.calls(), 0);
    let csp = reply.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(!reply.body.contains("src=\"http"), "external assets");
}

#[test]
fn bind_errors_and_an_empty_token_are_refused_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = haven_api::start(
        FakeView::new(false),
        ApiConfig {
            listen: addr,
            token: TOKEN.into(),
        },
    )
    .unwrap_err();
    assert!(matches!(err, ApiError::Listen { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {addr}: address in use")),
        "{err}"
    );
    let err = haven_api::start(
        FakeView::new(false),
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: "  ".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(err, ApiError::EmptyToken), "{err:?}");
    let cfg = ApiConfig {
        listen: addr,
        token: TOKEN.into(),
    };
    assert!(!format!("{cfg:?}").contains(TOKEN), "the token is logged");
}

#[test]
fn shutdown_stops_serving_and_frees_the_port() {
    let server = serve(FakeView::new(false));
    let addr = server.addr();
    assert_eq!(get(addr, "/api/v1/tenants").status, 200);
    // A client idling on a keep-alive connection does not hold the shutdown up.
    let _idle = std::net::TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    server.shutdown().expect("clean shutdown");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
    // The port can be taken again at once.
    let again = haven_api::start(
        FakeView::new(false),
        ApiConfig {
            listen: addr,
            token: TOKEN.into(),
        },
    )
    .expect("rebind the same port");
    assert_eq!(get(again.addr(), "/api/v1/tenants").status, 200);
}

#[test]
fn readiness_and_dr_runs_are_served_and_runbooks_start_with_202_and_the_run_id() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let reply = get(server.addr(), "/api/v1/readiness");
    assert_eq!(reply.status, 200, "{reply:?}");
    let r = reply.json();
    assert_eq!(r[0]["tenant"], BREACHED);
    assert_eq!(r[0]["ready"], false);
    assert_eq!(r[0]["newest_verified"]["kind"], "drill");
    assert_eq!(r[0]["predicted_rto"]["basis"], "drill");
    assert_eq!(r[0]["predicted_rto"]["seconds"], 1874.0);
    assert_eq!(r[0]["runbooks"][0]["rto_exceeded"], true);
    assert_eq!(r[0]["last_drill"]["state"], "failed");
    assert_eq!(r[1]["predicted_rto"]["basis"], "restore-speed");
    assert_eq!(r[1]["predicted_rto"]["samples"], 3);

    let runs = get(server.addr(), "/api/v1/dr/runs?limit=1").json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], FAILED_DRILL);
    let detail = get(server.addr(), &format!("/api/v1/dr/runs/{GOOD_DRILL}"));
    assert_eq!(detail.status, 200, "{detail:?}");
    let d = detail.json();
    assert_eq!(
        (d["mode"].as_str(), d["state"].as_str()),
        (Some("drill"), Some("succeeded"))
    );
    assert_eq!(d["steps"][1]["name"], "dns");
    assert_eq!(d["steps"][0]["outputs"]["lb_ip"], "10.0.2.9");
    assert_eq!(d["audit"][0]["event"], "run-started");
    let missing = get(server.addr(), "/api/v1/dr/runs/dr-nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("dr-nope"));
    assert_eq!(get(server.addr(), "/api/v1/dr/runs?limit=1001").status, 400);

    for (path, mode) in [
        ("run?point=rp-0002", RunbookMode::Run),
        ("dry-run", RunbookMode::DryRun),
        ("drill", RunbookMode::Drill),
    ] {
        let reply = post(server.addr(), &format!("/api/v1/runbooks/{RUNBOOK}/{path}"));
        assert_eq!(reply.status, 202, "{path}: {reply:?}");
        let id = reply.json()["run"].as_str().unwrap().to_string();
        assert_eq!(
            reply.header("location"),
            Some(format!("/api/v1/dr/runs/{id}").as_str())
        );
        assert_eq!(view.runbook_starts.lock().unwrap().last().unwrap().1, mode);
    }
    assert_eq!(
        view.runbook_starts.lock().unwrap()[0].2.as_deref(),
        Some("rp-0002"),
        "the point reaches the runner"
    );
    let unknown = post(server.addr(), "/api/v1/runbooks/nope/drill");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let refused = post(
        server.addr(),
        &format!("/api/v1/runbooks/{RUNBOOK}/run?point=gone"),
    );
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("no recovery point gone"));
    assert_eq!(view.runbook_starts.lock().unwrap().len(), 3);
}
