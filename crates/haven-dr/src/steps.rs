//! One attempt of one step, by kind. Each function gets the step with its templates
//! already rendered ([`Ctx`]) and returns the step's outputs or a one-line failure.
//!
//! | kind | does | outputs |
//! |---|---|---|
//! | command | the program (no shell) in its own process group, killed on timeout | its `KEY=VALUE` stdout lines |
//! | http | GET until the status and body match or the timeout passes | `status`, `body` |
//! | sql | `psql` against a postgres component of `into` | `answer` |
//! | dns | [`haven_dns::Provider::replace`] | `previous`, `value` |
//! | wait | a pause, or an http check | `seconds` |
//! | notify | a `runbook-notice` to each sink | none |
//! | restore | `haven_ops::restore_tenant` (drill: `verify_tenant`) | `point`, `seconds`, `passed` |

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use haven_dns::{Provider, RecordSet, RecordType};
use haven_ops::alerts::{self, Alert, AlertKind, Notification};
use haven_ops::backup::Observer;
use haven_ops::catalog::DrMode;
use haven_ops::config::{ComponentConfig, Config};
use haven_ops::point::PointChoice;
use haven_ops::runbook::{
    DnsProvider, DnsStep, DnsType, HttpCheck, Step, StepKind, Template, WaitStep,
};
use haven_sources::process::{format_span, Limits, Tool};
use haven_sources::SourceError;

use crate::secrets::Redactor;

/// What a finished attempt reports.
#[derive(Debug, Default)]
pub struct Done {
    pub outputs: BTreeMap<String, String>,
    pub message: String,
}

/// A failed attempt, in one line (whether it leaves the tenant unproven depends on the
/// step's kind: [`haven_ops::runbook::StepKind::is_proof`]).
#[derive(Debug)]
pub struct Failed {
    pub message: String,
}

impl<T: Into<String>> From<T> for Failed {
    fn from(m: T) -> Failed {
        Failed { message: m.into() }
    }
}

/// Everything an attempt needs besides the step.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub run_id: &'a str,
    pub mode: DrMode,
    pub tenant: &'a str,
    pub into: &'a str,
    pub runbook: &'a str,
    pub drill_record: Option<&'a str>,
    /// The point chosen for the run (None: by `choice`).
    pub point: Option<String>,
    pub choice: PointChoice,
    pub redactor: &'a Redactor,
    /// Resolves a template (outputs of finished steps, run variables, environment).
    pub render: &'a dyn Fn(&Template) -> Result<String, String>,
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

/// Run one attempt of `step`, within `timeout`.
pub fn attempt(ctx: &Ctx, step: &Step, timeout: Duration) -> Result<Done, Failed> {
    let deadline = Instant::now() + timeout;
    match &step.kind {
        StepKind::Command(c) => {
            let args = c
                .run
                .iter()
                .map(ctx.render)
                .collect::<Result<Vec<_>, _>>()?;
            command(ctx, &step.name, &args, c.outputs.as_deref(), timeout)
        }
        StepKind::Http(h) => http(ctx, h, deadline),
        StepKind::Wait(WaitStep::For(d)) => {
            std::thread::sleep(*d);
            Ok(Done {
                outputs: [("seconds".to_string(), d.as_secs_f64().to_string())].into(),
                message: format!("waited {}", format_span(*d)),
            })
        }
        StepKind::Wait(WaitStep::Until(h)) => {
            let t = Instant::now();
            let mut d = http(ctx, h, deadline)?;
            d.outputs = [(
                "seconds".to_string(),
                format!("{:.3}", t.elapsed().as_secs_f64()),
            )]
            .into();
            Ok(d)
        }
        StepKind::Sql(s) => {
            if ctx.mode == DrMode::Drill {
                return Ok(Done {
                    message: "not run in a drill: the scratch targets are checked and removed by the restore step".into(),
                    ..Done::default()
                });
            }
            let query = (ctx.render)(&s.query)?;
            let expect = s.expect.as_ref().map(ctx.render).transpose()?;
            sql(ctx, &s.component, &query, expect.as_deref(), timeout)
        }
        StepKind::Dns(d) => {
            let record = match (ctx.mode, ctx.drill_record) {
                (DrMode::Drill, Some(r)) => r.to_string(),
                (DrMode::Drill, None) => {
                    return Err("a drill changes drill-record instead of the real record, and the runbook has none: add drill-record = \"drill.NAME.\"".into())
                }
                _ => (ctx.render)(&d.record)?,
            };
            let value = (ctx.render)(&d.value)?;
            dns(ctx, d, &record, &value, timeout)
        }
        StepKind::Notify(n) => {
            let message = match &n.message {
                Some(m) => (ctx.render)(m)?,
                None => format!(
                    "runbook {} (run {}): {} is being served from {}",
                    ctx.runbook, ctx.run_id, ctx.tenant, ctx.into
                ),
            };
            notify(ctx, &n.alerts, &message)
        }
        StepKind::Restore(r) => restore(ctx, r.components.clone().unwrap_or_default(), deadline),
    }
}

fn timed_out(e: SourceError, timeout: Duration) -> Failed {
    match e {
        SourceError::TimedOut { .. } => format!(
            "did not finish within its timeout of {} and was stopped with every process it started; raise the step's timeout if it needs longer",
            format_span(timeout)
        )
        .into(),
        other => other.to_string().into(),
    }
}

/// KEY=VALUE lines of a command's stdout.
pub fn parse_outputs(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('\r').to_string()))
        .collect()
}

fn command(
    ctx: &Ctx,
    step: &str,
    args: &[String],
    declared: Option<&[String]>,
    timeout: Duration,
) -> Result<Done, Failed> {
    let mut tool = Tool::new(
        &args[0],
        format!("step {step} ({})", args[0]),
        "check the step's run = [...] and PATH",
    );
    tool.args(&args[1..])
        // A user's program: it gets the environment but Haven's secrets.
        .pass_env("")
        .env("HAVEN_DR_RUN", ctx.run_id)
        .env("HAVEN_DR_MODE", ctx.mode.as_str())
        .env("HAVEN_DR_TENANT", ctx.tenant)
        .env("HAVEN_DR_INTO", ctx.into)
        .env("HAVEN_DR_STEP", step)
        .limits(Limits::timeout(timeout));
    if let Some(dir) = ctx
        .config
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        // `./provision.sh` is next to the config file.
        tool.current_dir(dir);
    }
    let out = tool.run().map_err(|e| timed_out(e, timeout))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let outputs = parse_outputs(&stdout);
    if let Some(keys) = declared {
        let missing: Vec<&str> = keys
            .iter()
            .filter(|k| !outputs.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "exited 0 but did not print {} (KEY=VALUE lines on stdout)",
                missing
                    .iter()
                    .map(|k| format!("{k}=..."))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
    }
    Ok(Done {
        message: format!(
            "exited 0; outputs: {}",
            if outputs.is_empty() {
                "none".into()
            } else {
                outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ),
        outputs,
    })
}

fn http(ctx: &Ctx, h: &HttpCheck, deadline: Instant) -> Result<Done, Failed> {
    let url = (ctx.render)(&h.url)?;
    let want_body = h.expect_body.as_ref().map(ctx.render).transpose()?;
    let mut tries = 0;
    let last = loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match alerts::http_get(
            &url,
            left.clamp(Duration::from_millis(100), Duration::from_secs(30)),
        ) {
            Ok((status, body)) => {
                let body_ok = want_body
                    .as_ref()
                    .map_or(true, |w| body.contains(w.as_str()));
                if status == h.expect_status && body_ok {
                    let mut short = body.clone();
                    short.truncate(4096);
                    return Ok(Done {
                        outputs: [
                            ("status".to_string(), status.to_string()),
                            ("body".to_string(), short),
                        ]
                        .into(),
                        message: format!("GET answered {status} after {tries} tries"),
                    });
                }
                if status != h.expect_status {
                    format!("answered {status} (expected {})", h.expect_status)
                } else {
                    format!(
                        "answered {status} but the body does not contain {:?}",
                        want_body.clone().unwrap_or_default()
                    )
                }
            }
            Err(e) => e,
        };
        if Instant::now() + h.interval >= deadline {
            break why;
        }
        std::thread::sleep(h.interval);
    };
    Err(format!(
        "GET {} {last} ({tries} tries until the step's timeout)",
        ctx.redactor.redact(&url)
    )
    .into())
}

fn sql(
    ctx: &Ctx,
    component: &str,
    query: &str,
    expect: Option<&str>,
    timeout: Duration,
) -> Result<Done, Failed> {
    let target = ctx
        .config
        .tenants
        .get(ctx.into)
        .and_then(|t| t.components.get(component));
    let Some(ComponentConfig::Postgres(pg)) = target else {
        return Err(format!("tenant {} has no postgres component {component}", ctx.into).into());
    };
    let psql = pg
        .bin_dir
        .as_ref()
        .map_or_else(|| "psql".into(), |d| d.join("psql"));
    let mut tool = Tool::new(
        &psql,
        format!("psql on {}.{component}", ctx.into),
        "install the PostgreSQL client (Debian: postgresql-client)",
    );
    tool.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &pg.url,
        "-c",
        query,
    ])
    .pass_env("PG")
    .limits(Limits::timeout(timeout));
    let out = tool.run().map_err(|e| timed_out(e, timeout))?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if let Some(want) = expect {
        if answer != want.trim() {
            return Err(
                format!("the query answered {answer:?}, expected {:?}", want.trim()).into(),
            );
        }
    }
    Ok(Done {
        message: format!("answered {answer:?}"),
        outputs: [("answer".to_string(), answer)].into(),
    })
}

/// The provider of a dns step (reads its key or token file; their contents become
/// secrets of the run).
pub fn provider(
    d: &DnsStep,
    redactor: &Redactor,
    timeout: Duration,
) -> Result<Box<dyn Provider>, String> {
    match &d.provider {
        DnsProvider::Rfc2136 {
            server,
            zone,
            tsig_key_file,
        } => {
            let text = std::fs::read_to_string(tsig_key_file).map_err(|e| {
                format!(
                    "cannot read the TSIG key file {}: {e}",
                    tsig_key_file.display()
                )
            })?;
            redactor.add_file_contents(&text);
            let key = haven_dns::TsigKey::from_file(tsig_key_file).map_err(|e| e.to_string())?;
            let addr = server
                .to_socket_addrs()
                .map_err(|e| format!("DNS server {server}: cannot resolve its address: {e}"))?
                .next()
                .ok_or_else(|| format!("DNS server {server}: no address"))?;
            Ok(Box::new(haven_dns::Rfc2136::new(
                addr,
                zone,
                Some(key),
                timeout,
            )))
        }
        DnsProvider::Cloudflare {
            api_url,
            zone_id,
            zone,
            token_file,
        } => {
            let token = read_secret(token_file, redactor)?;
            // `zone` serves the dry run's check; without `zone-id` the provider finds
            // the zone from the record's name.
            let _ = zone;
            Ok(Box::new(haven_dns::Cloudflare::new(
                api_url,
                token,
                zone_id.clone(),
                timeout,
            )))
        }
    }
}

fn read_secret(path: &Path, redactor: &Redactor) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    redactor.add_file_contents(&text);
    Ok(text.trim().to_string())
}

pub fn record_type(t: DnsType) -> RecordType {
    match t {
        DnsType::A => RecordType::A,
        DnsType::Aaaa => RecordType::Aaaa,
        DnsType::Cname => RecordType::Cname,
        DnsType::Txt => RecordType::Txt,
    }
}

fn dns(
    ctx: &Ctx,
    d: &DnsStep,
    record: &str,
    value: &str,
    timeout: Duration,
) -> Result<Done, Failed> {
    let p = provider(d, ctx.redactor, timeout)?;
    let rtype = record_type(d.rtype);
    let previous = p.current(record, rtype).map_err(|e| e.to_string())?;
    p.replace(&RecordSet {
        name: haven_dns::fqdn(record),
        rtype,
        ttl: d.ttl,
        values: vec![value.to_string()],
    })
    .map_err(|e| e.to_string())?;
    Ok(Done {
        message: format!(
            "{} {record} {} -> {value} (was {})",
            p.describe(),
            d.rtype.as_str(),
            if previous.is_empty() {
                "none".into()
            } else {
                previous.join(", ")
            }
        ),
        outputs: [
            ("previous".to_string(), previous.join(",")),
            ("value".to_string(), value.to_string()),
        ]
        .into(),
    })
}

fn notify(ctx: &Ctx, sinks: &[String], message: &str) -> Result<Done, Failed> {
    let now = Utc::now();
    let key = format!(
        "{}:{}:{}",
        AlertKind::RunbookNotice.key_prefix(),
        ctx.tenant,
        ctx.runbook
    );
    let alert = Alert::firing(
        key,
        AlertKind::RunbookNotice,
        ctx.tenant,
        None,
        ctx.redactor.redact(message),
        format!("run {} ({})", ctx.run_id, ctx.mode),
        now,
    );
    let n = Notification {
        alert,
        first_fired: now,
        reminder: false,
    };
    let mut errors = vec![];
    for s in sinks {
        match ctx.config.alerts.get(s) {
            Some(cfg) => {
                if let Err(e) = alerts::send(s, cfg, &n) {
                    errors.push(e.to_string());
                }
            }
            None => errors.push(format!("alert sink {s:?} is not declared")),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; ").into());
    }
    Ok(Done {
        message: format!("sent to {}", sinks.join(", ")),
        ..Done::default()
    })
}

fn restore(ctx: &Ctx, components: Vec<String>, deadline: Instant) -> Result<Done, Failed> {
    let progress = ctx.progress;
    let lines: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let mut observer = Observer::new(move |l| {
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(l.to_string())
    });
    observer.deadline = Some(deadline);
    let choice = match &ctx.point {
        Some(p) => PointChoice::Id(p.clone()),
        None => ctx.choice.clone(),
    };
    let lock_wait = Duration::from_secs(60);
    let report = if ctx.mode == DrMode::Drill {
        haven_ops::verify_tenant(ctx.config, ctx.tenant, &choice, lock_wait, &observer)
    } else {
        haven_ops::restore_tenant(
            ctx.config,
            &haven_ops::RestoreRequest {
                tenant: ctx.tenant.to_string(),
                point: choice,
                components,
                into: Some(ctx.into.to_string()),
                // A resumed run restores again over what an interrupted one left.
                force: true,
                lock_wait,
                // All components side by side (up to the default cap): the RTO counts.
                parallelism: None,
                recovery: Default::default(),
            },
            &observer,
        )
    }
    .map_err(|e| e.to_string())?;
    for l in lines.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        progress(l);
    }
    let outputs: BTreeMap<String, String> = [
        ("point".to_string(), report.point.clone()),
        ("seconds".to_string(), format!("{:.3}", report.seconds)),
        ("passed".to_string(), report.passed().to_string()),
    ]
    .into();
    if !report.passed() {
        let bad: Vec<String> = report
            .components
            .iter()
            .filter(|c| {
                !matches!(
                    c.outcome,
                    haven_ops::report::Outcome::Passed | haven_ops::report::Outcome::Skipped
                )
            })
            .map(|c| {
                format!(
                    "{} ({})",
                    c.name,
                    c.error.clone().unwrap_or_else(|| c
                        .checks
                        .iter()
                        .filter(|k| !k.passed)
                        .map(|k| k.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "))
                )
            })
            .collect();
        return Err(format!(
            "validation failed for point {}: {}",
            report.point,
            bad.join("; ")
        )
        .into());
    }
    Ok(Done {
        message: format!(
            "point {} restored into {} and validated in {:.1}s ({})",
            report.point,
            if ctx.mode == DrMode::Drill {
                "scratch targets"
            } else {
                ctx.into
            },
            report.seconds,
            component_times(&report.components)
        ),
        outputs,
    })
}

/// "db restore 16.2s + validation 5.1s, cache 0.9s + 0.8s": where a restore step's time went
/// (kept in the step's message, so `dr status` and the audit show it).
fn component_times(components: &[haven_ops::report::ComponentReport]) -> String {
    components
        .iter()
        .filter(|c| c.outcome != haven_ops::report::Outcome::Skipped)
        .map(|c| {
            format!(
                "{} restore {:.1}s + validation {:.1}s",
                c.name, c.restore_seconds, c.validate_seconds
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
