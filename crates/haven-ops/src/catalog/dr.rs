//! Disaster-recovery runs in the catalog (schema v3: `dr_runs`, `dr_steps`, `dr_audit`).
//! The engine (crate `haven-dr`) writes a step's row before it starts and after it ends,
//! so a run killed with `kill -9` is found with its steps' states and resumed.
//!
//! ```text
//! create_dr_run (run + every step pending) ──set_dr_step (running / succeeded / ...)──>
//! set_dr_run (state, error, finished) ; append_dr_audit at every event
//! ```
//! A run's row is scoped like every tenant's row: `repo` is the bound repository of its
//! tenant (`''` when unbound).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{opt_time_at, scope, text_at, time_at, ts, Catalog, CatalogError};

text_enum!(
    /// What a run does.
    DrMode {
        /// A real failover: changes `into`'s servers and DNS, then adopts.
        Run = "run",
        /// Against scratch targets and a drill record; everything removed after.
        Drill = "drill",
        /// Checks only; changes nothing.
        DryRun = "dry-run",
    }
);

text_enum!(
    /// Where a run is in its life.
    DrRunState {
        Running = "running",
        /// A step was interrupted and cannot be re-run safely: `resume --retry-step` or
        /// `--skip-step` decides.
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
        Aborted = "aborted",
    }
);

text_enum!(
    /// Where a step is in its life.
    DrStepState {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Not run: by decision, or because the run stopped before it.
        Skipped = "skipped",
        /// It was running when its run was killed.
        Interrupted = "interrupted",
    }
);

impl DrRunState {
    pub fn is_final(self) -> bool {
        matches!(self, DrRunState::Succeeded | DrRunState::Aborted)
    }
}

/// One run of a runbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrRun {
    pub id: String,
    pub runbook: String,
    pub tenant: String,
    pub into_tenant: String,
    pub mode: DrMode,
    pub point: Option<String>,
    pub state: DrRunState,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// Start to the last step's end: the measured RTO.
    pub seconds: Option<f64>,
    /// `user@host`.
    pub actor: String,
    /// The process running it now (None: nobody).
    pub owner_pid: Option<u32>,
    pub error: Option<String>,
    /// The runbook as resolved when the run started.
    pub plan: serde_json::Value,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrStep {
    pub run_id: String,
    pub step: String,
    pub state: DrStepState,
    pub attempts: u32,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub seconds: Option<f64>,
    pub outputs: BTreeMap<String, String>,
    pub message: Option<String>,
}

/// One line of a run's audit log (secrets already redacted by the writer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrAudit {
    pub id: i64,
    pub run_id: String,
    pub time: DateTime<Utc>,
    pub step: Option<String>,
    pub event: String,
    pub detail: String,
}

const RUN_COLUMNS: &str = "id, runbook, tenant, into_tenant, mode, point, state, started, \
     finished, seconds, actor, owner_pid, error, plan";
const STEP_COLUMNS: &str =
    "run_id, step, state, attempts, started, finished, seconds, outputs, message";

fn run_from(row: &Row) -> rusqlite::Result<DrRun> {
    let plan: String = row.get(13)?;
    Ok(DrRun {
        id: row.get(0)?,
        runbook: row.get(1)?,
        tenant: row.get(2)?,
        into_tenant: row.get(3)?,
        mode: text_at(row, 4, DrMode::parse)?,
        point: row.get(5)?,
        state: text_at(row, 6, DrRunState::parse)?,
        started: time_at(row, 7)?,
        finished: opt_time_at(row, 8)?,
        seconds: row.get(9)?,
        actor: row.get(10)?,
        owner_pid: row.get::<_, Option<i64>>(11)?.map(|p| p as u32),
        error: row.get(12)?,
        plan: serde_json::from_str(&plan).unwrap_or(serde_json::Value::Null),
    })
}

fn step_from(row: &Row) -> rusqlite::Result<DrStep> {
    let outputs: String = row.get(7)?;
    Ok(DrStep {
        run_id: row.get(0)?,
        step: row.get(1)?,
        state: text_at(row, 2, DrStepState::parse)?,
        attempts: row.get::<_, i64>(3)? as u32,
        started: opt_time_at(row, 4)?,
        finished: opt_time_at(row, 5)?,
        seconds: row.get(6)?,
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        message: row.get(8)?,
    })
}

impl Catalog {
    /// Record a new run (state running, owned by `run.owner_pid`) and its steps, all
    /// pending, in one transaction.
    pub fn create_dr_run(&self, run: &DrRun, steps: &[&str]) -> Result<(), CatalogError> {
        self.run(|c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO dr_runs ({RUN_COLUMNS}, repo) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, {})",
                    scope("?3")
                ),
                params![
                    run.id,
                    run.runbook,
                    run.tenant,
                    run.into_tenant,
                    run.mode.as_str(),
                    run.point,
                    run.state.as_str(),
                    ts(run.started),
                    run.finished.map(ts),
                    run.seconds,
                    run.actor,
                    run.owner_pid.map(i64::from),
                    run.error,
                    run.plan.to_string()
                ],
            )?;
            for s in steps {
                tx.execute(
                    "INSERT INTO dr_steps (run_id, step, state) VALUES (?1, ?2, 'pending')",
                    params![run.id, s],
                )?;
            }
            tx.commit()
        })
    }

    /// The run `id` (any repository: run ids are unique).
    pub fn dr_run(&self, id: &str) -> Result<Option<DrRun>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM dr_runs WHERE id = ?1"),
                params![id],
                run_from,
            )
            .optional()
        })
    }

    /// Runs, newest first; only of `runbook` when given.
    pub fn dr_runs(&self, runbook: Option<&str>, limit: usize) -> Result<Vec<DrRun>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM dr_runs WHERE ?1 IS NULL OR runbook = ?1 \
                 ORDER BY started DESC, id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![runbook, limit as i64], run_from)?;
            rows.collect()
        })
    }

    /// A tenant's runs of one mode on its bound repository, newest first (e.g. its drills).
    pub fn dr_runs_of_tenant(
        &self,
        tenant: &str,
        mode: DrMode,
        limit: usize,
    ) -> Result<Vec<DrRun>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM dr_runs WHERE tenant = ?1 AND mode = ?2 AND repo = {} \
                 ORDER BY started DESC, id DESC LIMIT ?3",
                scope("?1")
            ))?;
            let rows = st.query_map(params![tenant, mode.as_str(), limit as i64], run_from)?;
            rows.collect()
        })
    }

    /// Write a run's changing fields: state, point, finished, seconds, owner, error.
    pub fn set_dr_run(&self, run: &DrRun) -> Result<(), CatalogError> {
        let n = self.run(|c| {
            c.execute(
                "UPDATE dr_runs SET state = ?2, point = ?3, finished = ?4, seconds = ?5, \
                 owner_pid = ?6, error = ?7 WHERE id = ?1",
                params![
                    run.id,
                    run.state.as_str(),
                    run.point,
                    run.finished.map(ts),
                    run.seconds,
                    run.owner_pid.map(i64::from),
                    run.error
                ],
            )
        })?;
        if n == 0 {
            return Err(self.invalid(format!("no disaster-recovery run {}", run.id)));
        }
        Ok(())
    }

    /// The run's state only (the engine polls it to see an abort from another process).
    pub fn dr_run_state(&self, id: &str) -> Result<Option<DrRunState>, CatalogError> {
        self.run(|c| {
            c.query_row(
                "SELECT state FROM dr_runs WHERE id = ?1",
                params![id],
                |r| text_at(r, 0, DrRunState::parse),
            )
            .optional()
        })
    }

    /// The steps of a run (in the order they were created).
    pub fn dr_steps(&self, run_id: &str) -> Result<Vec<DrStep>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {STEP_COLUMNS} FROM dr_steps WHERE run_id = ?1 ORDER BY rowid"
            ))?;
            let rows = st.query_map(params![run_id], step_from)?;
            rows.collect()
        })
    }

    /// Write one step's row.
    pub fn set_dr_step(&self, s: &DrStep) -> Result<(), CatalogError> {
        let outputs = serde_json::to_string(&s.outputs).expect("strings serialize");
        self.run(|c| {
            c.execute(
                "INSERT INTO dr_steps (run_id, step, state, attempts, started, finished, seconds, outputs, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (run_id, step) DO UPDATE SET state = ?3, attempts = ?4, started = ?5, \
                 finished = ?6, seconds = ?7, outputs = ?8, message = ?9",
                params![
                    s.run_id,
                    s.step,
                    s.state.as_str(),
                    s.attempts as i64,
                    s.started.map(ts),
                    s.finished.map(ts),
                    s.seconds,
                    outputs,
                    s.message
                ],
            )
        })?;
        Ok(())
    }

    /// Append to a run's audit log; `detail` must already be redacted.
    pub fn append_dr_audit(
        &self,
        run_id: &str,
        step: Option<&str>,
        event: &str,
        detail: &str,
    ) -> Result<(), CatalogError> {
        let now = self.now();
        self.run(|c| {
            c.execute(
                "INSERT INTO dr_audit (run_id, time, step, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, now, step, event, detail],
            )
        })?;
        Ok(())
    }

    /// A run's audit log, oldest first.
    pub fn dr_audit(&self, run_id: &str) -> Result<Vec<DrAudit>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT id, run_id, time, step, event, detail FROM dr_audit WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(DrAudit {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    time: time_at(r, 2)?,
                    step: r.get(3)?,
                    event: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }
}
