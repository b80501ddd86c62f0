//! How the daemon and the API start disaster-recovery runs and drills without knowing the
//! runbook engine: [`DrRunner`], implemented by the `haven` binary over crate haven-dr
//! (the engine sits above this crate). The daemon calls it on each runbook's
//! `drill-schedule` (job kind `drill`) and for `POST /api/v1/runbooks/{name}/run|drill`.
//!
//! ```text
//! daemon drill job / API ──DrRunner::drill|run(config, runbook, options, started)──> engine
//!   engine: run row written ──started(run id)──> (the API answers 202 with it)
//!           steps ... ──> dr_runs.state, seconds ──> returns the run id
//! daemon: dr_runs row ──> job outcome, drill / RTO alerts
//! ```

use crate::config::Config;
use crate::OpsError;

/// What a run is asked to do besides its runbook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The recovery point (id, unique prefix or `label:NAME`; default: the newest complete one).
    pub point: Option<String>,
    /// Check everything, change nothing (`run` only).
    pub dry_run: bool,
    /// Who asked, for the audit log: e.g. `haven-daemon (drill-schedule)`, `api`.
    pub actor: String,
}

/// Starts runs of the config's runbooks. Both methods block until the run has ended
/// (succeeded, failed, aborted, or stopped waiting for a decision) and return its id;
/// the outcome is in the catalog's `dr_runs` row. `started` is called once, with the run
/// id, as soon as the run is in the catalog (before its first step). An `Err` means the
/// run could not start (unknown runbook, no such point, a run of it already in progress)
/// or its state could not be kept.
pub trait DrRunner: Send + Sync {
    /// The runbook against scratch targets and its drill record; everything created is
    /// removed afterwards.
    fn drill(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError>;

    /// The runbook for real (or as a dry run).
    fn run(
        &self,
        config: &Config,
        runbook: &str,
        options: &RunOptions,
        started: &dyn Fn(&str),
    ) -> Result<String, OpsError>;
}
