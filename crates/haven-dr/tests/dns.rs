//! The dns step against a real BIND 9 on loopback: the record is switched and a query
//! to the server returns the new address; a failed proof step never touches the zone
//! (serial unchanged); a wrong TSIG key fails naming the server and the key, and
//! `resume` after fixing the key file finishes; a dry run checks the key and changes
//! nothing; a drill changes the drill record and deletes it after.

#[path = "../../haven-dns/tests/support/bind.rs"]
mod bind;
mod support;

use haven_dns::RecordType;
use haven_dr::StartOptions;
use haven_ops::catalog::{DrMode, DrRunState, DrStepState};
use support::{command, dr, write_config, Http};

fn dns_step(b: &bind::Bind, key: &std::path::Path, needs: &[&str], extra: &str) -> String {
    format!(
        "[[runbooks.fo.steps]]\nname = \"dns\"\nkind = \"dns\"\nneeds = {needs:?}\nserver = \"{}\"\nzone = \"{}\"\nrecord = \"acme.{}\"\ntype = \"A\"\nvalue = \"${{steps.provision.lb_ip}}\"\nttl = 60\ntsig-key-file = \"{}\"\n{extra}\n",
        b.addr,
        bind::ZONE,
        bind::ZONE,
        key.display()
    )
}

fn provision() -> String {
    command(
        "provision",
        &[],
        "echo lb_ip=192.0.2.77",
        "outputs = [\"lb_ip\"]",
    )
}

#[test]
fn the_dns_step_switches_the_record_and_bind_answers_the_new_address() {
    let b = bind::Bind::start();
    let dir = tempfile::tempdir().unwrap();
    let app = Http::start(|_, _| (200, "ok".into()));
    let smoke = format!("[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nneeds = [\"provision\"]\nurl = \"http://{}/health\"\n", app.addr);
    let cfg = write_config(
        dir.path(),
        app.addr,
        &(provision() + &smoke + &dns_step(&b, &b.key_file, &["smoke"], "")),
    );
    let engine = dr(dir.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["192.0.2.77".to_string()]
    );
    let secret = std::fs::read_to_string(&b.key_file).unwrap();
    let secret = secret.split('"').nth(3).unwrap().to_string();
    let audit = engine.catalog.dr_audit(&out.run_id).unwrap();
    assert!(
        audit.iter().all(|a| !a.detail.contains(&secret)),
        "the TSIG secret is in the audit log"
    );
    let dns = audit
        .iter()
        .find(|a| a.event == "step-succeeded" && a.step.as_deref() == Some("dns"))
        .unwrap();
    assert!(
        dns.detail.contains("previous=127.0.0.1"),
        "the old value is kept for fail back: {}",
        dns.detail
    );
}

#[test]
fn a_failed_proof_step_never_touches_dns() {
    let b = bind::Bind::start();
    let dir = tempfile::tempdir().unwrap();
    let app = Http::start(|_, _| (500, "database is empty".into()));
    // on-failure = continue: the run would go on, but not to the dns step.
    let smoke = format!("[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nneeds = [\"provision\"]\nurl = \"http://{}/health\"\ntimeout = \"1s\"\ninterval = \"0s\"\non-failure = \"continue\"\n", app.addr);
    let cfg = write_config(
        dir.path(),
        app.addr,
        &(provision() + &smoke + &dns_step(&b, &b.key_file, &["smoke"], "")),
    );
    let engine = dr(dir.path(), &cfg);
    let serial = b.serial();
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed, "{out:?}");
    assert!(
        out.error
            .as_deref()
            .unwrap()
            .contains("proof step smoke failed"),
        "{out:?}"
    );
    assert_eq!(b.serial(), serial, "the zone changed");
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["127.0.0.1".to_string()],
        "the old address changed"
    );
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert_eq!(
        steps.iter().find(|s| s.step == "dns").unwrap().attempts,
        0,
        "the dns step was attempted"
    );

    // Unless the step explicitly allows it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        app.addr,
        &(provision() + &smoke + &dns_step(&b, &b.key_file, &["smoke"], "allow-unproven = true")),
    );
    let engine = dr(dir.path(), &cfg);
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["192.0.2.77".to_string()]
    );
}

#[test]
fn a_wrong_tsig_key_fails_naming_server_and_key_and_resume_after_the_fix_finishes() {
    let b = bind::Bind::start();
    let dir = tempfile::tempdir().unwrap();
    let app = Http::start(|_, _| (200, "ok".into()));
    let key = dir.path().join("acme-dns.key");
    std::fs::copy(&b.wrong_secret_file, &key).unwrap();
    let marker = dir.path().join("provisioned");
    let prov = command(
        "provision",
        &[],
        &format!("echo x >> {}; echo lb_ip=192.0.2.77", marker.display()),
        "outputs = [\"lb_ip\"]",
    );
    let cfg = write_config(
        dir.path(),
        app.addr,
        &(prov + &dns_step(&b, &key, &["provision"], "")),
    );
    let engine = dr(dir.path(), &cfg);
    let serial = b.serial();
    let out = engine.start("fo", &StartOptions::default()).unwrap();
    assert_eq!(out.state, DrRunState::Failed, "{out:?}");
    let err = out.error.clone().unwrap();
    assert!(err.contains(&b.addr.to_string()), "names the server: {err}");
    assert!(err.contains("haven-test"), "names the key: {err}");
    assert_eq!(b.serial(), serial);
    // Fix the key file, resume: provision is not run again, dns is.
    std::fs::copy(&b.key_file, &key).unwrap();
    let out2 = engine.resume(&out.run_id, &[]).unwrap();
    assert_eq!(out2.state, DrRunState::Succeeded, "{out2:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "provision ran again"
    );
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["192.0.2.77".to_string()]
    );
}

#[test]
fn a_dry_run_checks_the_key_and_changes_nothing_and_a_drill_cleans_up_its_record() {
    let b = bind::Bind::start();
    let dir = tempfile::tempdir().unwrap();
    let app = Http::start(|_, _| (200, "ok".into()));
    let drill = format!("drill-record = \"drill.{}\"\n", bind::ZONE);
    let cfg = write_config(
        dir.path(),
        app.addr,
        &(drill.clone() + &provision() + &dns_step(&b, &b.key_file, &["provision"], "")),
    );
    let engine = dr(dir.path(), &cfg);
    let serial = b.serial();
    let out = engine
        .start(
            "fo",
            &StartOptions {
                mode: Some(DrMode::DryRun),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.state, DrRunState::Succeeded, "{out:?}");
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    let dns = steps.iter().find(|s| s.step == "dns").unwrap();
    assert!(
        dns.message.as_deref().unwrap().contains("accepts the key"),
        "{dns:?}"
    );
    assert_eq!(b.serial(), serial, "a dry run changed the zone");
    // A wrong key is caught by the dry run.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = write_config(
        dir2.path(),
        app.addr,
        &(provision() + &dns_step(&b, &b.wrong_secret_file, &["provision"], "")),
    );
    let out = dr(dir2.path(), &cfg2)
        .start(
            "fo",
            &StartOptions {
                mode: Some(DrMode::DryRun),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.state, DrRunState::Failed, "{out:?}");
    assert_eq!(b.serial(), serial);

    // The drill changes the drill record, never the real one, and deletes it after.
    let engine = dr(dir.path(), &cfg);
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
    let steps = engine.catalog.dr_steps(&out.run_id).unwrap();
    assert!(steps.iter().all(|s| s.state == DrStepState::Succeeded));
    assert!(
        steps
            .iter()
            .find(|s| s.step == "dns")
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("drill."),
        "{steps:?}"
    );
    assert_eq!(
        b.answer("acme", RecordType::A),
        vec!["127.0.0.1".to_string()],
        "a drill changed the real record"
    );
    assert!(
        b.answer("drill", RecordType::A).is_empty(),
        "the drill record was left behind"
    );
    assert!(
        b.serial() > serial,
        "the drill did not update the zone at all"
    );
    let run = engine.catalog.dr_run(&out.run_id).unwrap().unwrap();
    assert_eq!(run.mode, DrMode::Drill);
    assert!(
        haven_ops::failover::served_by(&engine.catalog, "acme")
            .unwrap()
            .is_none(),
        "a drill adopted"
    );
}
