//! `haven serve` as a process: it refuses a malformed config or a missing token; its API
//! refuses a wrong token and does nothing; SIGTERM during a backup stops it with the
//! repository consistent and the job marked interrupted; the next start retries the job.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;

const TOKEN: &str = "test-token-0123456789";

fn sigterm(child: &mut Child) -> Out {
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    collect_within(
        std::mem::replace(child, std::process::Command::new("true").spawn().unwrap()),
        Duration::from_secs(60),
        "haven serve after SIGTERM",
    )
}

fn setup(root: &Path, gate: &Path) -> PathBuf {
    std::fs::write(root.join("password"), PASSWORD).unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let config = root.join("haven.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state-dir = "state"
api-token-file = "token"
shutdown-grace = "1s"

[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
schedule = "0 3 * * *"
[tenants.acme.components.slow]
kind = "command"
backup = "head -c 9000000 /dev/urandom; while [ ! -e {gate} ]; do sleep 0.05; done; head -c 1000000 /dev/urandom"
"#,
            repo = root.join("repo").display(),
            gate = gate.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn sigterm_during_a_backup_leaves_the_repository_consistent_and_the_job_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let config = setup(tmp.path(), &gate);
    let addr = free_addr();
    let mut served = serve(&config, &addr);

    // Without the token, or with a wrong one: 401 and nothing queued.
    for token in [None, Some("wrong-token")] {
        let (status, _) = http(&addr, "POST", "/api/v1/tenants/acme/backup", token).unwrap();
        assert_eq!(status, 401, "token {token:?}");
        let (status, _) = http(&addr, "GET", "/api/v1/jobs", token).unwrap();
        assert_eq!(status, 401);
    }
    let (_, body) = http(&addr, "GET", "/api/v1/jobs", Some(TOKEN)).unwrap();
    assert_eq!(
        json(&body).as_array().map(Vec::len),
        Some(0),
        "a refused request did nothing: {body}"
    );

    let (status, body) = http(&addr, "POST", "/api/v1/tenants/acme/backup", Some(TOKEN)).unwrap();
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["job"].as_i64().unwrap();
    wait_for("the backup to run", Duration::from_secs(60), || {
        let (_, b) = http(&addr, "GET", &format!("/api/v1/jobs/{id}"), Some(TOKEN)).unwrap();
        let j = json(&b);
        j["status"] == "running" && j["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0
    });
    let out = sigterm(served.child.child());
    assert_eq!(
        out.code, 0,
        "haven serve exits cleanly on SIGTERM: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SIGTERM") && out.stderr.contains("interrupted"),
        "{}",
        out.stderr
    );
    // The start names the state directory (several configs may share one).
    let state = format!("state directory {}", tmp.path().join("state").display());
    assert!(out.stderr.contains(&state), "{}", out.stderr);

    // The repository is consistent after the abandoned backup.
    let repo = Repo::at(&tmp.path().join("repo"));
    repo.check_ok(true);

    // Restarted: the interrupted job is retried and completes.
    std::fs::write(&gate, "").unwrap();
    let addr = free_addr();
    let mut served = serve(&config, &addr);
    wait_for("the retried backup", Duration::from_secs(60), || {
        let (_, b) = http(&addr, "GET", "/api/v1/jobs?tenant=acme", Some(TOKEN)).unwrap();
        json(&b)
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["trigger"] == "retry" && j["status"] == "succeeded")
    });
    let (_, b) = http(&addr, "GET", &format!("/api/v1/jobs/{id}"), Some(TOKEN)).unwrap();
    assert_eq!(json(&b)["status"], "interrupted", "{b}");
    let (_, b) = http(&addr, "GET", "/api/v1/tenants/acme/points", Some(TOKEN)).unwrap();
    assert_eq!(json(&b)[0]["status"], "complete", "{b}");
    let (status, metrics) = http(&addr, "GET", "/metrics", Some(TOKEN)).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("haven_effective_rpo_seconds{tenant=\"acme\",component=\"slow\"}"),
        "{metrics}"
    );
    let out = sigterm(served.child.child());
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_malformed_config_or_a_missing_token_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("haven.toml");
    std::fs::write(&config, "[daemon]\nconcurrency = 0\n").unwrap();
    let out = haven(&["serve", "--config", &config.display().to_string()], &[]);
    out.assert_one_line_error(
        1,
        &["haven.toml", "line 1", "daemon.concurrency", "at least 1"],
    );

    std::fs::write(&config, "[tenants.a]\nrepository = \"main\"\nschedule = \"0 25 * * *\"\n[tenants.a.components.f]\nkind = \"files\"\npaths = [\"/tmp\"]\n[repositories.main]\nurl = \"/tmp/x\"\n").unwrap();
    let out = haven(&["serve", "--config", &config.display().to_string()], &[]);
    out.assert_one_line_error(1, &["haven.toml", "line 3", "tenants.a.schedule"]);

    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate-dir = \"{}\"\n",
            tmp.path().join("state").display()
        ),
    )
    .unwrap();
    let out = haven(&["serve", "--config", &config.display().to_string()], &[]);
    out.assert_one_line_error(1, &["no API token", "HAVEN_API_TOKEN"]);
}

/// The config of [`reload_via_sighup_and_the_api_without_a_restart`]: tenant `acme`,
/// plus `more`.
fn reload_config(root: &Path, more: &str) {
    std::fs::write(
        root.join("haven.toml"),
        format!(
            r#"
[daemon]
state-dir = "state"
api-token-file = "token"

[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
schedule = "0 3 * * *"
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
{more}"#,
            repo = root.join("repo").display(),
            data = root.join("data").display(),
        ),
    )
    .unwrap();
}

fn tenant_names(addr: &str) -> Vec<String> {
    let (status, b) = http(addr, "GET", "/api/v1/tenants", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{b}");
    json(&b)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn sighup(child: &Child) {
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn reload_via_sighup_and_the_api_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("password"), PASSWORD).unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/a.txt"), "hello").unwrap();
    reload_config(root, "");
    let config = root.join("haven.toml");
    let addr = free_addr();
    let mut served = serve(&config, &addr);
    assert_eq!(tenant_names(&addr), ["acme"]);

    // SIGHUP: a new tenant, backed up every second from now on.
    let beta = format!(
        "[tenants.beta]\nrepository = \"main\"\nschedule = \"* * * * * *\"\n[tenants.beta.components.files]\nkind = \"files\"\npaths = [\"{}\"]\n",
        root.join("data").display()
    );
    reload_config(root, &beta);
    sighup(served.child.child());
    wait_for("the reloaded tenant", Duration::from_secs(30), || {
        tenant_names(&addr) == ["acme", "beta"]
    });
    let beta_backed_up = |addr: &str| {
        let (_, b) = http(addr, "GET", "/api/v1/jobs?tenant=beta", Some(TOKEN)).unwrap();
        json(&b)
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["trigger"] == "schedule" && j["status"] == "succeeded")
            .count()
    };
    wait_for(
        "a scheduled backup of beta",
        Duration::from_secs(60),
        || beta_backed_up(&addr) > 0,
    );

    // A malformed config is refused, by the API (422 with file, line and key) and by
    // SIGHUP; the running config keeps working.
    std::fs::write(&config, "[daemon]\nconcurrency = 0\n").unwrap();
    let (status, body) = http(&addr, "POST", "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(status, 422, "{body}");
    let error = json(&body)["error"].as_str().unwrap().to_string();
    for part in [
        "haven.toml",
        "line 1",
        "daemon.concurrency",
        "running config stays",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    sighup(served.child.child());
    let (status, _) = http(&addr, "POST", "/api/v1/reload", None).unwrap();
    assert_eq!(status, 401, "reload needs the token");
    let before = beta_backed_up(&addr);
    wait_for("beta's schedule to go on", Duration::from_secs(60), || {
        beta_backed_up(&addr) > before
    });
    assert_eq!(tenant_names(&addr), ["acme", "beta"]);

    // The API: beta removed again.
    reload_config(root, "");
    let (status, body) = http(&addr, "POST", "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["removed"], serde_json::json!(["beta"]), "{body}");
    assert_eq!(tenant_names(&addr), ["acme"]);

    let out = sigterm(served.child.child());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("SIGHUP: reloaded") && out.stderr.contains("added beta"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SIGHUP: the config was not reloaded")
            && out.stderr.contains("daemon.concurrency"),
        "{}",
        out.stderr
    );
}
