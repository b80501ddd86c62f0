//! Jepsen-style fault test of the replicated volumes: runs `tests/volume_faults.py` (the
//! harness; docs/VOLUMES.md, "Fault tests") against this build's `haven` and asserts that
//! every schedule's checks held.
//!
//! Three sites in network namespaces (etcd member, replica, and on two of them a controller
//! candidate each), two writers on the host through libnbd, 1 to 3 faults per schedule
//! (kill -9 of a replica or of the serving controller, SIGSTOP of the serving controller
//! past its lease, a site's link cut, a replica's disk full); then no acknowledged write
//! lost, no corruption, one controller per epoch, identical replicas.
//!
//! The HAVEN_FAULT_* variables pass through: HAVEN_FAULT_SCHEDULES (default 10, about
//! 4 minutes), HAVEN_FAULT_SEED (printed first, to replay a failure), HAVEN_FAULT_KINDS,
//! HAVEN_FAULT_KEEP=1. The long run:
//!   HAVEN_FAULT_SCHEDULES=100 cargo nextest run -p haven --test volume_faults --no-capture
//! Needs root, iproute2, etcd (etcd-server), qemu-img (qemu-utils) and python3-libnbd
//! (`bash scripts/test.sh` installs them).

use std::path::Path;
use std::process::{Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";

fn effective_uid() -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// What is missing to run the harness, each with the package that brings it.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = vec![];
    if effective_uid().as_deref() != Some("0") {
        missing.push(
            "root (network namespaces, tmpfs mounts): run it as root, as CI does".to_string(),
        );
    }
    if !runs(PYTHON, &["-c", "import nbd"]) {
        missing.push(format!(
            "libnbd's Python module for {PYTHON}: apt-get install python3-libnbd"
        ));
    }
    if !runs("etcd", &["--version"]) {
        missing.push("etcd: apt-get install etcd-server".to_string());
    }
    if !runs("qemu-img", &["--version"]) {
        missing.push("qemu-img: apt-get install qemu-utils".to_string());
    }
    if !runs("ip", &["netns", "list"]) {
        missing.push("`ip netns`: apt-get install iproute2".to_string());
    }
    missing
}

#[test]
fn volume_faults() {
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "the volume fault test needs: {} (bash scripts/test.sh installs the packages)",
        missing.join("; ")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/volume_faults.py");
    // stdout and stderr are inherited: the harness's progress streams out as it goes (with
    // --no-capture; otherwise the runner shows it when the test fails). The HAVEN_FAULT_*
    // variables reach it with the rest of the environment.
    let status = Command::new(PYTHON)
        .arg(&script)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_haven"))
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {PYTHON} {}: {e}", script.display()));
    assert!(
        status.success(),
        "the volume fault harness failed ({status}): its report above names the schedule, the \
         seed to replay it and the logs"
    );
}
