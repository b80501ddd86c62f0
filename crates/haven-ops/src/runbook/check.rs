//! The raw layer of `[runbooks.NAME]` and its check into [`Runbook`]. Every step is one
//! flat table (`deny_unknown_fields`); the keys that do not belong to its `kind` are
//! refused by name. Errors carry the span, the key (`runbooks.NAME.steps.STEP.KEY`) and
//! what to do; `config.rs` turns them into a `ConfigError` with the line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::config::{ComponentConfig, Tenant};
use crate::plan::parse_span;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRunbook {
    tenant: Spanned<String>,
    into: Spanned<String>,
    rto: Option<Spanned<String>>,
    drill_schedule: Option<Spanned<String>>,
    drill_record: Option<Spanned<String>>,
    alerts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    name: Spanned<String>,
    kind: Spanned<String>,
    needs: S<Vec<String>>,
    timeout: S<String>,
    retries: S<u32>,
    backoff: S<String>,
    on_failure: S<String>,
    // restore
    components: S<Vec<String>>,
    // command
    run: S<Vec<String>>,
    outputs: S<Vec<String>>,
    idempotent: S<bool>,
    // http, wait
    url: S<String>,
    expect_status: S<u16>,
    expect_body: S<String>,
    interval: S<String>,
    duration: S<String>,
    // sql
    component: S<String>,
    query: S<String>,
    expect: S<String>,
    // dns
    provider: S<String>,
    server: S<String>,
    zone: S<String>,
    record: S<String>,
    #[serde(rename = "type")]
    rtype: S<String>,
    value: S<String>,
    ttl: S<u32>,
    tsig_key_file: S<PathBuf>,
    api_url: S<String>,
    zone_id: S<String>,
    token_file: S<PathBuf>,
    allow_unproven: S<bool>,
    // notify
    message: S<String>,
    alerts: S<Vec<String>>,
}

/// A check failure: where, which key, what to do.
pub(crate) type Fail = (Option<Range<usize>>, String, String);

/// Checks a list of alert sink names under a key.
type SinkCheck<'a> = dyn Fn(&Spanned<Vec<String>>, String) -> Result<Vec<String>, Fail> + 'a;

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn span_of<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    Some(v.span())
}

impl RawStep {
    /// The keys given, with their spans, that only some kinds accept.
    fn kind_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        fn k<T>(out: &mut Vec<(&'static str, Range<usize>)>, name: &'static str, v: &S<T>) {
            if let Some(v) = v {
                out.push((name, v.span()));
            }
        }
        let mut out = Vec::new();
        k(&mut out, "components", &self.components);
        k(&mut out, "run", &self.run);
        k(&mut out, "outputs", &self.outputs);
        k(&mut out, "idempotent", &self.idempotent);
        k(&mut out, "url", &self.url);
        k(&mut out, "expect-status", &self.expect_status);
        k(&mut out, "expect-body", &self.expect_body);
        k(&mut out, "interval", &self.interval);
        k(&mut out, "duration", &self.duration);
        k(&mut out, "component", &self.component);
        k(&mut out, "query", &self.query);
        k(&mut out, "expect", &self.expect);
        k(&mut out, "provider", &self.provider);
        k(&mut out, "server", &self.server);
        k(&mut out, "zone", &self.zone);
        k(&mut out, "record", &self.record);
        k(&mut out, "type", &self.rtype);
        k(&mut out, "value", &self.value);
        k(&mut out, "ttl", &self.ttl);
        k(&mut out, "tsig-key-file", &self.tsig_key_file);
        k(&mut out, "api-url", &self.api_url);
        k(&mut out, "zone-id", &self.zone_id);
        k(&mut out, "token-file", &self.token_file);
        k(&mut out, "allow-unproven", &self.allow_unproven);
        k(&mut out, "message", &self.message);
        k(&mut out, "alerts", &self.alerts);
        out
    }
}

/// The keys each kind accepts besides the common ones.
fn keys_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "restore" => &["components"],
        "command" => &["run", "outputs", "idempotent"],
        "http" => &["url", "expect-status", "expect-body", "interval"],
        "sql" => &["component", "query", "expect"],
        "dns" => &[
            "provider",
            "server",
            "zone",
            "record",
            "type",
            "value",
            "ttl",
            "tsig-key-file",
            "api-url",
            "zone-id",
            "token-file",
            "allow-unproven",
        ],
        "wait" => &[
            "duration",
            "url",
            "expect-status",
            "expect-body",
            "interval",
        ],
        "notify" => &["alerts", "message"],
        _ => return None,
    })
}

/// Context a runbook is checked against.
pub(crate) struct Known<'a> {
    pub tenants: &'a BTreeMap<String, Tenant>,
    pub sinks: Vec<&'a str>,
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
}

/// Check `[runbooks.NAME]`.
pub(crate) fn runbook(
    name: &str,
    raw: Spanned<RawRunbook>,
    known: &Known,
) -> Result<Runbook, Fail> {
    let key = format!("runbooks.{name}");
    let whole = raw.span();
    let r = raw.into_inner();
    if !plain(name) {
        return Err((
            Some(whole),
            key,
            "runbook names use letters, digits, - and _ only (at most 64)".into(),
        ));
    }
    let tenant_of = |v: &Spanned<String>, k: &str| -> Result<&Tenant, Fail> {
        known.tenants.get(v.get_ref()).ok_or_else(|| {
            (
                span_of(v),
                format!("{key}.{k}"),
                format!(
                    "no tenant {:?} is declared (declared: {}); add a [tenants.{}] table",
                    v.get_ref(),
                    known.tenants.keys().cloned().collect::<Vec<_>>().join(", "),
                    v.get_ref()
                ),
            )
        })
    };
    let tenant = tenant_of(&r.tenant, "tenant")?;
    let into = tenant_of(&r.into, "into")?;
    if tenant.name == into.name {
        return Err((span_of(&r.into), format!("{key}.into"), "into names the runbook's own tenant: restore into another tenant's servers (declare e.g. [tenants.{0}-dr])".replace("{0}", &tenant.name)));
    }
    let duration = |v: &Spanned<String>, k: &str| -> Result<Duration, Fail> {
        parse_span(v.get_ref()).map_err(|m| (span_of(v), k.to_string(), m))
    };
    let rto = match &r.rto {
        Some(v) => Some(duration(v, &format!("{key}.rto"))?),
        None => None,
    };
    let drill_schedule = match &r.drill_schedule {
        Some(v) => Some(
            crate::schedule::Schedule::parse(v.get_ref())
                .map_err(|m| (span_of(v), format!("{key}.drill-schedule"), m))?,
        ),
        None => None,
    };
    let drill_record = match &r.drill_record {
        Some(v) => Some(absolute_name(v, &format!("{key}.drill-record"))?),
        None => None,
    };
    let check_sinks = |v: &Spanned<Vec<String>>, k: String| -> Result<Vec<String>, Fail> {
        if let Some(u) = v
            .get_ref()
            .iter()
            .find(|a| !known.sinks.contains(&a.as_str()))
        {
            return Err((
                span_of(v),
                k,
                format!(
                    "no alert sink {u:?} is declared (declared: {}); add an [alerts.{u}] table",
                    if known.sinks.is_empty() {
                        "none".to_string()
                    } else {
                        known.sinks.join(", ")
                    }
                ),
            ));
        }
        Ok(v.get_ref().clone())
    };
    let alerts = match &r.alerts {
        Some(v) => check_sinks(v, format!("{key}.alerts"))?,
        None => tenant
            .plan
            .alerts
            .clone()
            .unwrap_or_else(|| known.sinks.iter().map(|s| s.to_string()).collect()),
    };
    if r.steps.is_empty() {
        return Err((Some(whole), key.clone(), format!("the runbook has no steps; add [[runbooks.{name}.steps]] tables with a name and a kind")));
    }

    let mut steps: Vec<Step> = Vec::new();
    let mut spans: Vec<(Range<usize>, Option<Range<usize>>)> = Vec::new();
    for raw_step in &r.steps {
        let s = raw_step.get_ref();
        let sname = s.name.get_ref().clone();
        let skey = format!("{key}.steps.{sname}");
        if !plain(&sname) {
            return Err((
                span_of(&s.name),
                format!("{key}.steps.name"),
                format!("step name {sname:?}: use letters, digits, - and _ only (at most 64)"),
            ));
        }
        if steps.iter().any(|x| x.name == sname) {
            return Err((
                span_of(&s.name),
                format!("{skey}.name"),
                format!("two steps are called {sname:?}: give each step its own name"),
            ));
        }
        let kind = s.kind.get_ref().as_str();
        let Some(allowed) = keys_of(kind) else {
            return Err((span_of(&s.kind), format!("{skey}.kind"), format!("unknown step kind {kind:?}: use restore, command, http, sql, dns, wait or notify")));
        };
        if let Some((k, sp)) = s
            .kind_keys()
            .into_iter()
            .find(|(k, _)| !allowed.contains(k))
        {
            return Err((
                Some(sp),
                format!("{skey}.{k}"),
                format!(
                    "{k} does not apply to a {kind} step (it takes: {})",
                    allowed.join(", ")
                ),
            ));
        }
        // A missing key has no span of its own: point at the step.
        let step_kind = step_kind(kind, s, &skey, tenant, into, known, &check_sinks, &alerts)
            .map_err(|(sp, k, m)| (sp.or(Some(raw_step.span())), k, m))?;
        let timeout = match &s.timeout {
            Some(v) => {
                let d = duration(v, &format!("{skey}.timeout"))?;
                if d.is_zero() {
                    return Err((
                        span_of(v),
                        format!("{skey}.timeout"),
                        "a timeout of 0 would fail every attempt at once: give e.g. 5m".into(),
                    ));
                }
                d
            }
            None => step_kind.default_timeout(),
        };
        let backoff = match &s.backoff {
            Some(v) => duration(v, &format!("{skey}.backoff"))?,
            None => Duration::from_secs(5),
        };
        let on_failure = match s.on_failure.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "stop")) => OnFailure::Stop,
            Some((_, "continue")) => OnFailure::Continue,
            Some((v, other)) => {
                return Err((
                    span_of(v),
                    format!("{skey}.on-failure"),
                    format!("on-failure {other:?}: use \"stop\" or \"continue\""),
                ))
            }
        };
        steps.push(Step {
            name: sname,
            needs: s
                .needs
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_default(),
            timeout,
            retries: s.retries.as_ref().map_or(0, |r| *r.get_ref()),
            backoff,
            on_failure,
            kind: step_kind,
        });
        spans.push((raw_step.span(), s.needs.as_ref().map(|n| n.span())));
    }

    // needs: known steps, no self-loop, no cycle.
    for (i, st) in steps.iter().enumerate() {
        let sp = spans[i].1.clone().or(Some(spans[i].0.clone()));
        let nkey = format!("{key}.steps.{}.needs", st.name);
        for n in &st.needs {
            if !steps.iter().any(|x| &x.name == n) {
                return Err((
                    sp,
                    nkey,
                    format!(
                        "no step {n:?} in this runbook (steps: {})",
                        steps
                            .iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&steps) {
        let i = steps
            .iter()
            .position(|s| s.name == cycle[0])
            .expect("a step of the cycle");
        let sp = spans[i].1.clone().or(Some(spans[i].0.clone()));
        return Err((
            sp,
            format!("{key}.steps.{}.needs", cycle[0]),
            format!(
                "the steps' needs form a cycle: {}; remove one of these needs",
                cycle.join(" -> ")
            ),
        ));
    }
    let book = Runbook {
        name: name.to_string(),
        tenant: tenant.name.clone(),
        into: into.name.clone(),
        rto,
        drill_schedule,
        drill_record,
        alerts,
        steps,
    };
    // Variables: a step may use the outputs of the steps it (transitively) needs.
    for (i, st) in book.steps.iter().enumerate() {
        let ancestors = book.ancestors(&st.name);
        for t in st.kind.templates() {
            for v in t.vars() {
                let Var::Step { step, key: out } = v else {
                    continue;
                };
                let fail = |m: String| {
                    (
                        Some(spans[i].0.clone()),
                        format!("{key}.steps.{}", st.name),
                        m,
                    )
                };
                let Some(src) = book.step(step) else {
                    return Err(fail(format!("{v} names no step of this runbook")));
                };
                if !ancestors.contains(&step.as_str()) {
                    return Err(fail(format!("{v}: step {step} is not among the steps this one needs, so its outputs may not exist yet; add \"{step}\" to needs")));
                }
                if let Some(outs) = src.kind.outputs() {
                    if !outs.contains(&out.as_str()) {
                        return Err(fail(format!(
                            "{v}: a {} step defines {} (not {out})",
                            src.kind.name(),
                            if outs.is_empty() {
                                "no outputs".to_string()
                            } else {
                                outs.join(", ")
                            }
                        )));
                    }
                }
            }
        }
    }
    Ok(book)
}

fn find_cycle(steps: &[Step]) -> Option<Vec<String>> {
    // 0 new, 1 on the path, 2 done.
    fn visit(
        steps: &[Step],
        i: usize,
        mark: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        mark[i] = 1;
        path.push(i);
        for n in &steps[i].needs {
            let j = steps.iter().position(|s| &s.name == n)?;
            if mark[j] == 1 {
                let from = path.iter().position(|&p| p == j).expect("on the path");
                let mut c: Vec<String> = path[from..]
                    .iter()
                    .map(|&p| steps[p].name.clone())
                    .collect();
                c.push(steps[j].name.clone());
                return Some(c);
            }
            if mark[j] == 0 {
                if let Some(c) = visit(steps, j, mark, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        mark[i] = 2;
        None
    }
    let mut mark = vec![0u8; steps.len()];
    for i in 0..steps.len() {
        if mark[i] == 0 {
            if let Some(c) = visit(steps, i, &mut mark, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn absolute_name(v: &Spanned<String>, key: &str) -> Result<String, Fail> {
    let n = v.get_ref().trim();
    if n.is_empty() || n.contains(char::is_whitespace) {
        return Err((span_of(v), key.into(), format!("{n:?} is not a DNS name")));
    }
    Ok(if n.ends_with('.') {
        n.to_string()
    } else {
        format!("{n}.")
    })
}

fn template(v: &Spanned<String>, key: String) -> Result<Template, Fail> {
    Template::parse(v.get_ref()).map_err(|m| (span_of(v), key, m))
}

fn required<'a, T>(
    v: &'a S<T>,
    skey: &str,
    k: &str,
    kind: &str,
    hint: &str,
) -> Result<&'a Spanned<T>, Fail> {
    v.as_ref().ok_or_else(|| {
        (
            None,
            format!("{skey}.{k}"),
            format!("a {kind} step needs {k}{hint}"),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn step_kind(
    kind: &str,
    s: &RawStep,
    skey: &str,
    tenant: &Tenant,
    into: &Tenant,
    known: &Known,
    check_sinks: &SinkCheck,
    default_sinks: &[String],
) -> Result<StepKind, Fail> {
    let k = |name: &str| format!("{skey}.{name}");
    let dur = |v: &S<String>, name: &str, default: Duration| -> Result<Duration, Fail> {
        match v {
            Some(v) => parse_span(v.get_ref()).map_err(|m| (span_of(v), k(name), m)),
            None => Ok(default),
        }
    };
    let http = |s: &RawStep| -> Result<HttpCheck, Fail> {
        let url = required(
            &s.url,
            skey,
            "url",
            kind,
            ", e.g. url = \"http://10.0.0.5:8080/health\"",
        )?;
        let t = template(url, k("url"))?;
        // A URL that starts with a variable is checked when the step runs.
        let src = t.source();
        if !src.starts_with("${") && !src.starts_with("http://") && !src.starts_with("https://") {
            return Err((
                span_of(url),
                k("url"),
                format!("{:?} is not an http:// or https:// URL", t.source()),
            ));
        }
        Ok(HttpCheck {
            url: t,
            expect_status: s.expect_status.as_ref().map_or(200, |v| *v.get_ref()),
            expect_body: s
                .expect_body
                .as_ref()
                .map(|v| template(v, k("expect-body")))
                .transpose()?,
            interval: dur(&s.interval, "interval", Duration::from_secs(1))?,
        })
    };
    Ok(match kind {
        "restore" => {
            if let Some(c) = &s.components {
                for name in c.get_ref() {
                    for t in [tenant, into] {
                        if !t.components.contains_key(name) {
                            return Err((span_of(c), k("components"), format!("tenant {} has no component {name:?} (it has: {})", t.name, t.components.keys().cloned().collect::<Vec<_>>().join(", "))));
                        }
                    }
                }
            }
            StepKind::Restore(RestoreStep { components: s.components.as_ref().map(|c| c.get_ref().clone()) })
        }
        "command" => {
            let run = required(&s.run, skey, "run", kind, ", e.g. run = [\"./provision.sh\", \"${into}\"]")?;
            if run.get_ref().is_empty() {
                return Err((span_of(run), k("run"), "run is empty: give the program and its arguments".into()));
            }
            let args = run.get_ref().iter().map(|a| Template::parse(a).map_err(|m| (span_of(run), k("run"), m))).collect::<Result<Vec<_>, _>>()?;
            if let Some(o) = &s.outputs {
                if let Some(bad) = o.get_ref().iter().find(|n| !plain(n)) {
                    return Err((span_of(o), k("outputs"), format!("output name {bad:?}: use letters, digits, - and _")));
                }
            }
            StepKind::Command(CommandStep {
                run: args,
                outputs: s.outputs.as_ref().map(|o| o.get_ref().clone()),
                idempotent: s.idempotent.as_ref().is_some_and(|v| *v.get_ref()),
            })
        }
        "http" => StepKind::Http(http(s)?),
        "wait" => match (&s.duration, &s.url) {
            (Some(_), Some(u)) => return Err((span_of(u), k("url"), "a wait step takes duration or url, not both".into())),
            (Some(_), None) => {
                if let Some(x) = s.expect_status.as_ref().map(|v| v.span()).or(s.expect_body.as_ref().map(|v| v.span())) {
                    return Err((Some(x), k("duration"), "expect-status and expect-body go with url, not duration".into()));
                }
                StepKind::Wait(WaitStep::For(dur(&s.duration, "duration", Duration::ZERO)?))
            }
            (None, Some(_)) => StepKind::Wait(WaitStep::Until(http(s)?)),
            (None, None) => return Err((None, k("duration"), "a wait step needs duration = \"30s\" or url = \"http://...\" (polled until it answers)".into())),
        },
        "sql" => {
            let pg: Vec<&String> = into.components.iter().filter(|(_, c)| matches!(c, ComponentConfig::Postgres(_))).map(|(n, _)| n).collect();
            let component = match &s.component {
                Some(c) => {
                    if !pg.contains(&c.get_ref()) {
                        return Err((span_of(c), k("component"), format!("tenant {} has no postgres component {:?} (postgres components: {})", into.name, c.get_ref(), if pg.is_empty() { "none".into() } else { pg.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") })));
                    }
                    c.get_ref().clone()
                }
                None if pg.len() == 1 => pg[0].clone(),
                None => return Err((None, k("component"), format!("tenant {} has {} postgres components: name one with component = \"...\"", into.name, pg.len()))),
            };
            let q = required(&s.query, skey, "query", kind, ", e.g. query = \"SELECT count(*) FROM accounts\"")?;
            StepKind::Sql(SqlStep {
                component,
                query: template(q, k("query"))?,
                expect: s.expect.as_ref().map(|v| template(v, k("expect"))).transpose()?,
            })
        }
        "dns" => {
            let provider = s.provider.as_ref().map_or("rfc2136", |p| p.get_ref().as_str());
            let provider = match provider {
                "rfc2136" => {
                    for (name, v) in [("api-url", &s.api_url), ("zone-id", &s.zone_id)] {
                        if let Some(v) = v {
                            return Err((span_of(v), k(name), format!("{name} belongs to provider = \"cloudflare\"")));
                        }
                    }
                    if let Some(v) = &s.token_file {
                        return Err((span_of(v), k("token-file"), "token-file belongs to provider = \"cloudflare\"; rfc2136 signs with tsig-key-file".into()));
                    }
                    let server = required(&s.server, skey, "server", kind, ", e.g. server = \"ns1.example.com:53\"")?;
                    let zone = required(&s.zone, skey, "zone", kind, ", e.g. zone = \"example.com.\"")?;
                    let key = s.tsig_key_file.as_ref().ok_or_else(|| (None, k("tsig-key-file"), "an rfc2136 dns step needs tsig-key-file (a BIND key file with an hmac-sha256 key): unsigned updates are refused".into()))?;
                    if !server.get_ref().contains(':') {
                        return Err((span_of(server), k("server"), format!("{:?}: give HOST:PORT, e.g. ns1.example.com:53", server.get_ref())));
                    }
                    DnsProvider::Rfc2136 {
                        server: server.get_ref().clone(),
                        zone: absolute_name(zone, &k("zone"))?,
                        tsig_key_file: (known.resolve)(key.get_ref()),
                    }
                }
                "cloudflare" => {
                    if let Some(v) = &s.tsig_key_file {
                        return Err((span_of(v), k("tsig-key-file"), "tsig-key-file belongs to provider = \"rfc2136\"; cloudflare uses token-file".into()));
                    }
                    if let Some(v) = &s.server {
                        return Err((span_of(v), k("server"), "server belongs to provider = \"rfc2136\"; cloudflare uses api-url".into()));
                    }
                    let token = s.token_file.as_ref().ok_or_else(|| (None, k("token-file"), "a cloudflare dns step needs token-file (a file holding an API token with DNS edit rights)".into()))?;
                    if s.zone_id.is_none() && s.zone.is_none() {
                        return Err((None, k("zone-id"), "a cloudflare dns step needs zone-id, or zone (its id is looked up)".into()));
                    }
                    DnsProvider::Cloudflare {
                        api_url: s.api_url.as_ref().map_or("https://api.cloudflare.com/client/v4".to_string(), |v| v.get_ref().trim_end_matches('/').to_string()),
                        zone_id: s.zone_id.as_ref().map(|v| v.get_ref().clone()),
                        zone: s.zone.as_ref().map(|v| absolute_name(v, &k("zone"))).transpose()?,
                        token_file: (known.resolve)(token.get_ref()),
                    }
                }
                other => return Err((s.provider.as_ref().and_then(span_of), k("provider"), format!("provider {other:?}: use \"rfc2136\" or \"cloudflare\""))),
            };
            let record = required(&s.record, skey, "record", kind, ", e.g. record = \"acme.example.com.\"")?;
            let rt = required(&s.rtype, skey, "type", kind, ", e.g. type = \"A\"")?;
            let rtype = DnsType::parse(rt.get_ref()).ok_or_else(|| (span_of(rt), k("type"), format!("record type {:?}: use A, AAAA, CNAME or TXT", rt.get_ref())))?;
            let value = required(&s.value, skey, "value", kind, ", e.g. value = \"${steps.provision.lb_ip}\"")?;
            let rec = template(record, k("record"))?;
            if rec.vars().next().is_none() && !rec.source().ends_with('.') {
                return Err((span_of(record), k("record"), format!("{:?}: write the name absolute, ending with a dot", rec.source())));
            }
            StepKind::Dns(DnsStep {
                provider,
                record: rec,
                rtype,
                value: template(value, k("value"))?,
                ttl: s.ttl.as_ref().map_or(300, |v| *v.get_ref()),
                allow_unproven: s.allow_unproven.as_ref().is_some_and(|v| *v.get_ref()),
            })
        }
        "notify" => StepKind::Notify(NotifyStep {
            alerts: match &s.alerts {
                Some(v) => check_sinks(v, k("alerts"))?,
                None => default_sinks.to_vec(),
            },
            message: s.message.as_ref().map(|v| template(v, k("message"))).transpose()?,
        }),
        _ => unreachable!("kinds checked by keys_of"),
    })
}
