//! `haven dr plan` and `haven dr run --dry-run`: what a run would do, checked without
//! changing anything. Per step: its variables resolve (a command's outputs are only
//! known once it ran: said so), its program is on PATH, the DNS server answers and
//! accepts the TSIG key ([`haven_dns::Provider::check`]), and the time it is predicted
//! to take (its last successful run's time; a restore before any run: the point's size
//! divided by the last verify's speed). The recovery point must exist and be complete.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use haven_ops::catalog::{DrMode, DrRun, DrRunState, DrStepState};
use haven_ops::point::{choose_point, list_points, PointChoice};
use haven_ops::runbook::{Runbook, StepKind, Var};

use crate::engine::{Dr, Outcome};
use crate::secrets::Redactor;
use crate::{steps, DrError};

/// One check: passed or not, and what was found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub name: String,
    pub kind: String,
    pub needs: Vec<String>,
    /// Seconds, when something measured predicts it.
    pub predicted_seconds: Option<f64>,
    pub checks: Vec<Check>,
}

/// What a run of the runbook would do now.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub runbook: String,
    pub tenant: String,
    pub into: String,
    pub point: Option<String>,
    pub point_bytes: Option<u64>,
    pub steps: Vec<PlanStep>,
}

impl Plan {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.checks.iter().all(|c| c.ok))
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "runbook {}: {} into {}; point {}{}\n",
            self.runbook,
            self.tenant,
            self.into,
            self.point.as_deref().unwrap_or("(none)"),
            self.point_bytes
                .map(|b| format!(" ({})", haven_ops::report::human_bytes(b)))
                .unwrap_or_default()
        );
        for s in &self.steps {
            out += &format!(
                "  {} ({}){}  predicted {}\n",
                s.name,
                s.kind,
                if s.needs.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", s.needs.join(", "))
                },
                s.predicted_seconds
                    .map(|t| format!("{t:.1}s"))
                    .unwrap_or_else(|| "unknown".into())
            );
            for c in &s.checks {
                out += &format!("    {} {}\n", if c.ok { "ok  " } else { "FAIL" }, c.detail);
            }
        }
        out
    }
}

fn on_path(program: &str, base: &Path) -> bool {
    if program.contains('/') {
        let p = if Path::new(program).is_absolute() {
            program.into()
        } else {
            base.join(program)
        };
        return p.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Check `book` for a run from `choice`; changes nothing.
pub fn plan(dr: &Dr, book: &Runbook, choice: &PointChoice) -> Result<Plan, DrError> {
    let redactor = Redactor::default();
    let base = dr
        .config
        .file
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut point = None;
    let mut point_bytes = None;
    let mut point_check = None;
    if book
        .steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::Restore(_)))
    {
        let found = (|| -> Result<_, haven_ops::OpsError> {
            let t = dr.config.tenant(&book.tenant)?;
            let (repo, _) = haven_ops::open_repository_as(
                dr.config.repository_of(t),
                false,
                haven_ops::location::SiteAccess::Reading,
            )?;
            let view = haven_repo::read::ReadView::open(repo)?;
            let (points, _) = list_points(&view, &book.tenant)?;
            choose_point(&points, &book.tenant, choice)
        })();
        point_check = Some(match found {
            Ok(p) => {
                point = Some(p.id.clone());
                point_bytes = Some(p.sizes().0);
                Check {
                    ok: true,
                    detail: format!(
                        "point {} of {} is complete ({} components)",
                        p.id,
                        p.started.format("%Y-%m-%d %H:%M:%S UTC"),
                        p.components.len()
                    ),
                }
            }
            Err(e) => Check {
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    // The last successful run of this runbook: its steps' measured times.
    let past = dr
        .catalog
        .dr_runs(Some(&book.name), 20)?
        .into_iter()
        .find(|r| r.state == DrRunState::Succeeded && r.mode != DrMode::DryRun);
    let past_steps = match &past {
        Some(r) => dr.catalog.dr_steps(&r.id)?,
        None => vec![],
    };
    let speed = dr.catalog.verifies(&book.tenant, 1)?.first().and_then(|v| {
        let bytes: u64 = v.report["components"]
            .as_array()?
            .iter()
            .filter_map(|c| c["bytes"].as_u64())
            .sum();
        (v.restore_seconds > 0.0 && bytes > 0).then(|| bytes as f64 / v.restore_seconds)
    });
    let mut steps_out = vec![];
    for step in book.order() {
        let mut checks = vec![];
        let ancestors = book.ancestors(&step.name);
        for t in step.kind.templates() {
            for v in t.vars() {
                match v {
                    Var::Env(n) => checks.push(match std::env::var(n) {
                        Ok(val) => {
                            redactor.add(&val);
                            Check {
                                ok: true,
                                detail: format!("{v} is set"),
                            }
                        }
                        Err(_) => Check {
                            ok: false,
                            detail: format!("{v}: the environment variable {n} is not set"),
                        },
                    }),
                    Var::Step { step: s, .. } if ancestors.contains(&s.as_str()) => {
                        checks.push(Check {
                            ok: true,
                            detail: format!("{v}: known once step {s} has run"),
                        })
                    }
                    _ => {}
                }
            }
        }
        let measured = past_steps
            .iter()
            .find(|s| s.step == step.name && s.state == DrStepState::Succeeded)
            .and_then(|s| s.seconds);
        let mut predicted = measured;
        match &step.kind {
            StepKind::Restore(_) => {
                if let Some(c) = &point_check {
                    checks.push(c.clone());
                }
                if predicted.is_none() {
                    predicted = point_bytes.zip(speed).map(|(b, s)| b as f64 / s);
                }
            }
            StepKind::Command(c) => {
                let program = c.run[0].source();
                if c.run[0].vars().next().is_some() {
                    checks.push(Check {
                        ok: true,
                        detail: format!(
                            "{program}: the program's name is known only when the run starts"
                        ),
                    });
                } else if on_path(program, &base) {
                    checks.push(Check {
                        ok: true,
                        detail: format!("{program} exists"),
                    });
                } else {
                    checks.push(Check {
                        ok: false,
                        detail: format!(
                            "{program} is not on PATH (nor relative to {})",
                            base.display()
                        ),
                    });
                }
            }
            StepKind::Sql(_) => checks.push(if on_path("psql", &base) {
                Check {
                    ok: true,
                    detail: "psql exists".into(),
                }
            } else {
                Check {
                    ok: false,
                    detail: "psql is not on PATH: install the PostgreSQL client".into(),
                }
            }),
            StepKind::Dns(d) => {
                let zone = match &d.provider {
                    haven_ops::runbook::DnsProvider::Rfc2136 { zone, .. } => zone.clone(),
                    haven_ops::runbook::DnsProvider::Cloudflare { zone, .. } => zone
                        .clone()
                        .unwrap_or_else(|| d.record.source().to_string()),
                };
                checks.push(
                    match steps::provider(d, &redactor, Duration::from_secs(10)).and_then(|p| {
                        p.check(&zone)
                            .map(|()| p.describe())
                            .map_err(|e| e.to_string())
                    }) {
                        Ok(desc) => Check {
                            ok: true,
                            detail: format!("{desc}: the server answers and accepts the key"),
                        },
                        Err(e) => Check {
                            ok: false,
                            detail: redactor.redact(&e),
                        },
                    },
                );
            }
            _ => {}
        }
        steps_out.push(PlanStep {
            name: step.name.clone(),
            kind: step.kind.name().to_string(),
            needs: step.needs.clone(),
            predicted_seconds: predicted,
            checks,
        });
    }
    Ok(Plan {
        runbook: book.name.clone(),
        tenant: book.tenant.clone(),
        into: book.into.clone(),
        point,
        point_bytes,
        steps: steps_out,
    })
}

/// A dry run: the plan's checks recorded as a run of mode dry-run (each step succeeded
/// when its checks passed, else failed); nothing else changes.
pub(crate) fn dry_run(
    dr: &Dr,
    book: &Runbook,
    mut run: DrRun,
    choice: &PointChoice,
) -> Result<Outcome, DrError> {
    let p = plan(dr, book, choice)?;
    for s in &p.steps {
        let ok = s.checks.iter().all(|c| c.ok);
        let detail = s
            .checks
            .iter()
            .map(|c| format!("{}{}", if c.ok { "" } else { "FAIL: " }, c.detail))
            .collect::<Vec<_>>()
            .join("; ");
        let row = haven_ops::catalog::DrStep {
            run_id: run.id.clone(),
            step: s.name.clone(),
            state: if ok {
                DrStepState::Succeeded
            } else {
                DrStepState::Failed
            },
            attempts: 0,
            started: None,
            finished: None,
            seconds: s.predicted_seconds,
            outputs: Default::default(),
            message: Some(detail.clone()),
        };
        dr.catalog.set_dr_step(&row)?;
        dr.audit(
            &run.id,
            Some(&s.name),
            if ok { "check-passed" } else { "check-failed" },
            &detail,
        );
        (dr.progress)(&format!(
            "{}: {} {detail}",
            s.name,
            if ok { "ok" } else { "FAIL" }
        ));
    }
    run.point = p.point.clone();
    run.state = if p.ok() {
        DrRunState::Succeeded
    } else {
        DrRunState::Failed
    };
    run.error = (!p.ok()).then(|| "some checks failed".to_string());
    run.finished = Some(Utc::now());
    run.owner_pid = None;
    run.seconds = Some(0.0);
    dr.catalog.set_dr_run(&run)?;
    dr.audit(
        &run.id,
        None,
        "run-finished",
        &format!("dry run {}", run.state),
    );
    Ok(Outcome {
        run_id: run.id,
        state: run.state,
        error: run.error,
        waiting: vec![],
        seconds: 0.0,
    })
}
