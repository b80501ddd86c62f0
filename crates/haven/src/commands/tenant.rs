//! `haven tenant backup|points|restore|verify`: thin wrappers over `haven_ops`.
//! Exit codes: 0 complete / every check passed; 3 the run finished but a component failed
//! or a check failed (the report names them); 1 nothing could be done.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use haven_ops::backup::Observer;
use haven_ops::point::{list_points, PointChoice, PointStatus};
use haven_ops::report::human_bytes;
use haven_ops::{Config, RestoreRequest};

use crate::cli::{ConfigArg, Global, PointArgs, TenantCommand};

pub fn run(g: &Global, cmd: TenantCommand) -> Result<i32> {
    match cmd {
        TenantCommand::Backup { tenant, config } => backup(g, &load(&config)?, &tenant),
        TenantCommand::Points { tenant, config } => points(g, &load(&config)?, &tenant),
        TenantCommand::Restore(a) => {
            let config = load(&a.config)?;
            let req = RestoreRequest {
                tenant: a.tenant,
                point: point_choice(&a.point)?,
                components: a.components,
                into: a.into,
                force: a.force,
                lock_wait: g.lock_wait,
            };
            let report = haven_ops::restore_tenant(&config, &req, &observer(g))
                .with_context(|| format!("tenant {}", req.tenant))?;
            print_report(g, &report)
        }
        TenantCommand::Verify {
            tenant,
            point,
            config,
        } => {
            let config = load(&config)?;
            let report = haven_ops::verify_tenant(
                &config,
                &tenant,
                &point_choice(&point)?,
                g.lock_wait,
                &observer(g),
            )
            .with_context(|| format!("tenant {tenant}"))?;
            print_report(g, &report)
        }
    }
}

/// The config file: --config / HAVEN_CONFIG, else ./haven.toml, else /etc/haven/haven.toml;
/// `--work-dir` / HAVEN_WORK_DIR replaces its `work-dir`.
pub fn load(arg: &ConfigArg) -> Result<Config> {
    let path = arg.config.clone().unwrap_or_else(|| {
        let local = PathBuf::from("haven.toml");
        if local.exists() {
            local
        } else {
            PathBuf::from("/etc/haven/haven.toml")
        }
    });
    let mut config = Config::load(&path)?;
    if let Some(dir) = &arg.work_dir {
        config.work_dir = Some(dir.clone());
    }
    Ok(config)
}

/// Steps are printed on stderr (stdout keeps the result), unless --quiet or --json.
fn observer(g: &Global) -> Observer {
    if g.quiet || g.json {
        Observer::quiet()
    } else {
        Observer::new(|line| eprintln!("haven: {line}"))
    }
}

fn point_choice(a: &PointArgs) -> Result<PointChoice> {
    if let Some(id) = &a.point {
        return Ok(PointChoice::Id(id.clone()));
    }
    match &a.at {
        None => Ok(PointChoice::Latest),
        Some(t) => Ok(PointChoice::At(parse_time(t)?)),
    }
}

/// RFC 3339, or "YYYY-MM-DD[ HH:MM[:SS]]" taken as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(23, 59, 59).expect("valid time").and_utc());
    }
    anyhow::bail!(
        "--at {s:?} is not a time: use e.g. 2026-11-21T03:00:00Z or \"2026-11-21 03:00\" (UTC)"
    )
}

fn backup(g: &Global, config: &Config, tenant: &str) -> Result<i32> {
    let point = haven_ops::backup_tenant(config, tenant, g.lock_wait, &observer(g))
        .with_context(|| format!("tenant {tenant}: no recovery point was made"))?;
    let (bytes, added) = point.sizes();
    if g.json {
        crate::output::json(&point);
    } else if !g.quiet {
        println!(
            "recovery point {} of tenant {}: {} ({} components, {}, {} added, {:.1} s)",
            point.id,
            tenant,
            match point.status {
                PointStatus::Complete => "complete",
                PointStatus::Failed => "FAILED",
            },
            point.components.len(),
            human_bytes(bytes),
            human_bytes(added),
            (point.finished - point.started).num_milliseconds() as f64 / 1000.0
        );
    }
    for (name, c) in &point.components {
        for w in &c.warnings {
            eprintln!("haven: warning: tenant {tenant}: component {name}: {w}");
        }
    }
    if point.status == PointStatus::Failed {
        for f in point.failures() {
            eprintln!("haven: error: tenant {tenant}: component {f}");
        }
        eprintln!("haven: error: tenant {tenant}: recovery point {} is marked failed and cannot be restored; fix the components above and run the backup again", point.id);
        return Ok(3);
    }
    Ok(0)
}

fn points(g: &Global, config: &Config, tenant: &str) -> Result<i32> {
    let t = config.tenant(tenant)?;
    let (repo, _) = haven_ops::open_repository_as(
        config.repository_of(t),
        false,
        haven_ops::location::SiteAccess::Reading,
    )
    .with_context(|| format!("tenant {tenant}"))?;
    let _lock = super::lock(g, &repo, super::Read, "tenant points")?;
    let view = haven_repo::read::ReadView::open(repo)?;
    let (points, damaged) = list_points(&view, tenant)?;
    for (name, why) in &damaged {
        eprintln!(
            "haven: warning: snapshot {}: {why}",
            &name[..8.min(name.len())]
        );
    }
    if g.json {
        let list: Vec<_> = points.iter().map(|p| &p.point).collect();
        crate::output::json(&list);
        return Ok(0);
    }
    println!(
        "{:<17} {:<20} {:<9} {:>10} {:>10} {:>8}  components",
        "point", "time (UTC)", "status", "size", "added", "seconds"
    );
    for p in &points {
        let p = &p.point;
        let (bytes, added) = p.sizes();
        let comps: Vec<String> = p
            .components
            .iter()
            .map(|(n, c)| match c.status {
                haven_ops::point::ComponentStatus::Ok => n.clone(),
                haven_ops::point::ComponentStatus::Failed => format!("{n}(FAILED)"),
            })
            .collect();
        println!(
            "{:<17} {:<20} {:<9} {:>10} {:>10} {:>8.1}  {}",
            p.id,
            p.started.format("%Y-%m-%d %H:%M:%S"),
            match p.status {
                PointStatus::Complete => "complete",
                PointStatus::Failed => "FAILED",
            },
            human_bytes(bytes),
            human_bytes(added),
            (p.finished - p.started).num_milliseconds() as f64 / 1000.0,
            comps.join(",")
        );
        for f in p.failures() {
            println!("{:<17} {f}", "");
        }
    }
    println!("{} recovery point(s)", points.len());
    Ok(0)
}

fn print_report(g: &Global, report: &haven_ops::report::TenantReport) -> Result<i32> {
    if g.json {
        crate::output::json(report);
    } else if !g.quiet {
        print!("{}", report.render());
    }
    Ok(if report.passed() { 0 } else { 3 })
}
