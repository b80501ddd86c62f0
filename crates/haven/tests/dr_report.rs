//! `haven dr report`: the readiness of tenants backed up for real (files into a real
//! repository), read back from the repository into the daemon's catalog: the newest
//! point, no proof yet (not ready, exit 3), drift when a component was added since the
//! point; `--json` for scripts; an unknown tenant is refused.

mod common;

use std::fs;

use common::*;

#[test]
fn report_reads_points_from_the_repository_and_says_why_a_tenant_is_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(root.join("password"), PASSWORD).unwrap();
    fs::create_dir_all(root.join("acme/uploads")).unwrap();
    fs::write(root.join("acme/uploads/a.txt"), "hello").unwrap();
    fs::create_dir_all(root.join("dr/uploads")).unwrap();
    let config = root.join("haven.toml");
    let base = format!(
        r#"
[daemon]
state-dir = "state"
[repositories.main]
url = "{root}/repo"
password-file = "password"
[tenants.acme]
repository = "main"
rpo = "1h"
[tenants.acme.components.uploads]
kind = "files"
paths = ["{root}/acme/uploads"]
[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["{root}/dr/uploads"]
"#,
        root = root.display()
    );
    fs::write(&config, &base).unwrap();
    let cfg = config.display().to_string();
    let backup = haven(&["tenant", "backup", "acme", "--config", &cfg], &[]);
    assert_eq!(backup.code, 0, "{backup:?}");
    let points = haven(
        &["--json", "tenant", "points", "acme", "--config", &cfg],
        &[],
    );
    let points: serde_json::Value = serde_json::from_str(&points.stdout).unwrap();
    let point = points[0]["id"].as_str().unwrap().to_string();

    // The catalog is new: the point comes from the repository.
    let out = haven(&["--json", "dr", "report", "acme", "--config", &cfg], &[]);
    assert_eq!(out.code, 3, "not ready: nothing proven yet; {out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 1);
    let acme = &report[0];
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["newest_point"]["id"], point.as_str());
    assert!(acme["newest_verified"].is_null());
    assert_eq!(acme["rpo_target_seconds"], 3600);
    assert_eq!(acme["ready"], false);
    assert!(
        acme["problems"][0]
            .as_str()
            .unwrap()
            .contains("no recovery point proven"),
        "{acme}"
    );

    // A component added since the point: drift; the text report says it all.
    fs::write(
        &config,
        format!(
            "{base}[tenants.acme.components.logs]\nkind = \"files\"\npaths = [\"{}/logs\"]\n",
            root.display()
        ),
    )
    .unwrap();
    let out = haven(&["dr", "report", "--config", &cfg], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("acme: NOT READY"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("newest point     {point}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("component logs is configured but not in the newest point"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("acme-dr: NOT READY"), "{}", out.stdout);
    assert!(
        out.stdout.contains("newest point     none"),
        "{}",
        out.stdout
    );

    let unknown = haven(&["dr", "report", "nope", "--config", &cfg], &[]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
}
