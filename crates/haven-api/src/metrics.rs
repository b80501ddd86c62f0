//! `/metrics` in the Prometheus text exposition format (0.0.4): every family once, with its
//! HELP and TYPE lines, samples grouped under it, label values escaped.
//!
//! Families (labels):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `haven_last_success_timestamp_seconds` | gauge | tenant, component |
//! | `haven_last_backup_duration_seconds` | gauge | tenant, component |
//! | `haven_last_backup_bytes_added` | gauge | tenant, component |
//! | `haven_effective_rpo_seconds` | gauge | tenant, component |
//! | `haven_rpo_breached` | gauge (0/1) | tenant, component |
//! | `haven_rpo_target_seconds` | gauge | tenant |
//! | `haven_backup_failures_total` | counter | tenant |
//! | `haven_backup_retries_total` | counter | tenant |
//! | `haven_verify_failures_total` | counter | tenant |
//! | `haven_queue_depth` | gauge | |
//! | `haven_running_jobs` | gauge | |
//!
//! A component that never had a recovery point has no last-success, duration or bytes
//! sample, and an effective RPO of `+Inf`, so `haven_effective_rpo_seconds >
//! on(tenant) group_left haven_rpo_target_seconds` fires for it too.

use std::fmt::Write;

use haven_ops::daemon::view::MetricsSnapshot;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written: HELP and TYPE first, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_label(self.out, val);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value);
        self.out.push('\n');
    }
}

/// Label values escape backslash, double quote and line feed, nothing else.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The snapshot as Prometheus text.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::new();
    type ComponentValue = fn(&haven_ops::daemon::view::ComponentStatus) -> Option<f64>;
    let per_component: [(&'static str, &str, ComponentValue); 5] = [
        (
            "haven_last_success_timestamp_seconds",
            "Unix time of the newest complete recovery point holding the component.",
            |c| c.last_success.map(|t| t.timestamp_millis() as f64 / 1000.0),
        ),
        (
            "haven_last_backup_duration_seconds",
            "Seconds the component's last successful backup took.",
            |c| c.last_duration_seconds,
        ),
        (
            "haven_last_backup_bytes_added",
            "Bytes newly stored by the component's last successful backup.",
            |c| c.last_bytes_added.map(|b| b as f64),
        ),
        (
            "haven_effective_rpo_seconds",
            "Seconds since the component's newest recovery point (+Inf when there is none).",
            |c| Some(c.effective_rpo_seconds.unwrap_or(f64::INFINITY)),
        ),
        (
            "haven_rpo_breached",
            "1 when the component's effective RPO is above the tenant's target.",
            |c| Some(if c.rpo_breached { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, value) in per_component {
        let mut family = Family::new(&mut out, name, "gauge", help);
        for t in &m.tenants {
            for c in &t.components {
                if let Some(v) = value(c) {
                    family.sample(&[("tenant", &t.tenant), ("component", &c.name)], v);
                }
            }
        }
    }
    type TenantValue = fn(&haven_ops::daemon::view::TenantMetrics) -> u64;
    let per_tenant: [(&'static str, &str, &str, TenantValue); 4] = [
        (
            "haven_rpo_target_seconds",
            "gauge",
            "The tenant's RPO target in seconds.",
            |t| t.rpo_target_seconds,
        ),
        (
            "haven_backup_failures_total",
            "counter",
            "Failed backup runs of the tenant.",
            |t| t.backup_failures_total,
        ),
        (
            "haven_backup_retries_total",
            "counter",
            "Backup runs of the tenant that were retries of a failed one.",
            |t| t.backup_retries_total,
        ),
        (
            "haven_verify_failures_total",
            "counter",
            "Verify drills of the tenant that failed.",
            |t| t.verify_failures_total,
        ),
    ];
    for (name, kind, help, value) in per_tenant {
        let mut family = Family::new(&mut out, name, kind, help);
        for t in &m.tenants {
            family.sample(&[("tenant", &t.tenant)], value(t) as f64);
        }
    }
    Family::new(
        &mut out,
        "haven_queue_depth",
        "gauge",
        "Jobs waiting for a run slot.",
    )
    .sample(&[], m.queue_depth as f64);
    Family::new(&mut out, "haven_running_jobs", "gauge", "Jobs running now.")
        .sample(&[], m.running_jobs as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label(&mut out, "a\\b\"c\nd é");
        assert_eq!(out, "a\\\\b\\\"c\\nd é");
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        let mut out = String::new();
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1.5, 3.0, 1e21] {
            push_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "+Inf -Inf NaN 1.5 3 1000000000000000000000 ");
    }
}
