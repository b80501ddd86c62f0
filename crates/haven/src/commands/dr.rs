//! `haven dr plan|run|status|resume|abort|drill|release`: thin wrappers over `haven_dr`.
//! Progress lines go to stderr as they happen; the result (run id, state, table or
//! JSON) to stdout. Exit codes: 0 the run succeeded (plan: every check passed); 3 it
//! failed, was aborted or waits for a decision; 1 nothing could be done.
//! (`haven dr report` belongs to the readiness view.)

use anyhow::{Context, Result};

use haven_dr::{check, Decision, Dr, Outcome, StartOptions};
use haven_ops::catalog::{DrMode, DrRunState};

use crate::cli::{ConfigArg, DrCommand, Global};
use crate::commands::tenant::{load, point_choice};

fn engine(g: &Global, arg: &ConfigArg) -> Result<Dr> {
    let config = load(arg)?;
    let catalog = haven_dr::open_catalog(&config)?;
    let dr = Dr::new(config, catalog);
    Ok(if g.quiet || g.json {
        dr
    } else {
        dr.with_progress(|l| eprintln!("haven: {l}"))
    })
}

pub fn run(g: &Global, cmd: DrCommand) -> Result<i32> {
    match cmd {
        DrCommand::Report(a) => super::dr_report::run(g, a),
        DrCommand::Plan {
            runbook,
            point,
            config,
        } => {
            let dr = engine(g, &config)?;
            let book = dr.config.runbooks.get(&runbook).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "no runbook {runbook:?} in {}; add a [runbooks.{runbook}] table",
                    dr.config.file.display()
                )
            })?;
            let plan = check::plan(&dr, &book, &point_choice(&point)?)?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.render());
            }
            Ok(if plan.ok() { 0 } else { 3 })
        }
        DrCommand::Run {
            runbook,
            point,
            dry_run,
            config,
        } => {
            let dr = engine(g, &config)?;
            let opts = StartOptions {
                point: point_choice(&point)?,
                mode: Some(if dry_run { DrMode::DryRun } else { DrMode::Run }),
                run_id: Some(announce(g)),
                ..Default::default()
            };
            finish(
                g,
                &dr,
                dr.start(&runbook, &opts)
                    .with_context(|| format!("runbook {runbook}"))?,
            )
        }
        DrCommand::Drill {
            runbook,
            point,
            config,
        } => {
            let dr = engine(g, &config)?;
            let opts = StartOptions {
                point: point_choice(&point)?,
                mode: Some(DrMode::Drill),
                ..Default::default()
            };
            finish(
                g,
                &dr,
                dr.start(&runbook, &opts)
                    .with_context(|| format!("runbook {runbook}"))?,
            )
        }
        DrCommand::Resume {
            run,
            retry,
            skip,
            config,
        } => {
            let dr = engine(g, &config)?;
            let decisions: Vec<Decision> = retry
                .into_iter()
                .map(Decision::Retry)
                .chain(skip.into_iter().map(Decision::Skip))
                .collect();
            finish(
                g,
                &dr,
                dr.resume(&run, &decisions)
                    .with_context(|| format!("run {run}"))?,
            )
        }
        DrCommand::Abort { run, config } => {
            let dr = engine(g, &config)?;
            let r = dr.abort(&run)?;
            println!("run {} {}", r.id, r.state);
            Ok(0)
        }
        DrCommand::Status { run, config } => status(g, &engine(g, &config)?, run.as_deref()),
        DrCommand::Release { tenant, config } => {
            let dr = engine(g, &config)?;
            dr.config.tenant(&tenant)?;
            let was = haven_ops::failover::served_by(&dr.catalog, &tenant)?;
            haven_ops::failover::release(&dr.catalog, &tenant)?;
            match was {
                Some(a) => println!("tenant {tenant} is backed up from its own servers again (was served by {} since run {})", a.served_by, a.run),
                None => println!("tenant {tenant} was served by its own servers already"),
            }
            Ok(0)
        }
    }
}

/// The run's id, printed before it starts (so it can be resumed if this process dies).
fn announce(g: &Global) -> String {
    let id = haven_dr::new_run_id();
    if !g.json {
        println!("run {id}");
    }
    id
}

fn finish(g: &Global, dr: &Dr, out: Outcome) -> Result<i32> {
    if g.json {
        return status(g, dr, Some(&out.run_id)).map(|_| code(out.state));
    }
    println!("run {} {} in {:.1}s", out.run_id, out.state, out.seconds);
    if let Some(e) = &out.error {
        println!("  {e}");
    }
    Ok(code(out.state))
}

fn code(s: DrRunState) -> i32 {
    if s == DrRunState::Succeeded {
        0
    } else {
        3
    }
}

fn status(g: &Global, dr: &Dr, run: Option<&str>) -> Result<i32> {
    let Some(id) = run else {
        let runs = dr.catalog.dr_runs(None, 20)?;
        if g.json {
            println!("{}", serde_json::to_string_pretty(&runs)?);
        } else {
            for r in &runs {
                println!(
                    "{}  {:<8} {:<9} {:<20} {} -> {}  {}",
                    r.id,
                    r.mode,
                    r.state,
                    r.runbook,
                    r.tenant,
                    if r.into_tenant.is_empty() {
                        "(scratch)"
                    } else {
                        &r.into_tenant
                    },
                    r.seconds.map(|s| format!("{s:.1}s")).unwrap_or_default()
                );
            }
        }
        return Ok(0);
    };
    let r = dr.catalog.dr_run(id)?.ok_or_else(|| {
        anyhow::anyhow!("no disaster-recovery run {id:?}; list runs with `haven dr status`")
    })?;
    let steps = dr.catalog.dr_steps(id)?;
    if g.json {
        let audit = dr.catalog.dr_audit(id)?;
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "run": r, "steps": steps, "audit": audit })
            )?
        );
        return Ok(0);
    }
    println!(
        "run {} ({} of {}): {} -> {}, {}",
        r.id, r.mode, r.runbook, r.tenant, r.into_tenant, r.state
    );
    println!(
        "  started {} by {}{}",
        r.started.format("%Y-%m-%d %H:%M:%S UTC"),
        r.actor,
        r.point
            .as_ref()
            .map(|p| format!(", point {p}"))
            .unwrap_or_default()
    );
    if let Some(e) = &r.error {
        println!("  {e}");
    }
    for s in &steps {
        println!(
            "  {:<20} {:<11} {:>7} {}",
            s.step,
            s.state.as_str(),
            s.seconds.map(|t| format!("{t:.1}s")).unwrap_or_default(),
            s.message.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}
