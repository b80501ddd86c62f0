//! The restore step with a real repository and a files tenant: the point is restored
//! into `into`'s paths and validated, its id becomes the run's point and an output, the
//! succeeded run adopts; a restore that fails is a failed proof: the dns step (real
//! BIND 9) never runs and the zone's serial is unchanged. A drill restores into scratch
//! targets and leaves `into` untouched.

#[path = "../../haven-dns/tests/support/bind.rs"]
mod bind;
mod support;

use std::time::Duration;

use haven_dns::RecordType;
use haven_dr::StartOptions;
use haven_ops::backup::Observer;
use haven_ops::catalog::{DrMode, DrRunState, DrStepState};
use support::{dr, write_config, Http};

fn steps(b: &bind::Bind) -> String {
    format!(
        "[[runbooks.fo.steps]]\nname = \"restore\"\nkind = \"restore\"\n\
         [[runbooks.fo.steps]]\nname = \"dns\"\nkind = \"dns\"\nneeds = [\"restore\"]\nserver = \"{}\"\nzone = \"{}\"\nrecord = \"acme.{}\"\ntype = \"A\"\nvalue = \"192.0.2.55\"\ntsig-key-file = \"{}\"\n",
        b.addr,
        bind::ZONE,
        bind::ZONE,
        b.key_file.display()
    )
}

#[test]
fn the_restore_step_restores_and_validates_and_a_failed_restore_never_touches_dns() {
    let b = bind::Bind::start();
    let hook = Http::start(|_, _| (200, String::new()));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("password"), "correct horse battery staple").unwrap();
    std::fs::create_dir_all(d.join("site-a/sub")).unwrap();
    std::fs::write(d.join("site-a/orders.csv"), "1,apples\n2,pears\n").unwrap();
    std::fs::write(d.join("site-a/sub/note"), "kept").unwrap();
    let drill = format!("drill-record = \"drill.{}\"\n", bind::ZONE);
    let cfg = write_config(d, hook.addr, &(drill + &steps(&b)));
    let engine = dr(d, &cfg);
    let point = haven_ops::backup_tenant(
        &engine.config,
        "acme",
        Duration::from_secs(30),
        &Observer::quiet(),
    )
    .unwrap();

    // A drill first: scratch targets, site-b untouched, the real record untouched.
    let out = engine
        .start(
            "fo",
            &StartOptions {
                mode: Some(DrMode::Drill),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert!(
        !d.join("site-b").exists(),
        "a drill restored into the real target"
    );
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["127.0.0.1".to_string()]
    );

    // The real run.
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("site-b/orders.csv")).unwrap(),
        "1,apples\n2,pears\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("site-b/sub/note")).unwrap(),
        "kept"
    );
    let run = engine.catalog.dr_run(&out.run_id).unwrap().unwrap();
    assert_eq!(run.point.as_deref(), Some(point.id.as_str()));
    let restore = engine
        .catalog
        .dr_steps(&out.run_id)
        .unwrap()
        .into_iter()
        .find(|s| s.step == "restore")
        .unwrap();
    assert_eq!(
        (
            restore.outputs["point"].as_str(),
            restore.outputs["passed"].as_str()
        ),
        (point.id.as_str(), "true")
    );
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["192.0.2.55".to_string()]
    );
    assert!(haven_ops::failover::served_by(&engine.catalog, "acme")
        .unwrap()
        .is_some());

    // A restore whose validation fails (the new site's fingerprint differs from the
    // point's): a failed proof, the zone is never touched.
    let dir2 = tempfile::tempdir().unwrap();
    let d2 = dir2.path();
    std::fs::write(d2.join("password"), "correct horse battery staple").unwrap();
    let text = support::config_text(d2, hook.addr, &steps(&b).replace("192.0.2.55", "192.0.2.66"))
        .replace(
            &format!("kind = \"files\"\npaths = [\"{}\"]", d2.join("site-a").display()),
            "kind = \"command\"\nbackup = \"echo ledger\"\nfingerprint = \"echo rows 2\"",
        )
        .replace(
            &format!("kind = \"files\"\npaths = [\"{}\"]", d2.join("site-b").display()),
            &format!("kind = \"command\"\nbackup = \"true\"\nrestore = \"cat > {}/restored\"\nfingerprint = \"echo rows 3\"", d2.display()),
        );
    std::fs::write(d2.join("haven.toml"), text).unwrap();
    let engine2 = dr(d2, &d2.join("haven.toml"));
    haven_ops::backup_tenant(
        &engine2.config,
        "acme",
        Duration::from_secs(30),
        &Observer::quiet(),
    )
    .unwrap();
    let serial = b.serial();
    let out = engine2.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed, "{out:?}");
    let steps = engine2.catalog.dr_steps(&out.run_id).unwrap();
    assert_eq!(steps[0].state, DrStepState::Failed, "{steps:?}");
    assert!(
        steps[0]
            .message
            .as_deref()
            .unwrap()
            .contains("validation failed"),
        "{steps:?}"
    );
    assert!(
        d2.join("restored").exists(),
        "the restore itself did not run"
    );
    assert_eq!(
        steps[1].attempts, 0,
        "the dns step was attempted: {steps:?}"
    );
    assert_eq!(
        b.serial(),
        serial,
        "the zone changed after a failed restore"
    );
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["192.0.2.55".to_string()]
    );
}
