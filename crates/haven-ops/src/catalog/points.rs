//! Recovery points (recorded or rebuilt from the repository) and verify results.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use haven_repo::read::ReadView;

use super::{json_at, scope, text_at, time_at, ts, Catalog, CatalogError, JobId, PointSource};
use crate::point::{ComponentRecord, PointStatus, RecoveryPoint};

/// A recovery point as cached in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogPoint {
    pub tenant: String,
    pub id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub status: PointStatus,
    pub components: BTreeMap<String, ComponentRecord>,
    pub bytes: u64,
    pub bytes_added: u64,
    pub seconds: f64,
    pub source: PointSource,
}

/// A verify drill's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyRecord {
    pub job: Option<JobId>,
    pub tenant: String,
    pub point: String,
    pub time: DateTime<Utc>,
    pub passed: bool,
    /// The measured restore time of the tenant (RTO).
    pub restore_seconds: f64,
    /// The verify report (e.g. a serialised `TenantReport`).
    pub report: serde_json::Value,
}

/// What [`Catalog::rebuild_points`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildSummary {
    pub points: usize,
    /// Manifests that could not be read: (manifest snapshot, reason).
    pub damaged: Vec<(String, String)>,
}

fn point_status(s: &str) -> Option<PointStatus> {
    match s {
        "complete" => Some(PointStatus::Complete),
        "failed" => Some(PointStatus::Failed),
        _ => None,
    }
}

fn point_status_str(s: PointStatus) -> &'static str {
    match s {
        PointStatus::Complete => "complete",
        PointStatus::Failed => "failed",
    }
}

const POINT_COLUMNS: &str =
    "tenant, id, started, finished, status, components, bytes, bytes_added, seconds, source";

fn point_from(row: &Row) -> rusqlite::Result<CatalogPoint> {
    Ok(CatalogPoint {
        tenant: row.get(0)?,
        id: row.get(1)?,
        started: time_at(row, 2)?,
        finished: time_at(row, 3)?,
        status: text_at(row, 4, point_status)?,
        components: json_at(row, 5)?,
        bytes: row.get::<_, i64>(6)? as u64,
        bytes_added: row.get::<_, i64>(7)? as u64,
        seconds: row.get(8)?,
        source: text_at(row, 9, PointSource::parse)?,
    })
}

fn insert_point(
    conn: &Connection,
    point: &RecoveryPoint,
    source: PointSource,
) -> rusqlite::Result<()> {
    let (bytes, bytes_added) = point.sizes();
    let seconds = (point.finished - point.started).as_seconds_f64();
    let components = serde_json::to_string(&point.components).expect("components serialise");
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO points (tenant, repo, id, started, finished, status, \
             components, bytes, bytes_added, seconds, source) \
             VALUES (?1, {}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            scope("?1")
        ),
        params![
            point.tenant,
            point.id,
            ts(point.started),
            ts(point.finished),
            point_status_str(point.status),
            components,
            bytes as i64,
            bytes_added as i64,
            seconds,
            source.as_str()
        ],
    )?;
    Ok(())
}

const VERIFY_COLUMNS: &str = "job_id, tenant, point, time, passed, restore_seconds, report";

fn verify_from(row: &Row) -> rusqlite::Result<VerifyRecord> {
    Ok(VerifyRecord {
        job: row.get::<_, Option<i64>>(0)?.map(JobId),
        tenant: row.get(1)?,
        point: row.get(2)?,
        time: time_at(row, 3)?,
        passed: row.get(4)?,
        restore_seconds: row.get(5)?,
        report: json_at(row, 6)?,
    })
}

impl Catalog {
    /// Cache a recovery point (replacing a row with the same tenant and id).
    pub fn record_point(
        &self,
        point: &RecoveryPoint,
        source: PointSource,
    ) -> Result<(), CatalogError> {
        self.run(|c| insert_point(c, point, source))
    }

    /// A tenant's points, oldest first.
    pub fn points(&self, tenant: &str) -> Result<Vec<CatalogPoint>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {POINT_COLUMNS} FROM points WHERE tenant = ?1 AND repo = {} \
                 ORDER BY started, id",
                scope("?1")
            ))?;
            let rows = st.query_map([tenant], point_from)?;
            rows.collect()
        })
    }

    /// The newest complete (restorable) point of a tenant.
    pub fn latest_complete_point(
        &self,
        tenant: &str,
    ) -> Result<Option<CatalogPoint>, CatalogError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT {POINT_COLUMNS} FROM points WHERE tenant = ?1 AND repo = {} \
                     AND status = 'complete' ORDER BY started DESC, id DESC LIMIT 1",
                    scope("?1")
                ),
                [tenant],
                point_from,
            )
            .optional()
        })
    }

    /// Drop points from the cache (after retention forgot them in the repository).
    pub fn remove_points(&self, tenant: &str, ids: &[String]) -> Result<usize, CatalogError> {
        self.run(|c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for id in ids {
                n += tx.execute(
                    &format!(
                        "DELETE FROM points WHERE tenant = ?1 AND repo = {} AND id = ?2",
                        scope("?1")
                    ),
                    params![tenant, id],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// Replace the tenant's cached points with those listed from the repository (marked
    /// `rebuilt`). The repository is read before the catalog is locked.
    pub fn rebuild_points(
        &self,
        view: &ReadView,
        tenant: &str,
    ) -> Result<RebuildSummary, CatalogError> {
        let (listed, damaged) = crate::point::list_points(view, tenant)?;
        self.run(|c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!(
                    "DELETE FROM points WHERE tenant = ?1 AND repo = {}",
                    scope("?1")
                ),
                [tenant],
            )?;
            for p in &listed {
                insert_point(&tx, &p.point, PointSource::Rebuilt)?;
            }
            tx.commit()
        })?;
        Ok(RebuildSummary {
            points: listed.len(),
            damaged,
        })
    }

    // --- verifies --------------------------------------------------------------------

    pub fn record_verify(&self, v: &VerifyRecord) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                &format!(
                    "INSERT INTO verifies ({VERIFY_COLUMNS}, repo) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {})",
                    scope("?2")
                ),
                params![
                    v.job.map(|j| j.0),
                    v.tenant,
                    v.point,
                    ts(v.time),
                    v.passed,
                    v.restore_seconds,
                    v.report.to_string()
                ],
            )
        })?;
        Ok(())
    }

    /// A tenant's verify results, newest first.
    pub fn verifies(&self, tenant: &str, limit: usize) -> Result<Vec<VerifyRecord>, CatalogError> {
        self.run(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {VERIFY_COLUMNS} FROM verifies WHERE tenant = ?1 AND repo = {} \
                 ORDER BY time DESC, id DESC LIMIT ?2",
                scope("?1")
            ))?;
            let rows = st.query_map(
                params![tenant, limit.min(i64::MAX as usize) as i64],
                verify_from,
            )?;
            rows.collect()
        })
    }

    pub fn latest_verify(&self, tenant: &str) -> Result<Option<VerifyRecord>, CatalogError> {
        Ok(self.verifies(tenant, 1)?.into_iter().next())
    }
}
