//! `haven serve`: the daemon with its HTTP API, metrics and dashboard, until SIGTERM or
//! SIGINT. SIGHUP reloads the config file (as `POST /api/v1/reload` does); a config that
//! does not load is refused with its error and the running one stays. On SIGTERM the API stops, scheduling stops, running jobs get `[daemon]
//! shutdown-grace` to finish; jobs still running are marked interrupted (retried at the
//! next start) and abandoned, which the repository's write ordering makes safe.

use anyhow::{Context, Result};
use haven_ops::daemon::{Daemon, DaemonOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{Global, ServeArgs};

/// The API token: HAVEN_API_TOKEN, else `[daemon] api-token` / `api-token-file`.
fn api_token(config: &haven_ops::Config) -> Result<String> {
    if let Ok(t) = std::env::var("HAVEN_API_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if let Some(t) = &config.daemon.api_token {
        return Ok(t.clone());
    }
    if let Some(path) = &config.daemon.api_token_file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading the API token file {}", path.display()))?;
        let t = t.trim();
        anyhow::ensure!(
            !t.is_empty(),
            "the API token file {} is empty",
            path.display()
        );
        return Ok(t.to_string());
    }
    anyhow::bail!(
        "no API token: set HAVEN_API_TOKEN, or api-token-file in the [daemon] table of {} (the API is never served without one)",
        config.file.display()
    )
}

/// One line saying what a reload changed.
fn describe_reload(r: &haven_ops::daemon::view::ReloadReport) -> String {
    let list = |what: &str, names: &[String]| {
        (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
    };
    let changes: Vec<String> = [
        list("added", &r.added),
        list("removed", &r.removed),
        list("changed", &r.changed),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "reloaded {} ({} tenant(s); {})",
        r.file,
        r.tenants,
        if changes.is_empty() {
            "no tenant changed".to_string()
        } else {
            changes.join("; ")
        }
    )
}

pub fn run(g: &Global, a: ServeArgs) -> Result<i32> {
    let config = super::tenant::load(&a.config)?;
    let path = config.file.clone();
    let token = api_token(&config)?;
    let listen = a.listen.unwrap_or(config.daemon.listen);
    let grace = config.daemon.shutdown_grace;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let daemon = Daemon::start(
        config,
        DaemonOptions {
            dr_runner: Some(std::sync::Arc::new(super::dr_runner::EngineRunner)),
            ..DaemonOptions::default()
        },
    )?;
    let api = haven_api::start(daemon.view(), haven_api::ApiConfig { listen, token })?;
    if !g.quiet {
        eprintln!(
            "haven: serving {} on http://{} (dashboard /, metrics /metrics, API /api/v1/, OpenAPI /api/v1/openapi.json)",
            path.display(),
            api.addr()
        );
        eprintln!(
            "haven: state directory {} (catalog {}; set [daemon] state-dir to move it)",
            daemon.state_dir().display(),
            daemon.state_dir().join("catalog.sqlite").display()
        );
    }
    let signal = loop {
        let signal = signals.forever().next().unwrap_or(SIGTERM);
        if signal != SIGHUP {
            break signal;
        }
        match daemon.reload() {
            Ok(r) => {
                if !g.quiet {
                    eprintln!("haven: SIGHUP: {}", describe_reload(&r));
                }
                for note in &r.notes {
                    eprintln!("haven: warning: SIGHUP: {note}");
                }
            }
            Err(e) => eprintln!(
                "haven: warning: SIGHUP: the config was not reloaded: {e}; the running config stays in force"
            ),
        }
    };
    if !g.quiet {
        eprintln!(
            "haven: {} received: stopping (running jobs get {} s to finish)",
            if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            },
            grace.as_secs()
        );
    }
    if let Err(e) = api.shutdown() {
        eprintln!("haven: warning: {e}");
    }
    let abandoned = daemon.stop(grace);
    if !abandoned.is_empty() {
        eprintln!(
            "haven: abandoned running job(s) {:?}: marked interrupted, retried at the next start",
            abandoned
        );
    }
    Ok(0)
}
