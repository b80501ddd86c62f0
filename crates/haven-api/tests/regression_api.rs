//! Regression tests for the HTTP API (issue 10): parameters are held to the OpenAPI
//! document, and the whole API is checked against that document by schemathesis.

mod common;

use common::*;

/// `limit` above the documented maximum (and any other value the schema does not
/// allow) is refused with 400 and a JSON error naming the parameter; the daemon is not
/// asked. The documented bounds themselves are accepted.
#[test]
fn jobs_limit_outside_the_schema_is_refused_with_400() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    for query in [
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999",
    ] {
        let reply = get(server.addr(), &format!("/api/v1/jobs?{query}"));
        assert_eq!(reply.status, 400, "?{query}: {reply:?}");
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("limit"), "?{query}: {error}");
    }
    assert!(
        view.job_queries.lock().unwrap().is_empty(),
        "the daemon was asked with a limit outside the schema"
    );
    for (query, asked) in [("limit=1000", 1000), ("limit=0", 0), ("tenant=x", 50)] {
        let reply = get(server.addr(), &format!("/api/v1/jobs?{query}"));
        assert_eq!(reply.status, 200, "?{query}: {reply:?}");
        assert_eq!(view.job_queries.lock().unwrap().pop().unwrap().1, asked);
    }
}

/// Schemathesis (`st`, from PyPI; `scripts/test.sh` installs it) run against the API over
/// the fake daemon with its token: every check, positive and negative data, bounded in
/// examples and time. Any schema violation or 5xx fails the test. The seed is fixed for a
/// reproducible run; set HAVEN_SCHEMATHESIS_SEED to explore others.
#[test]
fn the_whole_api_conforms_to_its_openapi_document() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let found = Command::new("st")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "schemathesis (`st`) is not installed: `pip install schemathesis` \
         (scripts/test.sh installs it)"
    );
    let server = serve(FakeView::new(true));
    let work = tempfile::tempdir().unwrap();
    let seed = std::env::var("HAVEN_SCHEMATHESIS_SEED").unwrap_or_else(|_| "10".into());
    let mut child = Command::new("st")
        .current_dir(work.path())
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", server.addr()),
        ])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all", "--mode", "all"])
        .args(["--max-examples", "40", "--seed", &seed])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .args(["--workers", "2", "--no-color"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    let deadline = Instant::now() + Duration::from_secs(150);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (or ran out of time):\n{text}"
    );
}
