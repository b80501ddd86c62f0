//! The readiness report against a real catalog file: points, verifies and drills (rows of
//! `dr_runs` as the runbook engine writes them) inserted, then newest and proven points,
//! verified RPO, predicted RTO (by drill, by restore speed), last drill, drift and the
//! problems list checked; rows of another repository are never counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use haven_ops::catalog::{Catalog, DrRunFilter, PointSource, VerifyRecord};
use haven_ops::location::canonical_location;
use haven_ops::point::{ComponentRecord, PointStatus, RecoveryPoint};
use haven_ops::readiness::{self, PredictedRto, ProofKind, RunbookFacts};
use haven_ops::Config;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config(root: &Path) -> Config {
    let text = format!(
        r#"
[daemon]
state-dir = "{root}/state"
[repositories.main]
url = "{root}/repo"
[repositories.other]
url = "{root}/repo2"
[tenants.acme]
repository = "main"
rpo = "1h"
[tenants.acme.components.uploads]
kind = "files"
paths = ["{root}/data"]
[tenants.acme.components.logs]
kind = "files"
paths = ["{root}/logs"]
[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{root}/dr-data"]
[tenants.blog]
repository = "other"
[tenants.blog.components.uploads]
kind = "files"
paths = ["{root}/blog"]
"#,
        root = root.display()
    );
    Config::parse(&root.join("haven.toml"), &text).unwrap()
}

fn component(bytes: u64) -> ComponentRecord {
    serde_json::from_value(serde_json::json!({
        "kind": "files", "source": "/srv", "status": "ok", "error": null, "snapshot": null,
        "bytes": bytes, "bytes_added": 10, "seconds": 1.0, "fingerprint": null,
    }))
    .unwrap()
}

fn point(tenant: &str, id: &str, started: &str, components: &[&str]) -> RecoveryPoint {
    RecoveryPoint {
        format: 1,
        id: id.into(),
        tenant: tenant.into(),
        started: at(started),
        finished: at(started) + chrono::Duration::seconds(30),
        status: PointStatus::Complete,
        components: components
            .iter()
            .map(|c| (c.to_string(), component(500_000_000)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn verify(tenant: &str, point: &str, time: &str, passed: bool, seconds: f64) -> VerifyRecord {
    VerifyRecord {
        job: None,
        tenant: tenant.into(),
        point: point.into(),
        time: at(time),
        passed,
        restore_seconds: seconds,
        report: serde_json::json!({"components": [{"name": "uploads", "bytes": 400_000_000u64}]}),
    }
}

/// A `dr_runs` row as the engine (haven-dr) writes it.
#[allow(clippy::too_many_arguments)]
fn drill_row(
    state_dir: &Path,
    repo: &str,
    id: &str,
    runbook: &str,
    tenant: &str,
    point: &str,
    state: &str,
    started: &str,
    seconds: f64,
) {
    let conn = rusqlite::Connection::open(state_dir.join("catalog.sqlite")).unwrap();
    let finished = at(started) + chrono::Duration::milliseconds((seconds * 1000.0) as i64);
    conn.execute(
        "INSERT INTO dr_runs (id, runbook, tenant, repo, into_tenant, mode, point, state, \
         started, finished, seconds, actor, owner_pid, error, plan) \
         VALUES (?1, ?2, ?3, ?4, '', 'drill', ?5, ?6, ?7, ?8, ?9, 'ops@host', NULL, ?10, '{}')",
        rusqlite::params![
            id,
            runbook,
            tenant,
            repo,
            point,
            state,
            started,
            finished.to_rfc3339(),
            seconds,
            (state == "failed").then_some("step smoke: HTTP 503")
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO dr_steps (run_id, step, state, attempts, started, finished, seconds, outputs) \
         VALUES (?1, 'restore', ?2, 1, ?3, ?4, ?5, '{\"bytes\":\"1\"}')",
        rusqlite::params![id, state, started, finished.to_rfc3339(), seconds],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO dr_audit (run_id, time, step, event, detail) VALUES (?1, ?2, NULL, 'run-started', 'by ops@host')",
        rusqlite::params![id, started],
    )
    .unwrap();
}

fn setup() -> (tempfile::TempDir, Config, Catalog, String) {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let catalog = readiness::open_catalog(&config).unwrap();
    let repo = canonical_location(&config.repositories["main"].url);
    (tmp, config, catalog, repo)
}

#[test]
fn a_tenant_without_points_is_not_ready_and_predicts_nothing() {
    let (_tmp, config, catalog, _) = setup();
    let now = at("2026-12-05T08:00:00Z");
    let r = readiness::report(&config, &catalog, now, Some("acme")).unwrap();
    assert_eq!(r.len(), 1);
    let acme = &r[0];
    assert!(acme.newest_point.is_none() && acme.newest_verified.is_none());
    assert!(acme.predicted_rto.is_none());
    assert!(!acme.ready);
    assert_eq!(acme.problems, ["no complete recovery point"]);
    assert!(readiness::report(&config, &catalog, now, Some("nope")).is_err());
    assert_eq!(
        readiness::report(&config, &catalog, now, None)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn verified_rpo_counts_from_the_newest_proven_point_and_rto_from_restore_speed() {
    let (_tmp, config, catalog, _) = setup();
    let both = ["uploads", "logs"];
    catalog
        .record_point(
            &point("acme", "p1", "2026-12-01T03:00:00Z", &both),
            PointSource::Recorded,
        )
        .unwrap();
    catalog
        .record_point(
            &point("acme", "p2", "2026-12-02T03:00:00Z", &both),
            PointSource::Recorded,
        )
        .unwrap();
    catalog
        .record_point(
            &point("acme", "p3", "2026-12-03T03:00:00Z", &both),
            PointSource::Recorded,
        )
        .unwrap();
    // p1 passed (400 MB in 10 s), p2 passed (400 MB in 30 s), p3 failed validation.
    for v in [
        verify("acme", "p1", "2026-12-01T04:00:00Z", true, 10.0),
        verify("acme", "p2", "2026-12-02T04:00:00Z", true, 30.0),
        verify("acme", "p3", "2026-12-03T04:00:00Z", false, 5.0),
    ] {
        catalog.record_verify(&v).unwrap();
    }
    let now = at("2026-12-03T05:00:00Z");
    let acme = &readiness::report(&config, &catalog, now, Some("acme")).unwrap()[0];
    assert_eq!(acme.newest_point.as_ref().unwrap().id, "p3");
    let proof = acme.newest_verified.as_ref().unwrap();
    assert_eq!(
        (proof.point.as_str(), proof.kind),
        ("p2", ProofKind::Verify),
        "the failed verify of p3 proves nothing"
    );
    assert_eq!(acme.verified_rpo_seconds, Some(26.0 * 3600.0));
    assert_eq!(acme.rpo_target_seconds, 3600);
    // 800 MB restored in 40 s = 20 MB/s; the newest point holds 1 GB: 50 s.
    match acme.predicted_rto.as_ref().unwrap() {
        PredictedRto::RestoreSpeed {
            seconds,
            bytes,
            bytes_per_second,
            samples,
        } => {
            assert_eq!((*bytes, *samples), (1_000_000_000, 2));
            assert!((bytes_per_second - 20_000_000.0).abs() < 1e-6);
            assert!((seconds - 50.0).abs() < 1e-9);
        }
        other => panic!("expected an estimate from the restore speed, got {other:?}"),
    }
    assert!(acme
        .predicted_rto
        .as_ref()
        .unwrap()
        .describe()
        .contains("no drill yet"));
    assert!(acme.ready, "problems: {:?}", acme.problems);
}

#[test]
fn a_drill_proves_its_point_and_its_time_is_the_prediction_and_a_failed_one_is_a_problem() {
    let (tmp, config, catalog, repo) = setup();
    let state = tmp.path().join("state");
    let both = ["uploads", "logs"];
    for (id, t) in [
        ("p1", "2026-12-01T03:00:00Z"),
        ("p2", "2026-12-02T03:00:00Z"),
    ] {
        catalog
            .record_point(&point("acme", id, t, &both), PointSource::Recorded)
            .unwrap();
    }
    catalog
        .record_verify(&verify("acme", "p1", "2026-12-01T04:00:00Z", true, 10.0))
        .unwrap();
    drill_row(
        &state,
        &repo,
        "dr-1",
        "acme-failover",
        "acme",
        "p2",
        "succeeded",
        "2026-12-02T05:00:00Z",
        42.5,
    );
    // Another repository's tenant of the same name: never counted.
    drill_row(
        &state,
        "/elsewhere",
        "dr-x",
        "acme-failover",
        "acme",
        "p2",
        "failed",
        "2026-12-02T07:00:00Z",
        1.0,
    );
    let now = at("2026-12-02T06:00:00Z");
    let acme = &readiness::report(&config, &catalog, now, Some("acme")).unwrap()[0];
    let proof = acme.newest_verified.as_ref().unwrap();
    assert_eq!(
        (proof.point.as_str(), proof.kind, proof.by.as_str()),
        ("p2", ProofKind::Drill, "dr-1")
    );
    assert_eq!(acme.verified_rpo_seconds, Some(3.0 * 3600.0));
    assert_eq!(
        acme.predicted_rto,
        Some(PredictedRto::Drill {
            seconds: 42.5,
            run: "dr-1".into(),
            runbook: "acme-failover".into()
        })
    );
    assert_eq!(acme.last_drill.as_ref().unwrap().run, "dr-1");
    assert!(acme.ready, "problems: {:?}", acme.problems);

    // A later drill fails early: it is the last drill, a problem, and predicts nothing.
    drill_row(
        &state,
        &repo,
        "dr-2",
        "acme-failover",
        "acme",
        "p2",
        "failed",
        "2026-12-02T06:30:00Z",
        3.0,
    );
    let now = at("2026-12-02T07:00:00Z");
    let acme = &readiness::report(&config, &catalog, now, Some("acme")).unwrap()[0];
    let last = acme.last_drill.as_ref().unwrap();
    assert_eq!((last.run.as_str(), last.state.as_str()), ("dr-2", "failed"));
    assert_eq!(acme.predicted_rto.as_ref().unwrap().seconds(), 42.5);
    assert!(!acme.ready);
    assert_eq!(acme.problems.len(), 1, "{:?}", acme.problems);
    assert!(
        acme.problems[0].contains("dr-2") && acme.problems[0].contains("HTTP 503"),
        "{:?}",
        acme.problems
    );

    // Per runbook: its own drills, and the RTO target compared with the prediction.
    let facts = vec![RunbookFacts {
        name: "acme-failover".into(),
        tenant: "acme".into(),
        into: "acme-dr".into(),
        rto: Some(Duration::from_secs(30)),
        drill_schedule: Some("0 4 * * 0".parse().unwrap()),
        components: vec![("check-db".into(), "db".into())],
        restores_all: true,
    }];
    let acme = &readiness::report_with(&config, &catalog, &facts, now, Some("acme")).unwrap()[0];
    let rb = &acme.runbooks[0];
    assert_eq!(rb.rto_target_seconds, Some(30));
    assert!(rb.rto_exceeded, "42.5 s predicted against a 30 s target");
    assert_eq!(rb.last_drill.as_ref().unwrap().run, "dr-2");
    let kinds: Vec<&str> = acme.drift.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["runbook-component-missing", "runbook-component-missing"],
        "{:?}",
        acme.drift
    );
    assert!(acme.drift[0].detail.contains("no component logs"));
    assert!(acme.drift[1]
        .detail
        .contains("step check-db names component db"));
    assert!(acme.problems.iter().any(|p| p.contains("exceeds its rto")));

    // The run summaries the API serves: newest first, with steps and audit.
    let runs = catalog
        .dr_run_summaries(&DrRunFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["dr-2", "dr-1"]
    );
    let detail = catalog.dr_run_detail("dr-1").unwrap().unwrap();
    assert_eq!(detail.steps.len(), 1);
    assert_eq!(detail.steps[0].outputs["bytes"], "1");
    assert_eq!(detail.audit[0].event, "run-started");
    assert!(catalog.dr_run_detail("dr-x").unwrap().is_none());
}

#[test]
fn drift_names_components_missing_from_the_newest_point_and_unknown_runbook_tenants() {
    let (_tmp, config, catalog, _) = setup();
    catalog
        .record_point(
            &point("acme", "p1", "2026-12-01T03:00:00Z", &["uploads"]),
            PointSource::Recorded,
        )
        .unwrap();
    let facts = vec![RunbookFacts {
        name: "gone".into(),
        tenant: "acme".into(),
        into: "nowhere".into(),
        rto: None,
        drill_schedule: None,
        components: vec![],
        restores_all: true,
    }];
    let now = at("2026-12-01T04:00:00Z");
    let acme = &readiness::report_with(&config, &catalog, &facts, now, Some("acme")).unwrap()[0];
    let details: Vec<&str> = acme.drift.iter().map(|d| d.detail.as_str()).collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(details[0].contains("component logs is configured but not in the newest point p1"));
    assert!(details[1].contains("names into nowhere, which is not in the config"));
    assert!(!acme.ready);
}
