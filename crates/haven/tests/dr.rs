//! `haven dr` from the command line: run prints the run id first and exits 0 when the
//! run succeeded, 3 when it failed; status shows the steps (also as JSON); resume after
//! the cause is fixed finishes without redoing finished steps; plan exits 3 when a
//! check fails; release fails back.

use std::path::Path;
use std::process::{Command, Output};

fn haven(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haven"))
        .args(args)
        .env("HAVEN_CONFIG", dir.join("haven.toml"))
        .env_remove("HAVEN_PASSWORD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dr_run_status_resume_plan_and_release_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = format!(
        r#"[repositories.main]
url = "{d}/repo"
password-file = "password"
[daemon]
state-dir = "{d}/state"
[tenants.acme]
repository = "main"
[tenants.acme.components.f]
kind = "files"
paths = ["{d}/a"]
[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.f]
kind = "files"
paths = ["{d}/b"]
[runbooks.fo]
tenant = "acme"
into = "acme-dr"
[[runbooks.fo.steps]]
name = "provision"
kind = "command"
run = ["sh", "-c", "echo x >> {d}/provisioned; echo lb_ip=10.1.2.3"]
[[runbooks.fo.steps]]
name = "gate"
kind = "command"
needs = ["provision"]
run = ["test", "-e", "{d}/fixed"]
"#,
        d = d.display()
    );
    std::fs::write(d.join("haven.toml"), config).unwrap();
    std::fs::write(d.join("password"), "dr-cli-test").unwrap();

    let out = haven(d, &["dr", "run", "fo"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("run dr-"),
        "the run id comes first: {stdout}"
    );
    let id = first.trim_start_matches("run ").trim().to_string();
    assert!(stdout.contains(&format!("run {id} failed")), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gate: FAILED"),
        "live progress: {}",
        text(&out)
    );

    let out = haven(d, &["dr", "status", &id]);
    assert!(
        text(&out).contains("gate") && text(&out).contains("failed"),
        "{}",
        text(&out)
    );
    let out = haven(d, &["--json", "dr", "status", &id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["state"], "failed");
    assert_eq!(v["steps"][0]["outputs"]["lb_ip"], "10.1.2.3");
    assert!(v["audit"].as_array().unwrap().len() >= 4);

    std::fs::write(d.join("fixed"), "").unwrap();
    let out = haven(d, &["dr", "resume", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(d.join("provisioned"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    // The run succeeded: acme is now served by acme-dr's servers, and `tenant backup acme`
    // backs those up (acme's own folder, {d}/a, does not even exist: site A is gone).
    std::fs::create_dir_all(d.join("b")).unwrap();
    std::fs::write(d.join("b/only-on-site-b"), "b").unwrap();
    let out = haven(d, &["tenant", "backup", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("served by acme-dr's servers"),
        "{}",
        text(&out)
    );

    let out = haven(d, &["dr", "release", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("was served by acme-dr"),
        "{}",
        text(&out)
    );
    let out = haven(d, &["tenant", "backup", "acme"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "after the fail back acme's own (missing) folder is backed up: {}",
        text(&out)
    );

    std::fs::write(
        d.join("haven.toml"),
        std::fs::read_to_string(d.join("haven.toml"))
            .unwrap()
            .replace("\"test\"", "\"no-such-tool-haven\""),
    )
    .unwrap();
    let out = haven(d, &["dr", "plan", "fo"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("no-such-tool-haven is not on PATH"),
        "{}",
        text(&out)
    );
}
