//! Running a runbook: the graph scheduler, persistence before and after every step,
//! resume, abort.
//!
//! ```text
//! start ──create_dr_run (every step pending)──> drive:
//!   loop: steps whose needs are done ──set_dr_step(running)──> thread: attempts with
//!         retries and backoff ──result──> set_dr_step(succeeded|failed) + audit
//!   a failed proof step (restore, http, sql) ──> no dns step runs unless allow-unproven
//!   a failed step with on-failure = stop ──> nothing new starts; run failed
//! resume: owner dead ──> running steps are interrupted: idempotent ones re-run, others
//!         wait for --retry-step / --skip-step; failed steps are retried
//! ```
//! States: run `running -> succeeded | failed | waiting | aborted`; step `pending ->
//! running -> succeeded | failed`, `running -> interrupted` (owner died),
//! `pending|interrupted -> skipped` (decision).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use haven_ops::catalog::{Catalog, DrMode, DrRun, DrRunState, DrStep, DrStepState};
use haven_ops::config::Config;
use haven_ops::point::PointChoice;
use haven_ops::runbook::{OnFailure, Runbook, Step, StepKind, Template, Var};

use crate::secrets::Redactor;
use crate::steps::{self, Ctx, Done, Failed};
use crate::DrError;

/// Prints a progress line (the CLI's live output); must not block for long.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// A runbook engine bound to a config and a catalog.
#[derive(Clone)]
pub struct Dr {
    pub config: Config,
    pub catalog: Catalog,
    pub progress: Progress,
}

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub point: PointChoice,
    pub mode: Option<DrMode>,
    /// The run's id (default: `dr-<time>-<random>`); a caller that must find the run
    /// again after a crash gives its own.
    pub run_id: Option<String>,
    /// Who started it (default `$USER@hostname`).
    pub actor: Option<String>,
}

/// What an operator decides for a step a killed run left interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it again.
    Retry(String),
    /// Consider it done (its outputs are empty).
    Skip(String),
}

/// How a run ended (for now).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub run_id: String,
    pub state: DrRunState,
    pub error: Option<String>,
    /// Steps waiting for a decision.
    pub waiting: Vec<String>,
    pub seconds: f64,
}

fn actor() -> String {
    // Daemons and CI often run without USER: the uid still says who.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("?");
            format!("uid{uid}")
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// A fresh run id: `dr-<UTC time>-<4 hex>`.
pub fn new_run_id() -> String {
    let now = Utc::now();
    let nanos = now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(13);
    format!("dr-{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), nanos & 0xffff)
}

/// Whether process `pid` runs (a zombie does not).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // pid (comm) STATE ...: comm may hold spaces and parentheses; the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

impl Dr {
    pub fn new(config: Config, catalog: Catalog) -> Dr {
        Dr {
            config,
            catalog,
            progress: Arc::new(|_| {}),
        }
    }

    pub fn with_progress(mut self, p: impl Fn(&str) + Send + Sync + 'static) -> Dr {
        self.progress = Arc::new(p);
        self
    }

    fn runbook(&self, name: &str) -> Result<&Runbook, DrError> {
        self.config
            .runbooks
            .get(name)
            .ok_or_else(|| DrError::NoRunbook {
                name: name.to_string(),
                file: self.config.file.display().to_string(),
                declared: self
                    .config
                    .runbooks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Start `runbook` and drive it until it ends, fails or waits for a decision.
    pub fn start(&self, runbook: &str, opts: &StartOptions) -> Result<Outcome, DrError> {
        let book = self.runbook(runbook)?.clone();
        let mode = opts.mode.unwrap_or(DrMode::Run);
        if mode == DrMode::Drill && book.has_dns() && book.drill_record.is_none() {
            return Err(DrError::Invalid(format!("runbook {runbook} has a dns step but no drill-record: a drill must not change the real record; add drill-record = \"drill.NAME.\" to [runbooks.{runbook}]")));
        }
        let id = opts.run_id.clone().unwrap_or_else(new_run_id);
        let run = DrRun {
            id: id.clone(),
            runbook: runbook.to_string(),
            tenant: book.tenant.clone(),
            into_tenant: if mode == DrMode::Drill {
                String::new()
            } else {
                book.into.clone()
            },
            mode,
            point: match &opts.point {
                PointChoice::Id(p) => Some(p.clone()),
                _ => None,
            },
            state: DrRunState::Running,
            started: Utc::now(),
            finished: None,
            seconds: None,
            actor: opts.actor.clone().unwrap_or_else(actor),
            owner_pid: Some(std::process::id()),
            error: None,
            plan: serde_json::json!({ "runbook": book, "choice": format!("{:?}", opts.point) }),
        };
        let names: Vec<&str> = book.steps.iter().map(|s| s.name.as_str()).collect();
        self.catalog.create_dr_run(&run, &names)?;
        self.audit(
            &run.id,
            None,
            "run-started",
            &format!(
                "{} {} of runbook {} by {} (pid {}): {} into {}",
                mode,
                run.id,
                runbook,
                run.actor,
                std::process::id(),
                book.tenant,
                book.into
            ),
        );
        (self.progress)(&format!("run {id} started ({mode} of {runbook})"));
        if mode == DrMode::DryRun {
            return crate::check::dry_run(self, &book, run, &opts.point);
        }
        self.drive(run, &book, opts.point.clone())
    }

    /// Continue run `id` (killed, failed, or waiting for a decision).
    pub fn resume(&self, id: &str, decisions: &[Decision]) -> Result<Outcome, DrError> {
        let mut run = self
            .catalog
            .dr_run(id)?
            .ok_or_else(|| DrError::NoRun(id.to_string()))?;
        if run.state.is_final() || run.mode == DrMode::DryRun {
            return Err(DrError::Invalid(format!(
                "run {id} is {} ({}): there is nothing to resume; start a new run",
                run.state, run.mode
            )));
        }
        if run.state == DrRunState::Running {
            if let Some(pid) = run
                .owner_pid
                // Our own pid too: another thread of this process (the daemon) drives it.
                .filter(|p| pid_alive(*p))
            {
                return Err(DrError::Invalid(format!("run {id} is still running in process {pid}; wait for it, or `haven dr abort {id}`")));
            }
        }
        let book: Runbook = serde_json::from_value(run.plan["runbook"].clone()).map_err(|e| {
            DrError::Invalid(format!(
                "run {id}: its stored runbook cannot be read ({e}); start a new run"
            ))
        })?;
        let steps = self.catalog.dr_steps(id)?;
        for d in decisions {
            let (Decision::Retry(s) | Decision::Skip(s)) = d;
            if !steps.iter().any(|x| &x.step == s) {
                return Err(DrError::Invalid(format!("run {id} has no step {s:?}")));
            }
        }
        let mut waiting = vec![];
        for mut s in steps {
            let Some(step) = book.step(&s.step) else {
                continue;
            };
            let decided = decisions
                .iter()
                .find(|d| matches!(d, Decision::Retry(n) | Decision::Skip(n) if *n == s.step));
            let was = s.state;
            match (s.state, decided) {
                (
                    DrStepState::Running
                    | DrStepState::Interrupted
                    | DrStepState::Failed
                    | DrStepState::Pending,
                    Some(Decision::Skip(_)),
                ) => {
                    s.state = DrStepState::Skipped;
                    s.message = Some("skipped by decision".into());
                    self.audit(
                        id,
                        Some(&s.step),
                        "step-skipped",
                        &format!("by decision of {} (was {was})", actor()),
                    );
                }
                (DrStepState::Running | DrStepState::Interrupted, Some(Decision::Retry(_))) => {
                    s.state = DrStepState::Pending;
                    self.audit(
                        id,
                        Some(&s.step),
                        "decision",
                        &format!("retry by decision of {} (was {was})", actor()),
                    );
                }
                (DrStepState::Running | DrStepState::Interrupted, None)
                    if step.kind.is_idempotent() =>
                {
                    s.state = DrStepState::Pending;
                    self.audit(
                        id,
                        Some(&s.step),
                        "step-interrupted",
                        &format!(
                            "was {was} when the run stopped; {} steps are idempotent: run again",
                            step.kind.name()
                        ),
                    );
                }
                (DrStepState::Running | DrStepState::Interrupted, None) => {
                    s.state = DrStepState::Interrupted;
                    waiting.push(s.step.clone());
                }
                (DrStepState::Failed, _) if step.on_failure == OnFailure::Stop => {
                    s.state = DrStepState::Pending;
                    s.attempts = 0;
                }
                _ => {}
            }
            if s.state != was {
                self.catalog.set_dr_step(&s)?;
            }
        }
        if !waiting.is_empty() {
            let msg = format!(
                "step {} was running when the run stopped and may have had an effect (it is not idempotent); look, then `haven dr resume {id} --retry-step STEP` or `--skip-step STEP`",
                waiting.join(", ")
            );
            for w in &waiting {
                self.audit(id, Some(w), "decision-needed", &msg);
            }
            run.state = DrRunState::Waiting;
            run.owner_pid = None;
            run.error = Some(msg.clone());
            self.catalog.set_dr_run(&run)?;
            (self.progress)(&format!("run {id} waits for a decision: {msg}"));
            return Ok(Outcome {
                run_id: id.to_string(),
                state: run.state,
                error: run.error,
                waiting,
                seconds: 0.0,
            });
        }
        run.state = DrRunState::Running;
        run.owner_pid = Some(std::process::id());
        run.error = None;
        run.finished = None;
        self.catalog.set_dr_run(&run)?;
        self.audit(
            id,
            None,
            "run-resumed",
            &format!("by {} (pid {})", actor(), std::process::id()),
        );
        (self.progress)(&format!("run {id} resumed"));
        let choice = match &run.point {
            Some(p) => PointChoice::Id(p.clone()),
            None => PointChoice::Latest,
        };
        self.drive(run, &book, choice)
    }

    /// Stop a run: a live one stops starting steps (running ones finish their attempt);
    /// a killed or waiting one is closed.
    pub fn abort(&self, id: &str) -> Result<DrRun, DrError> {
        let mut run = self
            .catalog
            .dr_run(id)?
            .ok_or_else(|| DrError::NoRun(id.to_string()))?;
        if run.state.is_final() {
            return Err(DrError::Invalid(format!(
                "run {id} is already {}",
                run.state
            )));
        }
        let live = run.state == DrRunState::Running && run.owner_pid.is_some_and(pid_alive);
        run.state = DrRunState::Aborted;
        run.error = Some(format!("aborted by {}", actor()));
        if !live {
            run.finished = Some(Utc::now());
            run.owner_pid = None;
        }
        self.catalog.set_dr_run(&run)?;
        self.audit(
            id,
            None,
            "run-aborted",
            &format!(
                "by {}{}",
                actor(),
                if live {
                    " (the running process stops after its current steps)"
                } else {
                    ""
                }
            ),
        );
        Ok(run)
    }

    pub(crate) fn audit(&self, run: &str, step: Option<&str>, event: &str, detail: &str) {
        // The audit log must not stop a recovery: a failed write is reported, not fatal.
        if let Err(e) = self.catalog.append_dr_audit(run, step, event, detail) {
            (self.progress)(&format!("warning: audit log of run {run}: {e}"));
        }
    }

    fn drive(
        &self,
        mut run: DrRun,
        book: &Runbook,
        choice: PointChoice,
    ) -> Result<Outcome, DrError> {
        let clock = Instant::now();
        let redactor = Redactor::default();
        let mut states: BTreeMap<String, DrStep> = self
            .catalog
            .dr_steps(&run.id)?
            .into_iter()
            .map(|s| (s.step.clone(), s))
            .collect();
        // A proof step that failed earlier (even with on-failure = continue) still counts.
        let mut unproven: Option<String> = states
            .values()
            .find(|s| {
                s.state == DrStepState::Failed
                    && book.step(&s.step).is_some_and(|b| b.kind.is_proof())
            })
            .map(|s| s.step.clone());
        let mut stop: Option<String> = None;
        let mut aborted = false;
        let (tx, rx) = mpsc::channel::<(String, Result<Done, Failed>, u32, f64)>();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let point = std::sync::Mutex::new(run.point.clone());
        std::thread::scope(|scope| -> Result<(), DrError> {
            loop {
                if self.catalog.dr_run_state(&run.id)? == Some(DrRunState::Aborted) {
                    aborted = true;
                }
                if stop.is_none() && !aborted {
                    for step in book.order() {
                        let st = &states[&step.name];
                        if st.state != DrStepState::Pending || running.contains(&step.name) {
                            continue;
                        }
                        let ready = step.needs.iter().all(|n| {
                            let s = &states[n];
                            matches!(s.state, DrStepState::Succeeded | DrStepState::Skipped)
                                || (s.state == DrStepState::Failed
                                    && book
                                        .step(n)
                                        .is_some_and(|b| b.on_failure == OnFailure::Continue))
                        });
                        if !ready {
                            continue;
                        }
                        if let (StepKind::Dns(d), Some(p)) = (&step.kind, &unproven) {
                            if !d.allow_unproven {
                                let msg = format!("not run: proof step {p} failed, and traffic is never cut over to an unproven tenant (set allow-unproven = true on this step to allow it)");
                                let mut s = states[&step.name].clone();
                                s.state = DrStepState::Failed;
                                s.message = Some(msg.clone());
                                s.finished = Some(Utc::now());
                                self.catalog.set_dr_step(&s)?;
                                self.audit(&run.id, Some(&step.name), "step-failed", &msg);
                                (self.progress)(&format!("{}: {msg}", step.name));
                                states.insert(step.name.clone(), s);
                                stop = Some(format!("step {}: {msg}", step.name));
                                break;
                            }
                        }
                        // Outputs of every finished step, as they are now.
                        let outputs: BTreeMap<String, BTreeMap<String, String>> = states
                            .iter()
                            .map(|(k, v)| (k.clone(), v.outputs.clone()))
                            .collect();
                        let mut s = states[&step.name].clone();
                        s.state = DrStepState::Running;
                        s.started = Some(Utc::now());
                        s.finished = None;
                        s.message = None;
                        self.catalog.set_dr_step(&s)?;
                        states.insert(step.name.clone(), s);
                        running.insert(step.name.clone());
                        let tx = tx.clone();
                        let run_id = run.id.clone();
                        let mode = run.mode;
                        let (redactor, point, choice) = (&redactor, &point, &choice);
                        scope.spawn(move || {
                            let t = Instant::now();
                            let (result, attempts) = self.attempts(
                                book, step, &run_id, mode, outputs, redactor, point, choice,
                            );
                            let _ = tx.send((
                                step.name.clone(),
                                result,
                                attempts,
                                t.elapsed().as_secs_f64(),
                            ));
                        });
                    }
                }
                if running.is_empty() {
                    return Ok(());
                }
                let (name, result, attempts, secs) =
                    rx.recv().expect("a step thread sends before it ends");
                running.remove(&name);
                let step = book.step(&name).expect("a step of the runbook");
                let mut s = states[&name].clone();
                s.attempts = attempts;
                s.finished = Some(Utc::now());
                s.seconds = Some(secs);
                match result {
                    Ok(done) => {
                        s.state = DrStepState::Succeeded;
                        s.message = Some(redactor.redact(&done.message));
                        s.outputs = done.outputs;
                        self.catalog.set_dr_step(&s)?;
                        let outs: Vec<String> = s
                            .outputs
                            .iter()
                            .map(|(k, v)| format!("{k}={}", redactor.redact(&short(v))))
                            .collect();
                        self.audit(
                            &run.id,
                            Some(&name),
                            "step-succeeded",
                            &format!(
                                "in {secs:.1}s, {attempts} attempt(s): {}; outputs: {}",
                                s.message.clone().unwrap_or_default(),
                                outs.join(" ")
                            ),
                        );
                        (self.progress)(&format!(
                            "{name}: succeeded in {secs:.1}s: {}",
                            s.message.clone().unwrap_or_default()
                        ));
                    }
                    Err(f) => {
                        let msg = redactor.redact(&f.message);
                        s.state = DrStepState::Failed;
                        s.message = Some(msg.clone());
                        self.catalog.set_dr_step(&s)?;
                        self.audit(
                            &run.id,
                            Some(&name),
                            "step-failed",
                            &format!("after {attempts} attempt(s), {secs:.1}s: {msg}"),
                        );
                        (self.progress)(&format!(
                            "{name}: FAILED after {attempts} attempt(s): {msg}"
                        ));
                        if step.kind.is_proof() && unproven.is_none() {
                            unproven = Some(name.clone());
                        }
                        if step.on_failure == OnFailure::Stop && stop.is_none() {
                            stop = Some(format!("step {name} failed: {msg}"));
                        }
                    }
                }
                states.insert(name, s);
            }
        })?;
        run.point = point.into_inner().unwrap_or_else(|e| e.into_inner());
        let all_done = states.values().all(|s| {
            matches!(s.state, DrStepState::Succeeded | DrStepState::Skipped)
                || (s.state == DrStepState::Failed
                    && book
                        .step(&s.step)
                        .is_some_and(|b| b.on_failure == OnFailure::Continue))
        });
        run.state = if aborted {
            DrRunState::Aborted
        } else if stop.is_some() || !all_done {
            DrRunState::Failed
        } else {
            DrRunState::Succeeded
        };
        run.error = if aborted {
            self.catalog.dr_run(&run.id)?.and_then(|r| r.error)
        } else {
            stop.clone()
        };
        run.finished = Some(Utc::now());
        run.owner_pid = None;
        // The RTO: from the first start to now, across resumes.
        run.seconds = Some((Utc::now() - run.started).num_milliseconds() as f64 / 1000.0);
        if run.mode == DrMode::Drill {
            self.clean_drill(&run, book, &redactor);
        }
        if run.state == DrRunState::Succeeded && run.mode == DrMode::Run {
            haven_ops::failover::adopt(
                &self.catalog,
                &book.tenant,
                &book.into,
                &run.id,
                Utc::now(),
            )?;
            self.audit(
                &run.id,
                None,
                "adopted",
                &format!(
                    "tenant {} is now backed up from {}'s servers",
                    book.tenant, book.into
                ),
            );
        }
        self.catalog.set_dr_run(&run)?;
        self.audit(
            &run.id,
            None,
            "run-finished",
            &format!(
                "{} in {:.1}s (this process: {:.1}s){}",
                run.state,
                run.seconds.unwrap_or(0.0),
                clock.elapsed().as_secs_f64(),
                run.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
        (self.progress)(&format!(
            "run {} {} in {:.1}s",
            run.id,
            run.state,
            run.seconds.unwrap_or(0.0)
        ));
        Ok(Outcome {
            run_id: run.id.clone(),
            state: run.state,
            error: run.error.clone(),
            waiting: vec![],
            seconds: run.seconds.unwrap_or(0.0),
        })
    }

    /// Every attempt of one step: retries with doubling backoff; the step's row is
    /// written at each attempt's start.
    #[allow(clippy::too_many_arguments)]
    fn attempts(
        &self,
        book: &Runbook,
        step: &Step,
        run_id: &str,
        mode: DrMode,
        outputs: BTreeMap<String, BTreeMap<String, String>>,
        redactor: &Redactor,
        point: &std::sync::Mutex<Option<String>>,
        choice: &PointChoice,
    ) -> (Result<Done, Failed>, u32) {
        let into = book.into.clone();
        let render = |t: &Template| -> Result<String, String> {
            t.render(&|v| match v {
                Var::Tenant => Some(book.tenant.clone()),
                Var::Into => Some(into.clone()),
                Var::RunId => Some(run_id.to_string()),
                Var::Env(n) => std::env::var(n).ok().inspect(|val| redactor.add(val)),
                Var::Step { step, key } => outputs.get(step).and_then(|o| o.get(key)).cloned(),
            })
            .map_err(|v| match &v {
                Var::Env(n) => format!("{v}: the environment variable {n} is not set"),
                Var::Step { step, key } => format!(
                    "{v}: step {step} did not output {key} (or failed with on-failure = continue)"
                ),
                _ => format!("{v} cannot be resolved"),
            })
        };
        let progress = self.progress.clone();
        let mut backoff = step.backoff;
        let mut n = 0;
        loop {
            n += 1;
            let ctx = Ctx {
                config: &self.config,
                run_id,
                mode,
                tenant: &book.tenant,
                into: &book.into,
                runbook: &book.name,
                drill_record: book.drill_record.as_deref(),
                point: point.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                choice: choice.clone(),
                redactor,
                render: &render,
                progress: &*progress,
            };
            let mut row = self
                .catalog
                .dr_steps(run_id)
                .ok()
                .and_then(|v| v.into_iter().find(|s| s.step == step.name));
            if let Some(r) = row.as_mut() {
                r.attempts = n;
                let _ = self.catalog.set_dr_step(r);
            }
            self.audit(
                run_id,
                Some(&step.name),
                "step-started",
                &format!(
                    "attempt {n} of {}, {} step, timeout {}",
                    step.retries + 1,
                    step.kind.name(),
                    haven_sources::process::format_span(step.timeout)
                ),
            );
            (progress)(&format!(
                "{}: started ({}, attempt {n})",
                step.name,
                step.kind.name()
            ));
            let result = steps::attempt(&ctx, step, step.timeout);
            if let Ok(done) = &result {
                if let Some(p) = done
                    .outputs
                    .get("point")
                    .filter(|_| matches!(step.kind, StepKind::Restore(_)))
                {
                    *point.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                }
            }
            match result {
                Err(f) if n <= step.retries => {
                    let msg = redactor.redact(&f.message);
                    self.audit(
                        run_id,
                        Some(&step.name),
                        "step-retry",
                        &format!(
                            "attempt {n} failed: {msg}; next in {}",
                            haven_sources::process::format_span(backoff)
                        ),
                    );
                    (progress)(&format!(
                        "{}: attempt {n} failed ({msg}); retrying in {}",
                        step.name,
                        haven_sources::process::format_span(backoff)
                    ));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(3600));
                }
                r => return (r, n),
            }
        }
    }

    /// A drill removes what it made: the drill record of every dns step (the restore's
    /// scratch targets are removed by `verify_tenant` itself).
    fn clean_drill(&self, run: &DrRun, book: &Runbook, redactor: &Redactor) {
        let Some(record) = &book.drill_record else {
            return;
        };
        for step in &book.steps {
            let StepKind::Dns(d) = &step.kind else {
                continue;
            };
            let result = steps::provider(d, redactor, Duration::from_secs(30)).and_then(|p| {
                p.delete(record, steps::record_type(d.rtype))
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(()) => self.audit(
                    &run.id,
                    Some(&step.name),
                    "drill-cleaned",
                    &format!("drill record {record} {} deleted", d.rtype.as_str()),
                ),
                Err(e) => {
                    let msg = redactor.redact(&e);
                    self.audit(&run.id, Some(&step.name), "drill-clean-failed", &msg);
                    (self.progress)(&format!("warning: the drill record {record} could not be deleted: {msg}; delete it by hand"));
                }
            }
        }
    }
}

fn short(v: &str) -> String {
    let one: String = v.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}
