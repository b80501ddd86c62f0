//! The daemon's runbook engine: [`EngineRunner`] implements haven-ops' `DrRunner` over
//! haven-dr (which sits above haven-ops, so the daemon cannot call it directly; see ADR
//! 0017). Each call opens the daemon's catalog (another connection to the same SQLite
//! file), starts the run with `Dr::start` on a thread of its own, and reports the run id
//! through `started` as soon as the engine has recorded the run (the engine's progress
//! line `run ID started`), so the API can answer 202 at once.

use std::sync::mpsc;
use std::sync::Mutex;

use haven_dr::{Dr, StartOptions};
use haven_ops::catalog::DrMode;
use haven_ops::dr_runner::{DrRunner, RunOptions};
use haven_ops::point::PointChoice;
use haven_ops::{Config, OpsError};

/// Runs runbooks with haven-dr's engine.
#[derive(Debug, Default)]
pub struct EngineRunner;

impl EngineRunner {
    fn start(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        mode: DrMode,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError> {
        let catalog = haven_ops::readiness::open_catalog(config)?;
        let (tx, rx) = mpsc::channel::<String>();
        // Sent once, on the engine's first line; dropped with the engine when the start
        // fails before it, which ends the wait below.
        let tx = Mutex::new(Some(tx));
        let dr = Dr::new(config.clone(), catalog).with_progress(move |line: &str| {
            if let Some(id) = line
                .strip_prefix("run ")
                .and_then(|rest| rest.split_once(" started"))
                .map(|(id, _)| id.to_string())
            {
                if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(id);
                }
            }
        });
        let opts = StartOptions {
            point: options
                .point
                .as_deref()
                .map_or(PointChoice::Latest, PointChoice::parse),
            mode: Some(mode),
            run_id: None,
            actor: (!options.actor.is_empty()).then(|| options.actor.clone()),
        };
        let runbook = runbook.to_string();
        std::thread::scope(|s| {
            let engine = s.spawn(move || dr.start(&runbook, &opts));
            if let Ok(id) = rx.recv() {
                started(&id);
            }
            match engine.join() {
                Ok(Ok(outcome)) => Ok(outcome.run_id),
                Ok(Err(haven_dr::DrError::Ops(e))) => Err(e),
                Ok(Err(e)) => Err(OpsError::Invalid(e.to_string())),
                Err(_) => Err(OpsError::Invalid(
                    "the runbook engine panicked; see the daemon's stderr".into(),
                )),
            }
        })
    }
}

impl DrRunner for EngineRunner {
    fn drill(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError> {
        self.start(config, runbook, options, DrMode::Drill, started)
    }

    fn run(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError> {
        let mode = if options.dry_run {
            DrMode::DryRun
        } else {
            DrMode::Run
        };
        self.start(config, runbook, options, mode, started)
    }
}
