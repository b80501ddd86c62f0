//! `haven dr report [TENANT]`: the readiness of every tenant (or one) from the daemon's
//! catalog (`[daemon] state-dir`), after re-reading each tenant's recovery points from its
//! repository (unless `--offline`, or the repository cannot be reached: then the
//! catalog's cached points, with a warning). Exit codes: 0 every tenant ready, 3 one is
//! not (the report says why), 1 nothing could be reported.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use haven_ops::plan::format_span;
use haven_ops::readiness::{self, TenantReadiness};
use haven_ops::report::human_bytes;
use haven_ops::Config;

use crate::cli::{DrReportArgs, Global};

pub fn run(g: &Global, a: DrReportArgs) -> Result<i32> {
    let config = super::tenant::load(&a.config)?;
    if let Some(t) = &a.tenant {
        config.tenant(t)?;
    }
    let catalog = readiness::open_catalog(&config).context("opening the daemon's catalog")?;
    if !a.offline {
        for name in config.tenants.keys() {
            if a.tenant.as_ref().is_some_and(|t| t != name) {
                continue;
            }
            if let Err(e) = refresh(&config, &catalog, name) {
                eprintln!(
                    "haven: warning: tenant {name}: cannot read its recovery points from the repository ({e}); using the catalog's"
                );
            }
        }
    }
    let report = readiness::report(&config, &catalog, Utc::now(), a.tenant.as_deref())?;
    if g.json {
        crate::output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet {
        for t in &report {
            print!("{}", render(t, Utc::now()));
        }
    }
    Ok(if report.iter().all(|t| t.ready) { 0 } else { 3 })
}

/// Re-read a tenant's points from its repository into the catalog.
fn refresh(config: &Config, catalog: &haven_ops::catalog::Catalog, tenant: &str) -> Result<()> {
    let t = config.tenant(tenant)?;
    let (repo, _) = haven_ops::open_repository_as(
        config.repository_of(t),
        false,
        haven_ops::location::SiteAccess::Reading,
    )?;
    let view = haven_repo::read::ReadView::open(repo)?;
    catalog.rebuild_points(&view, tenant)?;
    Ok(())
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn span(seconds: f64) -> String {
    format_span(Duration::from_secs(seconds.max(0.0) as u64))
}

/// One tenant as text lines.
fn render(t: &TenantReadiness, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{}: {}\n",
        t.tenant,
        if t.ready { "READY" } else { "NOT READY" }
    );
    let line = |out: &mut String, label: &str, value: String| {
        *out += &format!("  {label:<16} {value}\n");
    };
    line(
        &mut out,
        "newest point",
        match &t.newest_point {
            Some(p) => format!(
                "{} taken {} ({} ago, {})",
                p.id,
                when(p.time),
                span((now - p.time).num_seconds() as f64),
                human_bytes(p.bytes)
            ),
            None => "none".into(),
        },
    );
    line(
        &mut out,
        "proven point",
        match &t.newest_verified {
            Some(p) => format!(
                "{} taken {}, proven by {} {} at {}",
                p.point,
                when(p.point_time),
                match p.kind {
                    readiness::ProofKind::Drill => "drill",
                    readiness::ProofKind::Verify => "verify job",
                },
                if p.by.is_empty() { "(by hand)" } else { &p.by },
                when(p.time)
            ),
            None => "none (no passed verify or succeeded drill)".into(),
        },
    );
    line(
        &mut out,
        "verified RPO",
        match t.verified_rpo_seconds {
            Some(s) => format!("{} (target {})", span(s), span(t.rpo_target_seconds as f64)),
            None => "unknown".into(),
        },
    );
    line(
        &mut out,
        "predicted RTO",
        t.predicted_rto
            .as_ref()
            .map(|p| p.describe())
            .unwrap_or_else(|| {
                "unknown: no drill and no verify yet (`haven dr drill RUNBOOK`)".into()
            }),
    );
    line(
        &mut out,
        "last drill",
        match &t.last_drill {
            Some(d) => format!(
                "{} of {} {} at {}{}{}",
                d.run,
                d.runbook,
                d.state,
                when(d.started),
                d.seconds
                    .map(|s| format!(" in {s:.1} s"))
                    .unwrap_or_default(),
                d.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => "none".into(),
        },
    );
    for rb in &t.runbooks {
        line(
            &mut out,
            &format!("runbook {}", rb.name),
            format!(
                "into {}; rto {}; predicted {}{}{}",
                rb.into,
                rb.rto_target_seconds
                    .map(|s| span(s as f64))
                    .unwrap_or_else(|| "not set".into()),
                rb.predicted_rto
                    .as_ref()
                    .map(|p| format!("{:.0} s", p.seconds()))
                    .unwrap_or_else(|| "unknown".into()),
                if rb.rto_exceeded { " (EXCEEDED)" } else { "" },
                rb.drill_schedule
                    .as_deref()
                    .map(|s| format!("; drills {s}"))
                    .unwrap_or_default()
            ),
        );
    }
    for p in &t.problems {
        out += &format!("  problem: {p}\n");
    }
    out
}
