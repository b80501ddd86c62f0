//! Reads for the readiness report and the API's view of disaster-recovery runs: proofs of
//! recovery points (passed verifies and succeeded drills), measured restore speeds, and the
//! `dr_runs` / `dr_steps` / `dr_audit` tables (v3) as plain summaries. Read only: the
//! runbook engine (crate haven-dr) writes those tables.
//!
//! Every query is confined to the tenant's bound repository like the rest of the catalog
//! (`scope`); a run's row carries its tenant's repository.

use rusqlite::{params, OptionalExtension, Row};

use super::{json_at, opt_time_at, scope, time_at, Catalog, CatalogError};
use crate::readiness::{DrAuditLine, DrRunDetail, DrRunSummary, DrStepSummary, Proof, ProofKind};

const RUN_COLUMNS: &str =
    "id, runbook, tenant, into_tenant, mode, point, state, started, finished, seconds, actor, error";

fn run_from(row: &Row) -> rusqlite::Result<DrRunSummary> {
    Ok(DrRunSummary {
        id: row.get(0)?,
        runbook: row.get(1)?,
        tenant: row.get(2)?,
        into: row.get(3)?,
        mode: row.get(4)?,
        point: row.get(5)?,
        state: row.get(6)?,
        started: time_at(row, 7)?,
        finished: opt_time_at(row, 8)?,
        seconds: row.get(9)?,
        actor: row.get(10)?,
        error: row.get(11)?,
    })
}

/// Newest first; `None` for no filter.
#[derive(Debug, Clone, Default)]
pub struct DrRunFilter {
    pub tenant: Option<String>,
    pub runbook: Option<String>,
    /// `run`, `drill`, `dry-run`.
    pub mode: Option<String>,
    /// `running`, `waiting`, `succeeded`, `failed`, `aborted`.
    pub state: Option<String>,
    pub limit: usize,
}

impl Catalog {
    /// Disaster-recovery runs matching `filter`, newest first.
    pub fn dr_run_summaries(
        &self,
        filter: &DrRunFilter,
    ) -> Result<Vec<DrRunSummary>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM dr_runs WHERE (?1 IS NULL OR tenant = ?1) \
                 AND (?2 IS NULL OR runbook = ?2) AND (?3 IS NULL OR mode = ?3) \
                 AND (?4 IS NULL OR state = ?4) AND repo = {} \
                 ORDER BY started DESC, id DESC LIMIT ?5",
                scope("dr_runs.tenant")
            ))?;
            let rows = st.query_map(
                params![
                    filter.tenant,
                    filter.runbook,
                    filter.mode,
                    filter.state,
                    filter.limit.min(i64::MAX as usize) as i64
                ],
                run_from,
            )?;
            rows.collect()
        })
    }

    /// One run with its steps (in the order they started; pending ones last) and its
    /// audit log.
    pub fn dr_run_detail(&self, id: &str) -> Result<Option<DrRunDetail>, CatalogError> {
        self.run(|c| {
            let run = c
                .query_row(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM dr_runs WHERE id = ?1 AND repo = {}",
                        scope("dr_runs.tenant")
                    ),
                    [id],
                    run_from,
                )
                .optional()?;
            let Some(run) = run else { return Ok(None) };
            let mut st = c.prepare(
                "SELECT step, state, attempts, started, finished, seconds, outputs, message \
                 FROM dr_steps WHERE run_id = ?1 \
                 ORDER BY started IS NULL, started, step",
            )?;
            let steps = st
                .query_map([id], |r| {
                    Ok(DrStepSummary {
                        name: r.get(0)?,
                        state: r.get(1)?,
                        attempts: r.get(2)?,
                        started: opt_time_at(r, 3)?,
                        finished: opt_time_at(r, 4)?,
                        seconds: r.get(5)?,
                        outputs: json_at(r, 6)?,
                        message: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT time, step, event, detail FROM dr_audit WHERE run_id = ?1 ORDER BY id",
            )?;
            let audit = st
                .query_map([id], |r| {
                    Ok(DrAuditLine {
                        time: time_at(r, 0)?,
                        step: r.get(1)?,
                        event: r.get(2)?,
                        detail: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(DrRunDetail { run, steps, audit }))
        })
    }

    /// The newest point of `tenant` (by the time it was taken) that a passed verify or a
    /// succeeded drill restored. Points no longer in the catalog (forgotten by retention)
    /// do not count: they cannot be restored any more.
    pub fn newest_proven_point(&self, tenant: &str) -> Result<Option<Proof>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT p.id, p.started, x.how, x.by, x.time FROM ( \
                       SELECT point, 'drill' AS how, id AS by, coalesce(finished, started) AS time \
                       FROM dr_runs WHERE tenant = ?1 AND repo = {s} AND mode = 'drill' \
                         AND state = 'succeeded' AND point IS NOT NULL \
                       UNION ALL \
                       SELECT point, 'verify', coalesce(CAST(job_id AS TEXT), ''), time \
                       FROM verifies WHERE tenant = ?1 AND repo = {s} AND passed \
                     ) x JOIN points p ON p.tenant = ?1 AND p.repo = {s} AND p.id = x.point \
                         AND p.status = 'complete' \
                     ORDER BY p.started DESC, x.time DESC LIMIT 1",
                    s = scope("?1")
                ),
                [tenant],
                |r| {
                    let how: String = r.get(2)?;
                    Ok(Proof {
                        point: r.get(0)?,
                        point_time: time_at(r, 1)?,
                        kind: if how == "drill" {
                            ProofKind::Drill
                        } else {
                            ProofKind::Verify
                        },
                        by: r.get(3)?,
                        time: time_at(r, 4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// (bytes restored, seconds) of the newest `limit` passed verifies of `tenant`: the
    /// measured restore speed. The bytes are the verify report's per component, else the
    /// point's size.
    pub fn restore_samples(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<(u64, f64)>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT v.restore_seconds, v.report, p.bytes FROM verifies v \
                 LEFT JOIN points p ON p.tenant = v.tenant AND p.repo = v.repo AND p.id = v.point \
                 WHERE v.tenant = ?1 AND v.repo = {} AND v.passed AND v.restore_seconds > 0 \
                 ORDER BY v.time DESC, v.id DESC LIMIT ?2",
                scope("?1")
            ))?;
            let rows = st.query_map(params![tenant, limit.min(i64::MAX as usize) as i64], |r| {
                let seconds: f64 = r.get(0)?;
                let report: String = r.get(1)?;
                let point_bytes: Option<i64> = r.get(2)?;
                Ok((
                    report_bytes(&report).or(point_bytes.map(|b| b as u64)),
                    seconds,
                ))
            })?;
            let samples = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(samples
                .into_iter()
                .filter_map(|(b, s)| b.filter(|b| *b > 0).map(|b| (b, s)))
                .collect())
        })
    }
}

/// The bytes a verify report says it restored (sum over its components).
fn report_bytes(report: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(report).ok()?;
    let sum = v
        .get("components")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("bytes").and_then(|b| b.as_u64()))
        .sum::<u64>();
    (sum > 0).then_some(sum)
}
