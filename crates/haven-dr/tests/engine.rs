//! The engine with real processes and a real HTTP server on loopback: the graph runs
//! independent steps in parallel, outputs flow into later steps, retries back off,
//! timeouts kill the process group, on-failure decides, every step is persisted and
//! audited, a notice reaches the webhook.

mod support;

use std::time::{Duration, Instant};

use haven_dr::StartOptions;
use haven_ops::catalog::{DrRunState, DrStepState};
use support::{command, dr, write_config, Http};

fn ok_server() -> Http {
    Http::start(|r, _| {
        if r.path == "/health" {
            (200, "ok: acme".into())
        } else {
            (200, String::new())
        }
    })
}

#[test]
fn independent_steps_run_in_parallel_and_outputs_flow_into_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let d = dir.path().display();
    let runbook = command("provision", &[], &format!("echo lb_ip=127.0.0.1; echo port={}; echo noise", app.addr.port()), "outputs = [\"lb_ip\", \"port\"]")
        + &command("b", &["provision"], &format!("sleep 1; echo b > {d}/b"), "")
        + &command("c", &["provision"], &format!("sleep 1; echo c > {d}/c"), "")
        + "[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nneeds = [\"b\", \"c\"]\nurl = \"http://${steps.provision.lb_ip}:${steps.provision.port}/health\"\nexpect-body = \"${tenant}\"\n"
        + &command("echo", &["smoke"], &format!("echo '${{steps.smoke.status}} ${{into}} ${{run.id}}' > {d}/echo"), "");
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let t = Instant::now();
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    let took = t.elapsed();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    // b and c each sleep 1 s: their intervals must overlap (checked below, on the
    // recorded times rather than a wall-clock bound a busy machine could break).
    eprintln!("run took {took:?}");
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    let get = |n: &str| steps.iter().find(|s| s.step == n).unwrap().clone();
    let (b, c) = (get("b"), get("c"));
    assert!(
        b.started.unwrap() < c.finished.unwrap() && c.started.unwrap() < b.finished.unwrap(),
        "{b:?} {c:?}"
    );
    assert!(
        steps
            .iter()
            .all(|s| s.state == DrStepState::Succeeded && s.attempts == 1),
        "{steps:?}"
    );
    assert_eq!(get("provision").outputs["lb_ip"], "127.0.0.1");
    assert_eq!(get("smoke").outputs["status"], "200");
    let echoed = std::fs::read_to_string(dir.path().join("echo")).unwrap();
    assert_eq!(echoed.trim(), format!("200 acme-dr {}", out.run_id));
    let run = engine.catalog.dr_run(&out.run_id).unwrap().unwrap();
    assert!(
        run.seconds.unwrap() > 0.9 && run.owner_pid.is_none(),
        "{run:?}"
    );
    // The audit log: the run, each step's start and end, who.
    let audit = engine.catalog.dr_audit(&out.run_id).unwrap();
    let events: Vec<&str> = audit.iter().map(|a| a.event.as_str()).collect();
    assert_eq!(events.first(), Some(&"run-started"));
    assert_eq!(events.last(), Some(&"run-finished"));
    assert_eq!(events.iter().filter(|e| **e == "step-succeeded").count(), 5);
    assert!(
        audit[0].detail.contains('@'),
        "who and where: {}",
        audit[0].detail
    );
    // The succeeded real run adopted the new site.
    let adoption = haven_ops::failover::served_by(&engine.catalog, "acme")
        .unwrap()
        .unwrap();
    assert_eq!(
        (adoption.served_by.as_str(), adoption.run.as_str()),
        ("acme-dr", out.run_id.as_str())
    );
}

#[test]
fn a_failing_step_is_retried_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let n = dir.path().join("n");
    // Fails twice, then succeeds.
    let script = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", n.display());
    let cfg = write_config(
        dir.path(),
        app.addr,
        &command("flaky", &[], &script, "retries = 3\nbackoff = \"1s\""),
    );
    let engine = dr(dir.path(), &cfg);
    let t = Instant::now();
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    // Backoff 1 s then 2 s.
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    let s = &engine.catalog.dr_steps(&out.run_id).unwrap()[0];
    assert_eq!(s.attempts, 3);
    let retries = engine
        .catalog
        .dr_audit(&out.run_id)
        .unwrap()
        .into_iter()
        .filter(|a| a.event == "step-retry")
        .count();
    assert_eq!(retries, 2);
}

#[test]
fn a_timeout_kills_the_step_with_its_children_and_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let marker = dir.path().join("child-alive");
    // The background child would write the marker after 3 s unless its group is killed.
    let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
    let runbook = command("hang", &[], &script, "timeout = \"1s\"")
        + &command("after", &["hang"], "true", "");
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let t = Instant::now();
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(out.state, DrRunState::Failed);
    assert!(
        out.error.as_deref().unwrap().contains("timeout of 1s"),
        "{out:?}"
    );
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert_eq!(steps[0].state, DrStepState::Failed);
    assert_eq!(
        steps[1].state,
        DrStepState::Pending,
        "a step after a stopping failure never starts"
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !marker.exists(),
        "the step's background child survived the timeout"
    );
    assert!(
        haven_ops::failover::served_by(&engine.catalog, "acme")
            .unwrap()
            .is_none(),
        "a failed run adopts nothing"
    );
}

#[test]
fn on_failure_continue_lets_the_dependent_steps_run() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let runbook = command(
        "scale-down-old",
        &[],
        "echo the old site is gone >&2; exit 3",
        "on-failure = \"continue\"",
    ) + &command(
        "next",
        &["scale-down-old"],
        &format!("touch {}/next", dir.path().display()),
        "",
    );
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert_eq!(steps[0].state, DrStepState::Failed);
    assert!(
        steps[0]
            .message
            .as_deref()
            .unwrap()
            .contains("the old site is gone"),
        "{steps:?}"
    );
    assert!(dir.path().join("next").exists());
}

#[test]
fn an_http_step_polls_until_the_service_answers() {
    let dir = tempfile::tempdir().unwrap();
    // 503 for the first three requests, then 200.
    let app = Http::start(|_, n| {
        if n <= 3 {
            (503, "starting".into())
        } else {
            (200, "ready".into())
        }
    });
    let runbook = format!("[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nurl = \"http://{}/health\"\nexpect-body = \"ready\"\ninterval = \"0s\"\ntimeout = \"20s\"\n", app.addr);
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert_eq!(app.hits(), 4);
    // And one that never answers right fails at its timeout, saying what it got.
    let dir2 = tempfile::tempdir().unwrap();
    let bad = Http::start(|_, _| (500, "boom".into()));
    let runbook = format!("[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nurl = \"http://{}/health\"\ninterval = \"0s\"\ntimeout = \"1s\"\n", bad.addr);
    let cfg = write_config(dir2.path(), bad.addr, &runbook);
    let engine = dr(dir2.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed);
    assert!(
        out.error
            .as_deref()
            .unwrap()
            .contains("answered 500 (expected 200)"),
        "{out:?}"
    );
}

#[test]
fn a_notify_step_sends_a_runbook_notice_to_the_webhook_and_secrets_stay_out_of_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Http::start(|_, _| (200, String::new()));
    std::env::set_var("HAVEN_TEST_DR_SECRET", "s3cr3t-value-42");
    let runbook = command("prov", &[], "echo lb_ip=10.9.8.7", "")
        // Shell variables are written $${...}: ${...} is Haven's.
        + &command("shell-var", &[], "echo home $${HOME:-none}", "")
        + "[[runbooks.fo.steps]]\nname = \"tell\"\nkind = \"notify\"\nneeds = [\"prov\"]\nmessage = \"acme moved to ${steps.prov.lb_ip} key ${env.HAVEN_TEST_DR_SECRET}\"\n";
    let cfg = write_config(dir.path(), hook.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    let reqs = hook.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert!(
        reqs[0].body.contains("acme moved to 10.9.8.7"),
        "{}",
        reqs[0].body
    );
    assert!(reqs[0].body.contains("runbook-notice"), "{}", reqs[0].body);
    assert!(
        !reqs[0].body.contains("s3cr3t-value-42"),
        "a secret reached the webhook: {}",
        reqs[0].body
    );
    let audit = engine.catalog.dr_audit(&out.run_id).unwrap();
    assert!(
        audit.iter().all(|a| !a.detail.contains("s3cr3t-value-42")),
        "{audit:?}"
    );
}

#[test]
fn abort_closes_a_waiting_run_and_a_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let runbook = command("a", &[], &format!("touch {}/ran", dir.path().display()), "")
        + "[[runbooks.fo.steps]]\nname = \"b\"\nkind = \"command\"\nrun = [\"no-such-program-haven\"]\n";
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let out = engine
        .start(
            "fo",
            &StartOptions {
                mode: Some(haven_ops::catalog::DrMode::DryRun),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        out.state,
        DrRunState::Failed,
        "a missing program fails the dry run"
    );
    assert!(!dir.path().join("ran").exists(), "a dry run ran a command");
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert_eq!(steps[0].state, DrStepState::Succeeded);
    assert!(
        steps[1]
            .message
            .as_deref()
            .unwrap()
            .contains("no-such-program-haven is not on PATH"),
        "{steps:?}"
    );
    // A failed real run can be aborted, and then not resumed.
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed);
    let run = engine.abort(&out.run_id).unwrap();
    assert_eq!(run.state, DrRunState::Aborted);
    let err = engine.resume(&out.run_id, &[]).unwrap_err().to_string();
    assert!(err.contains("nothing to resume"), "{err}");
}

#[test]
fn abort_of_a_live_run_starts_no_further_step() {
    let dir = tempfile::tempdir().unwrap();
    let app = ok_server();
    let runbook = command("slow", &[], "sleep 1", "")
        + &command(
            "after",
            &["slow"],
            &format!("touch {}/after", dir.path().display()),
            "",
        );
    let cfg = write_config(dir.path(), app.addr, &runbook);
    let engine = dr(dir.path(), &cfg);
    let e2 = engine.clone();
    let run = std::thread::spawn(move || {
        e2.start(
            "fo",
            &StartOptions {
                run_id: Some("live".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    // Poll until the slow step runs, then abort from "another process" (the catalog).
    let t = Instant::now();
    while !engine
        .catalog
        .dr_steps("live")
        .map(|s| s.first().is_some_and(|s| s.state == DrStepState::Running))
        .unwrap_or(false)
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The run is live in this process: resume refuses to drive it twice.
    let err = engine.resume("live", &[]).unwrap_err().to_string();
    assert!(err.contains("still running in process"), "{err}");
    let aborted = engine.abort("live").unwrap();
    assert_eq!(aborted.state, DrRunState::Aborted);
    let out = run.join().unwrap();
    assert_eq!(out.state, DrRunState::Aborted, "{out:?}");
    assert!(
        out.error.as_deref().unwrap().contains("aborted by"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("after").exists(),
        "a step started after the abort"
    );
    let events: Vec<String> = engine
        .catalog
        .dr_audit("live")
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .collect();
    assert!(events.contains(&"run-aborted".to_string()), "{events:?}");
}
