//! Disaster-recovery runbooks: `[runbooks.NAME]` in `haven.toml`. The raw serde layer
//! (`runbook/check.rs`: `deny_unknown_fields`, kebab-case, spans kept) is checked into the
//! validated [`Runbook`]: its steps form an acyclic graph by `needs`, every variable names
//! something a dependency defines, every tenant, component and alert sink exists. The
//! engine (crate `haven-dr`) runs it; `docs/DR.md` is the spec, `docs/CONFIG.md` lists
//! the keys.
//!
//! ```text
//! haven.toml [runbooks.X] ──RawRunbook (serde)──> check::runbook ──> Runbook { steps }
//!   (cycle, unknown step, undefined ${...}, bad duration ... → ConfigError with line and key)
//! Runbook ──haven_dr::Engine──> steps run in `needs` order, independent ones in parallel
//! ```
//!
//! Outputs a later step may use as `${steps.S.K}` ([`StepKind::outputs`]): restore
//! `point`, `seconds`, `passed`; command: the `KEY=VALUE` lines it prints (declare them
//! with `outputs = [...]` to have them checked at load; without it any key is accepted
//! and checked when the step has run); http `status`, `body`; sql `answer`; dns
//! `previous`, `value`; wait `seconds`; notify none.

pub(crate) mod check;
pub mod template;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
pub use template::{Template, Var};

pub(crate) use check::{runbook as check_runbook, RawRunbook};

/// A validated runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runbook {
    pub name: String,
    /// Restore from this tenant's points.
    pub tenant: String,
    /// Into this tenant's components (replaced by scratch targets in a drill).
    pub into: String,
    /// The target recovery time; a drill slower than this alerts (`rto:TENANT:RUNBOOK`).
    pub rto: Option<Duration>,
    /// When the daemon drills this runbook (cron, UTC).
    #[serde(skip)]
    pub drill_schedule: Option<Schedule>,
    /// The record every dns step changes in a drill instead of its own (deleted after).
    pub drill_record: Option<String>,
    /// Sinks told about drills and notices: `alerts`, else the tenant's, else every sink.
    pub alerts: Vec<String>,
    /// In the order written; [`Runbook::order`] gives an order that respects `needs`.
    pub steps: Vec<Step>,
}

/// What a step does when it has failed after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// The run stops (steps already running finish) and is failed.
    #[default]
    Stop,
    /// The failure is recorded; steps that need this one run as if it had succeeded
    /// (its outputs are empty).
    Continue,
}

/// One step of a runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// Steps that must have finished (succeeded, or failed with on-failure = continue).
    pub needs: Vec<String>,
    /// Each attempt's limit (a default per kind when not given: [`StepKind::default_timeout`]).
    pub timeout: Duration,
    /// Attempts after the first (0: none).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    pub on_failure: OnFailure,
    pub kind: StepKind,
}

/// A step's action, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Restore(RestoreStep),
    Command(CommandStep),
    Http(HttpCheck),
    Sql(SqlStep),
    Dns(DnsStep),
    Wait(WaitStep),
    Notify(NotifyStep),
}

/// `kind = "restore"`: restore the chosen point of `tenant` into `into` and validate it
/// (fingerprints + health probes); a failed validation fails the step and leaves the
/// run unproven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreStep {
    /// Only these components (default: all of the point's).
    pub components: Option<Vec<String>>,
}

/// `kind = "command"`: a program and its arguments (no shell), run in its own process
/// group (killed with everything it started on timeout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStep {
    pub run: Vec<Template>,
    /// The output keys it prints as `KEY=VALUE` lines (None: not declared, any key).
    pub outputs: Option<Vec<String>>,
    /// May be run again when a killed run is resumed (default false: resume stops for a
    /// decision).
    pub idempotent: bool,
}

/// `kind = "http"` (and `wait` with a `url`): GET `url` until it answers
/// `expect-status` and its body contains `expect-body`, or the step's timeout passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheck {
    pub url: Template,
    pub expect_status: u16,
    pub expect_body: Option<Template>,
    /// Pause between two tries within one attempt.
    pub interval: Duration,
}

/// `kind = "sql"`: a query run with `psql` against a PostgreSQL component of `into`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlStep {
    /// The component of `into` (default: its only postgres component).
    pub component: String,
    pub query: Template,
    /// The answer expected (psql unaligned, tuples only, trimmed); None: any answer.
    pub expect: Option<Template>,
}

/// A DNS record type a dns step may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsType {
    A,
    Aaaa,
    Cname,
    Txt,
}

impl DnsType {
    pub fn parse(s: &str) -> Option<DnsType> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Some(DnsType::A),
            "AAAA" => Some(DnsType::Aaaa),
            "CNAME" => Some(DnsType::Cname),
            "TXT" => Some(DnsType::Txt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
            DnsType::Cname => "CNAME",
            DnsType::Txt => "TXT",
        }
    }
}

/// Where a dns step sends its change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DnsProvider {
    /// RFC 2136 dynamic update signed with TSIG.
    Rfc2136 {
        /// `HOST:PORT` of the primary server.
        server: String,
        /// The zone, absolute (`example.com.`).
        zone: String,
        /// A BIND key file (`key "name" { algorithm hmac-sha256; secret "..."; };`).
        tsig_key_file: PathBuf,
    },
    /// Cloudflare's v4 API.
    Cloudflare {
        api_url: String,
        /// None: looked up from `zone`.
        zone_id: Option<String>,
        zone: Option<String>,
        token_file: PathBuf,
    },
}

/// `kind = "dns"`: replace the record's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsStep {
    pub provider: DnsProvider,
    /// Absolute name (`acme.example.com.`).
    pub record: Template,
    pub rtype: DnsType,
    pub value: Template,
    pub ttl: u32,
    /// May run although a proof step (restore validation, http, sql) failed.
    pub allow_unproven: bool,
}

/// `kind = "wait"`: a pause, or an http check polled until it passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WaitStep {
    For(Duration),
    Until(HttpCheck),
}

/// `kind = "notify"`: a runbook notice (`AlertKind::RunbookNotice`) to these sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyStep {
    pub alerts: Vec<String>,
    pub message: Option<Template>,
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Restore(_) => "restore",
            StepKind::Command(_) => "command",
            StepKind::Http(_) => "http",
            StepKind::Sql(_) => "sql",
            StepKind::Dns(_) => "dns",
            StepKind::Wait(_) => "wait",
            StepKind::Notify(_) => "notify",
        }
    }

    /// The output keys the step defines; None: dynamic (an undeclared command's).
    pub fn outputs(&self) -> Option<Vec<&str>> {
        Some(match self {
            StepKind::Restore(_) => vec!["point", "seconds", "passed"],
            StepKind::Command(c) => {
                return c
                    .outputs
                    .as_ref()
                    .map(|o| o.iter().map(String::as_str).collect())
            }
            StepKind::Http(_) => vec!["status", "body"],
            StepKind::Sql(_) => vec!["answer"],
            StepKind::Dns(_) => vec!["previous", "value"],
            StepKind::Wait(_) => vec!["seconds"],
            StepKind::Notify(_) => vec![],
        })
    }

    /// A step whose failure means the restored tenant is not proven: after it failed, no
    /// dns step runs unless it says `allow-unproven = true`.
    pub fn is_proof(&self) -> bool {
        matches!(
            self,
            StepKind::Restore(_) | StepKind::Http(_) | StepKind::Sql(_)
        )
    }

    /// May run again after a killed run (its effect does not depend on how often it ran).
    pub fn is_idempotent(&self) -> bool {
        match self {
            StepKind::Command(c) => c.idempotent,
            // A notice sent twice is a duplicate message, not a wrong state.
            _ => true,
        }
    }

    /// The limit of one attempt when the step gives no `timeout`.
    pub fn default_timeout(&self) -> Duration {
        let min = |m: u64| Duration::from_secs(m * 60);
        match self {
            StepKind::Restore(_) => min(24 * 60),
            StepKind::Command(_) => min(60),
            StepKind::Http(_) => min(5),
            StepKind::Sql(_) => min(5),
            StepKind::Dns(_) => min(2),
            StepKind::Wait(WaitStep::For(d)) => *d + min(1),
            StepKind::Wait(WaitStep::Until(_)) => min(30),
            StepKind::Notify(_) => min(2),
        }
    }

    /// Every template the step renders when it starts.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            StepKind::Restore(_) => vec![],
            StepKind::Command(c) => c.run.iter().collect(),
            StepKind::Http(h) | StepKind::Wait(WaitStep::Until(h)) => std::iter::once(&h.url)
                .chain(h.expect_body.as_ref())
                .collect(),
            StepKind::Wait(WaitStep::For(_)) => vec![],
            StepKind::Sql(s) => std::iter::once(&s.query).chain(s.expect.as_ref()).collect(),
            StepKind::Dns(d) => vec![&d.record, &d.value],
            StepKind::Notify(n) => n.message.iter().collect(),
        }
    }
}

impl Runbook {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Steps in an order where each comes after everything it needs (validated acyclic).
    pub fn order(&self) -> Vec<&Step> {
        let mut done: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        while out.len() < self.steps.len() {
            let before = out.len();
            for s in &self.steps {
                if !done.contains(&s.name.as_str())
                    && s.needs.iter().all(|n| done.contains(&n.as_str()))
                {
                    done.push(&s.name);
                    out.push(s);
                }
            }
            assert!(
                out.len() > before,
                "runbook {} has a cycle (validated at load)",
                self.name
            );
        }
        out
    }

    /// Every step `name` depends on, directly or through others.
    pub fn ancestors(&self, name: &str) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = self
            .step(name)
            .map(|s| s.needs.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(n) = todo.pop() {
            if seen.contains(&n) {
                continue;
            }
            seen.push(n);
            if let Some(s) = self.step(n) {
                todo.extend(s.needs.iter().map(String::as_str));
            }
        }
        seen
    }

    /// Whether a dns step is in the runbook (a drill then needs `drill-record`).
    pub fn has_dns(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Dns(_)))
    }
}
