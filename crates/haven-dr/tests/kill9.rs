//! `kill -9` at random moments of a run, then `resume` (with an operator's decision when
//! the engine asks for one) reaches the same end state as an uninterrupted run: every
//! non-idempotent step ran exactly once, idempotent steps' effects are a set, the DNS
//! record (real BIND 9) answers the new address, the webhook got the notice. 10 rounds;
//! the seed is printed, `HAVEN_SEED=N` replays it.
//!
//! The run is driven by a child process: this test binary again, running only
//! `kill9_child` with the run's parameters in the environment.

#[path = "../../haven-dns/tests/support/bind.rs"]
mod bind;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use haven_dns::RecordType;
use haven_dr::{Decision, StartOptions};
use haven_ops::catalog::{Catalog, DrRunState, DrStepState};
use support::{command, dr, write_config, Http};

/// Runs in the child: start or resume the run named in the environment.
#[test]
fn kill9_child() {
    let Ok(action) = std::env::var("HAVEN_DR_KILL_ACTION") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("HAVEN_DR_KILL_DIR").unwrap());
    let run_id = std::env::var("HAVEN_DR_KILL_RUN").unwrap();
    let engine = dr(&dir, &dir.join("haven.toml"));
    let out = if action == "start" {
        engine.start(
            "fo",
            &StartOptions {
                run_id: Some(run_id),
                ..Default::default()
            },
        )
    } else {
        let decisions: Vec<Decision> = std::env::var("HAVEN_DR_KILL_DECISIONS")
            .unwrap_or_default()
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| match d.split_once(':').unwrap() {
                ("retry", s) => Decision::Retry(s.to_string()),
                (_, s) => Decision::Skip(s.to_string()),
            })
            .collect();
        engine.resume(&run_id, &decisions)
    };
    eprintln!("child outcome: {out:?}");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spawn(dir: &Path, run: &str, action: &str, decisions: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HAVEN_DR_KILL_ACTION", action)
        .env("HAVEN_DR_KILL_DIR", dir)
        .env("HAVEN_DR_KILL_RUN", run)
        .env("HAVEN_DR_KILL_DECISIONS", decisions)
        .spawn()
        .unwrap()
}

/// Non-idempotent steps and the file each appends a line to when it starts.
const ONCE: [&str; 3] = ["prov", "scale", "final"];

fn runbook(d: &Path, b: &bind::Bind, app: &Http) -> String {
    let e = |n: &str| d.join(format!("effect-{n}")).display().to_string();
    // Non-idempotent steps record their effect first, so "it started" is visible.
    command("prov", &[], &format!("echo x >> {}; sleep 0.3", e("prov")), "")
        + &command("idem", &["prov"], &format!("sleep 0.2; echo x > {}; echo lb_ip=192.0.2.10", e("idem")), "idempotent = true\noutputs = [\"lb_ip\"]")
        + &format!("[[runbooks.fo.steps]]\nname = \"smoke\"\nkind = \"http\"\nneeds = [\"prov\"]\nurl = \"http://{}/health\"\n", app.addr)
        + &command("scale", &["smoke"], &format!("echo x >> {}; sleep 0.1; exit 1", e("scale")), "on-failure = \"continue\"")
        + &format!(
            "[[runbooks.fo.steps]]\nname = \"dns\"\nkind = \"dns\"\nneeds = [\"smoke\", \"idem\"]\nserver = \"{}\"\nzone = \"{}\"\nrecord = \"acme.{}\"\ntype = \"A\"\nvalue = \"${{steps.idem.lb_ip}}\"\ntsig-key-file = \"{}\"\n",
            b.addr, bind::ZONE, bind::ZONE, b.key_file.display()
        )
        + "[[runbooks.fo.steps]]\nname = \"settle\"\nkind = \"wait\"\nneeds = [\"dns\"]\nduration = \"0s\"\n"
        + "[[runbooks.fo.steps]]\nname = \"tell\"\nkind = \"notify\"\nneeds = [\"settle\", \"scale\"]\nmessage = \"run ${run.id} done\"\n"
        + &command("final", &["tell"], &format!("echo x >> {}; sleep 0.1", e("final")), "")
}

/// The end state, normalised: run state, how often each non-idempotent step ran, the
/// idempotent effects present, the DNS answer, whether the webhook heard of this run.
fn end_state(dir: &Path, catalog: &Catalog, run: &str, b: &bind::Bind, hook: &Http) -> String {
    let r = catalog.dr_run(run).unwrap().unwrap();
    let count = |n: &str| {
        std::fs::read_to_string(dir.join(format!("effect-{n}")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let once: Vec<String> = ONCE.iter().map(|n| format!("{n}={}", count(n))).collect();
    let told = hook
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|q| q.body.contains(run));
    format!(
        "{} once[{}] idem={} dns={:?} told={told}",
        r.state,
        once.join(" "),
        dir.join("effect-idem").exists(),
        b.answer("acme", RecordType::A)
    )
}

#[test]
fn kill_9_at_random_moments_then_resume_reaches_the_same_end_state() {
    let seed: u64 = std::env::var("HAVEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill -9 rounds: seed {seed} (HAVEN_SEED={seed} replays)");
    let mut rng = Rng(seed);
    let b = bind::Bind::start();
    let app = Http::start(|_, _| (200, "ok".into()));
    let hook = Http::start(|_, _| (200, String::new()));

    // The reference: one run without interruption.
    let refdir = tempfile::tempdir().unwrap();
    write_config(refdir.path(), hook.addr, &runbook(refdir.path(), &b, &app));
    let engine = dr(refdir.path(), &refdir.path().join("haven.toml"));
    let out = engine
        .start(
            "fo",
            &StartOptions {
                run_id: Some("ref".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let want = end_state(refdir.path(), &engine.catalog, &out.run_id, &b, &hook)
        .replace("told=true", "told");
    assert!(
        want.starts_with("succeeded once[prov=1 scale=1 final=1] idem=true dns=[\"192.0.2.10\"]"),
        "{want}"
    );

    let mut decisions_made = 0;
    let mut live_kills = 0;
    for round in 0..10 {
        // A fresh record for every round: the run must set it again.
        b.answer("acme", RecordType::A);
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), hook.addr, &runbook(dir.path(), &b, &app));
        let catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let run = format!("round-{round}");
        let mut kills = 1 + rng.next() % 2;
        let mut child = spawn(dir.path(), &run, "start", "");
        let mut spawns = 1;
        loop {
            if kills > 0 {
                // The run takes about 700 ms after the child's start.
                let after = rng.next() % 800;
                std::thread::sleep(Duration::from_millis(after));
                let live = child.try_wait().unwrap().is_none();
                let _ = child.kill();
                if live {
                    live_kills += 1;
                }
                eprintln!(
                    "round {round}: kill -9 after {after} ms{}",
                    if live { "" } else { " (already done)" }
                );
                kills -= 1;
            }
            child.wait().unwrap();
            let Some(r) = catalog.dr_run(&run).unwrap() else {
                child = spawn(dir.path(), &run, "start", "");
                spawns += 1;
                continue;
            };
            if r.state == DrRunState::Succeeded {
                break;
            }
            assert!(spawns < 30, "round {round} does not converge: {r:?}");
            // The operator's decision for interrupted non-idempotent steps: if it left
            // its effect, it ran: skip; otherwise run it.
            let steps = catalog.dr_steps(&run).unwrap();
            let mut decisions = vec![];
            for s in steps.iter().filter(|s| s.state == DrStepState::Interrupted) {
                let ran = dir.path().join(format!("effect-{}", s.step)).exists();
                decisions.push(format!("{}:{}", if ran { "skip" } else { "retry" }, s.step));
            }
            if r.state == DrRunState::Waiting {
                assert!(
                    !decisions.is_empty(),
                    "waiting without an interrupted step: {steps:?}"
                );
                decisions_made += decisions.len();
            }
            child = spawn(dir.path(), &run, "resume", &decisions.join(","));
            spawns += 1;
        }
        let got = end_state(dir.path(), &catalog, &run, &b, &hook).replace("told=true", "told");
        eprintln!("round {round}: {got} ({spawns} processes)");
        assert_eq!(got, want, "round {round} (seed {seed}) ended elsewhere");
        // Every non-idempotent step either ran (succeeded/failed) exactly once or was
        // skipped by decision after it had left its effect.
        for s in catalog.dr_steps(&run).unwrap() {
            assert!(
                matches!(s.state, DrStepState::Succeeded | DrStepState::Skipped)
                    || s.step == "scale",
                "{s:?}"
            );
        }
    }
    eprintln!("kills of a live run: {live_kills}; decisions asked for: {decisions_made}");
    assert!(
        live_kills >= 5,
        "too few kills hit a live run ({live_kills}): the test proves little"
    );
}
