//! Regression test (issue 10): the programs `haven` runs lead their own process groups
//! (so a deadline can stop a tool with its grandchildren) and so do not receive the
//! terminal's Ctrl-C; when `haven` itself is stopped by a signal, it stops them too.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[path = "../../haven-sources/tests/support/marked_processes.rs"]
mod marked_processes;
use marked_processes::{processes_marked, Reap};

#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_signal_to_haven_stops_the_programs_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("password"), PASSWORD).unwrap();
    let mark = format!("MARK=signal-{}", std::process::id());
    let _reap = Reap(mark.clone());
    let config = root.join("haven.toml");
    std::fs::write(
        &config,
        format!(
            "[repositories.main]\nurl = \"{}\"\npassword-file = \"password\"\n\n[tenants.acme]\nrepository = \"main\"\n[tenants.acme.components.db]\nkind = \"command\"\nbackup = \"export {mark}; sh -c 'sleep 1000 & sleep 1000'\"\n",
            root.join("repo").display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut haven = haven_command(&["tenant", "backup", "acme", "--config", &config], &[]);
    let mut child = haven
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command's sleeps", || {
        processes_marked(&mark).len() >= 3
    });
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "haven did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    wait_for("no process of the command left", || {
        processes_marked(&mark).is_empty()
    });
}
