//! What a tenant restore or verify reports, per component: what was restored into what,
//! how long it took (the measured RTO), when it ran within the whole run (components run
//! side by side, so their intervals overlap), and each validation check with its result.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `fingerprint`, `probe`, `stream`.
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Restored and every check passed.
    Passed,
    /// Restored, but a check failed.
    ChecksFailed,
    /// The restore itself failed.
    Failed,
    /// Not restored (the target tenant has no such component).
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub name: String,
    pub kind: String,
    /// The target (no passwords).
    pub target: String,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub bytes: u64,
    /// Time to put the data back: the component's measured RTO.
    pub restore_seconds: f64,
    /// Time of the validation checks after it.
    pub validate_seconds: f64,
    /// When this component's restore began and its validation ended, in seconds since
    /// the run started (`TenantReport::started`): the intervals of components restored
    /// side by side overlap.
    #[serde(default)]
    pub start_seconds: f64,
    #[serde(default)]
    pub end_seconds: f64,
    pub checks: Vec<Check>,
}

impl ComponentReport {
    /// A report with nothing measured yet.
    pub fn new(name: &str, kind: &str, target: String, outcome: Outcome) -> ComponentReport {
        ComponentReport {
            name: name.to_string(),
            kind: kind.to_string(),
            target,
            outcome,
            error: None,
            bytes: 0,
            restore_seconds: 0.0,
            validate_seconds: 0.0,
            start_seconds: 0.0,
            end_seconds: 0.0,
            checks: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    /// `restore` or `verify`.
    pub action: String,
    pub tenant: String,
    /// The tenant restored into (restore), or "scratch" (verify).
    pub into: String,
    pub point: String,
    pub point_time: DateTime<Utc>,
    pub started: DateTime<Utc>,
    /// Wall time of the whole run: restores and validation (the tenant's measured RTO).
    pub seconds: f64,
    /// How many components were restored at once.
    #[serde(default)]
    pub parallelism: usize,
    pub components: Vec<ComponentReport>,
}

impl TenantReport {
    /// True when every component that was restored passed every check.
    pub fn passed(&self) -> bool {
        self.components
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Passed | Outcome::Skipped))
            && self.components.iter().any(|c| c.outcome == Outcome::Passed)
    }

    /// The report as text lines for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} of tenant {} from recovery point {} ({}) into {}\n",
            self.action,
            self.tenant,
            self.point,
            self.point_time.format("%Y-%m-%d %H:%M:%S UTC"),
            self.into
        );
        for c in &self.components {
            let status = match c.outcome {
                Outcome::Passed => "PASSED",
                Outcome::ChecksFailed => "CHECKS FAILED",
                Outcome::Failed => "FAILED",
                Outcome::Skipped => "skipped",
            };
            out += &format!(
                "  {:<12} {:<8} {:<14} restore {:>7.2} s  validate {:>6.2} s  [{:>6.2} .. {:>6.2}]  {} -> {}\n",
                c.name,
                c.kind,
                status,
                c.restore_seconds,
                c.validate_seconds,
                c.start_seconds,
                c.end_seconds,
                human_bytes(c.bytes),
                c.target
            );
            if let Some(e) = &c.error {
                out += &format!("      error: {e}\n");
            }
            for check in &c.checks {
                out += &format!(
                    "      {} {}: {}\n",
                    if check.passed { "ok  " } else { "FAIL" },
                    check.name,
                    check.detail
                );
            }
        }
        let one_by_one: f64 = self
            .components
            .iter()
            .map(|c| c.restore_seconds + c.validate_seconds)
            .sum();
        out += &format!(
            "{}: {} in {:.2} s (measured RTO), {} component(s) at a time; one after another: {:.2} s\n",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.action,
            self.seconds,
            self.parallelism,
            one_by_one
        );
        out
    }
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
