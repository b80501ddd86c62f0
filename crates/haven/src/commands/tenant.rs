//! `haven tenant backup|label|unlabel|points|restore|verify`: thin wrappers over `haven_ops`.
//! Exit codes: 0 complete / every check passed; 3 the run finished but a component failed
//! or a check failed (the report names them); 1 nothing could be done.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use haven_ops::backup::Observer;
use haven_ops::label::{Label, NewLabel};
use haven_ops::point::{list_points, PointChoice, PointStatus};
use haven_ops::report::human_bytes;
use haven_ops::{Config, RestoreRequest};
use haven_sources::postgres::physical::RecoveryTarget;

use crate::cli::{ConfigArg, Global, PointArgs, TenantCommand, TenantRestoreArgs};

pub fn run(g: &Global, cmd: TenantCommand) -> Result<i32> {
    match cmd {
        TenantCommand::Backup {
            tenant,
            label,
            label_expires,
            config,
        } => {
            let label = label.map(|name| NewLabel {
                name,
                expires_in: label_expires,
            });
            let config = following_failover(load(&config)?, &tenant)?;
            backup(g, &config, &tenant, label.as_ref())
        }
        TenantCommand::Label {
            tenant,
            point,
            name,
            expires,
            config,
        } => {
            let choice = if point == "latest" {
                PointChoice::Latest
            } else {
                PointChoice::parse(&point)
            };
            let new = NewLabel {
                name,
                expires_in: expires,
            };
            let label = haven_ops::label::label_point(
                &load(&config)?,
                &tenant,
                &choice,
                &new,
                g.lock_wait,
                &observer(g),
            )
            .with_context(|| format!("tenant {tenant}"))?;
            print_label(g, "labelled", &label);
            Ok(0)
        }
        TenantCommand::Unlabel {
            tenant,
            name,
            config,
        } => {
            let label = haven_ops::label::unlabel(
                &load(&config)?,
                &tenant,
                &name,
                g.lock_wait,
                &observer(g),
            )
            .with_context(|| format!("tenant {tenant}"))?;
            print_label(g, "unlabelled", &label);
            Ok(0)
        }
        TenantCommand::Points {
            tenant,
            check,
            config,
        } => points(g, &load(&config)?, &tenant, check),
        TenantCommand::Restore(a) => {
            let config = load(&a.config)?;
            let point = point_choice(&a.point)?;
            let recovery = recovery_target(&a, &point)?;
            let req = RestoreRequest {
                tenant: a.tenant,
                point,
                components: a.components,
                into: a.into,
                force: a.force,
                lock_wait: g.lock_wait,
                parallelism: a.parallel.parallel.map(usize::from),
                recovery,
            };
            let report = haven_ops::restore_tenant(&config, &req, &observer(g))
                .with_context(|| format!("tenant {}", req.tenant))?;
            print_report(g, &report)
        }
        TenantCommand::Verify {
            tenant,
            point,
            parallel,
            config,
        } => {
            let config = load(&config)?;
            let report = haven_ops::verify_tenant_parallel(
                &config,
                &tenant,
                &point_choice(&point)?,
                g.lock_wait,
                parallel.parallel.map(usize::from),
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

/// How far physical PostgreSQL components replay WAL: `--at` (a time), `--lsn`, `--name`,
/// `--latest`; else the point as backed up.
fn recovery_target(a: &TenantRestoreArgs, point: &PointChoice) -> Result<RecoveryTarget> {
    if a.latest {
        return Ok(RecoveryTarget::Latest);
    }
    if let Some(l) = &a.lsn {
        return Ok(RecoveryTarget::Lsn(l.parse().map_err(anyhow::Error::msg)?));
    }
    if let Some(n) = &a.name {
        return Ok(RecoveryTarget::Name(n.clone()));
    }
    Ok(match point {
        PointChoice::At(t) => {
            RecoveryTarget::Time(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        }
        _ => RecoveryTarget::Immediate,
    })
}

pub(crate) fn point_choice(a: &PointArgs) -> Result<PointChoice> {
    if let Some(text) = &a.point {
        return Ok(PointChoice::parse(text));
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

/// The config with `tenant` as it must be backed up now: after a disaster-recovery run moved
/// it onto another tenant's servers (recorded in the daemon's catalog), those servers, as
/// the daemon does. Without a catalog (no `haven serve`, no `haven dr run` here) nothing
/// moved and the config is used as written.
fn following_failover(mut config: Config, tenant: &str) -> Result<Config> {
    if !config.daemon.state_dir.join("catalog.sqlite").exists() {
        return Ok(config);
    }
    let catalog = haven_dr::open_catalog(&config)
        .context("reading the daemon's catalog to learn whether a failover moved the tenant")?;
    if let Some(a) = haven_ops::failover::served_by(&catalog, tenant)? {
        let moved = haven_ops::failover::effective_tenant(&config, &catalog, tenant)?;
        eprintln!(
            "tenant {tenant} is served by {}'s servers since disaster-recovery run {}: backing those up (`haven dr release {tenant}` to fail back)",
            a.served_by, a.run
        );
        config.tenants.insert(tenant.to_string(), moved);
    }
    Ok(config)
}

fn backup(g: &Global, config: &Config, tenant: &str, label: Option<&NewLabel>) -> Result<i32> {
    let point = match label {
        None => haven_ops::backup_tenant(config, tenant, g.lock_wait, &observer(g))
            .with_context(|| format!("tenant {tenant}: no recovery point was made"))?,
        Some(l) => {
            haven_ops::backup::backup_tenant_labelled(config, tenant, g.lock_wait, &observer(g), l)
                .with_context(|| format!("tenant {tenant}"))?
        }
    };
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
        eprintln!("haven: error: tenant {tenant}: recovery point {} is marked failed and cannot be restored{}; fix the components above and run the backup again", point.id, if label.is_some() { " (it was not labelled)" } else { "" });
        return Ok(3);
    }
    Ok(0)
}

fn points(g: &Global, config: &Config, tenant: &str, check: bool) -> Result<i32> {
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
    let windows = physical_windows(&view, &points, tenant);
    // --check: every kept base backup's WAL chain reaches the newest WAL.
    let broken = windows
        .values()
        .flat_map(|w| &w.chains)
        .filter(|c| c.gap.is_some() || c.to.is_none())
        .count();
    let code = if check && broken > 0 { 1 } else { 0 };
    if check && windows.is_empty() {
        anyhow::bail!(
            "tenant {tenant} has no base backup of a physical PostgreSQL component: --check has nothing to prove"
        );
    }
    if g.json {
        #[derive(serde::Serialize)]
        struct Listed<'a> {
            #[serde(flatten)]
            point: &'a haven_ops::point::RecoveryPoint,
            labels: &'a [Label],
        }
        let list: Vec<_> = points
            .iter()
            .map(|p| Listed {
                point: &p.point,
                labels: &p.labels,
            })
            .collect();
        if windows.is_empty() {
            crate::output::json(&list);
        } else {
            crate::output::json(&serde_json::json!({ "points": list, "windows": windows }));
        }
        return Ok(code);
    }
    let now = Utc::now();
    println!(
        "{:<17} {:<20} {:<9} {:>10} {:>10} {:>8}  components",
        "point", "time (UTC)", "status", "size", "added", "seconds"
    );
    for listed in &points {
        let p = &listed.point;
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
    for p in &points {
        for l in &p.labels {
            println!(
                "label {} -> {}{}",
                l.name,
                p.point.id,
                match l.expires {
                    None => String::new(),
                    Some(e) if l.in_effect(now) =>
                        format!(" (until {})", e.format("%Y-%m-%d %H:%M:%S UTC")),
                    Some(e) => format!(
                        " (EXPIRED {}: no longer protects the point)",
                        e.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                }
            );
        }
    }
    println!("{} recovery point(s)", points.len());
    for (name, w) in &windows {
        println!("{name}: restorable from {}", w.describe());
        if !check {
            continue;
        }
        for c in &w.chains {
            let what = match (&c.gap, &c.to) {
                (Some(gap), _) => format!("GAP: {gap} is missing"),
                (None, None) => "GAP: no WAL archived after it".to_string(),
                (None, Some(to)) => format!("continuous to {to}"),
            };
            println!(
                "  base backup of point {} (WAL from {}): {what}",
                &c.point[..8.min(c.point.len())],
                c.from
            );
        }
    }
    if code != 0 {
        eprintln!(
            "haven: {broken} base backup(s) of tenant {tenant} cannot be replayed to the newest WAL: \
             a restore past the gap fails; take a base backup now (haven tenant backup {tenant})"
        );
    }
    Ok(code)
}

/// The restorable window of each physical PostgreSQL component with base backups.
fn physical_windows(
    view: &haven_repo::read::ReadView,
    points: &[haven_ops::point::ListedPoint],
    tenant: &str,
) -> std::collections::BTreeMap<String, haven_ops::pitr::Window> {
    let names: std::collections::BTreeSet<&String> = points
        .iter()
        .flat_map(|p| p.point.components.iter())
        .filter(|(_, r)| haven_ops::pitr::is_base_backup(r))
        .map(|(n, _)| n)
        .collect();
    names
        .into_iter()
        .map(|n| {
            let archived = haven_ops::wal::list_wal(&view.snapshots, tenant, n);
            (n.clone(), haven_ops::pitr::window(points, &archived, n))
        })
        .collect()
}

fn print_report(g: &Global, report: &haven_ops::report::TenantReport) -> Result<i32> {
    if g.json {
        crate::output::json(report);
    } else if !g.quiet {
        print!("{}", report.render());
    }
    Ok(if report.passed() { 0 } else { 3 })
}

fn print_label(g: &Global, what: &str, label: &Label) {
    if g.json {
        crate::output::json(label);
    } else if !g.quiet {
        println!(
            "{what} recovery point {} of tenant {}: {}{}",
            label.point,
            label.tenant,
            label.name,
            label
                .expires
                .map(|e| format!(" (until {})", e.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        );
    }
}
