//! Alerts: what the daemon tells people when a backup fails or is missed, a tenant's RPO
//! is breached or a verify fails, and when that is over.
//!
//! ```text
//! daemon ──fire(alert, sinks, now) / resolve(key, now) / tick(now)──> Alerter
//! Alerter (dedup, reminders, retries) ──AlertRecord per key──> AlertStore
//!         (in memory, or the catalog's `alerts` table)
//! Alerter ──Notification──> send ──> webhook::send (HTTP POST of JSON)
//!                                └─> smtp::send (one e-mail)
//! ```
//! Main types: [`AlertSinkConfig`] (the `[alerts.NAME]` tables, [`config`]), [`Alert`],
//! [`Alerter`] with its [`AlertStore`] ([`engine`]), [`AlertError`]. Routing: a tenant's
//! alerts go to its own `alerts = [...]` list, else to every declared sink
//! ([`sinks_for`]).
//!
//! Both senders are blocking and ours: TCP from std plus rustls (already built for the S3
//! backend; no new crate is compiled). reqwest is in the tree too, but only async:
//! its `blocking` feature would rebuild reqwest and everything above it and start a tokio
//! runtime per client, and SMTP needs its own client over rustls anyway ([`net`]).
//!
//! Limits: deliveries are sequential on the caller's thread (a dead sink costs up to
//! its timeout per attempt); a failed delivery is retried at every tick, without backoff;
//! name resolution is not bounded by the timeouts; HTTP redirects are not followed.

pub mod config;
pub mod engine;
mod get;
mod net;
pub mod smtp;
pub mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use config::{AlertSinkConfig, SmtpConfig, SmtpTls, WebhookConfig};
pub use engine::{
    AlertRecord, AlertStore, Alerter, MemoryAlertStore, RecordMessage, SinkDelivery,
    DEFAULT_REMINDER,
};
pub use get::http_get;

/// The conditions the daemon raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A backup failed after its retries.
    BackupFailed,
    /// A scheduled backup was skipped or missed.
    BackupMissed,
    /// A component's newest recovery point is older than the tenant's RPO.
    RpoBreached,
    /// A verify (validation) failed.
    VerifyFailed,
    /// A retention run (forget + prune) failed.
    RetentionFailed,
    /// Every reachable-or-not check of a tenant's components failed to connect (connection
    /// refused, name not resolved, timeout): the site looks dead. One per tenant.
    SourceDown,
    /// A disaster-recovery runbook's `notify` step (a notice, not a fault).
    RunbookNotice,
    /// A disaster-recovery drill failed.
    DrillFailed,
    /// A runbook's predicted RTO (its last drill) exceeds the runbook's `rto`.
    RtoExceeded,
    /// A streaming WAL receiver cannot keep up or lost continuity: its server does not
    /// answer, its slot holds too much WAL or was dropped, a timeline switched, storing
    /// fails, or `synchronous` is set but the server does not wait for it.
    WalStream,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BackupFailed => "backup-failed",
            AlertKind::BackupMissed => "backup-missed",
            AlertKind::RpoBreached => "rpo-breached",
            AlertKind::VerifyFailed => "verify-failed",
            AlertKind::RetentionFailed => "retention-failed",
            AlertKind::SourceDown => "source-down",
            AlertKind::RunbookNotice => "runbook-notice",
            AlertKind::DrillFailed => "drill-failed",
            AlertKind::RtoExceeded => "rto-exceeded",
            AlertKind::WalStream => "wal-stream",
        }
    }

    /// The start of this kind's keys ([`Alert::key_for`]): `backup`, `missed`, `rpo`,
    /// `verify`, `retention`, `source-down`, `runbook`, `drill`, `rto`, `wal`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            AlertKind::BackupFailed => "backup",
            AlertKind::BackupMissed => "missed",
            AlertKind::RpoBreached => "rpo",
            AlertKind::VerifyFailed => "verify",
            AlertKind::RetentionFailed => "retention",
            AlertKind::SourceDown => "source-down",
            AlertKind::RunbookNotice => "runbook",
            AlertKind::DrillFailed => "drill",
            AlertKind::RtoExceeded => "rto",
            AlertKind::WalStream => "wal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One condition, as raised by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identifies the condition across fires and the resolve, e.g. `rpo:acme:db`
    /// ([`Alert::key_for`]).
    pub key: String,
    pub tenant: String,
    pub component: Option<String>,
    pub kind: AlertKind,
    pub state: AlertState,
    /// One line (line breaks are flattened when sent).
    pub summary: String,
    /// Free text: the error, the job, what to look at.
    pub details: String,
    /// When the condition was observed (for a resolved notification: when it ended).
    pub time: DateTime<Utc>,
}

impl Alert {
    /// The usual key: `backup:TENANT`, `rpo:TENANT:COMPONENT`, ...
    pub fn key_for(kind: AlertKind, tenant: &str, component: Option<&str>) -> String {
        match component {
            Some(c) => format!("{}:{tenant}:{c}", kind.key_prefix()),
            None => format!("{}:{tenant}", kind.key_prefix()),
        }
    }

    /// A firing alert.
    pub fn firing(
        key: impl Into<String>,
        kind: AlertKind,
        tenant: &str,
        component: Option<&str>,
        summary: impl Into<String>,
        details: impl Into<String>,
        time: DateTime<Utc>,
    ) -> Alert {
        Alert {
            key: key.into(),
            tenant: tenant.to_string(),
            component: component.map(str::to_string),
            kind,
            state: AlertState::Firing,
            summary: summary.into(),
            details: details.into(),
            time,
        }
    }
}

/// What one sink is sent: the alert (state `resolved` for the end of a condition), when
/// the condition started, and whether this is a reminder.
#[derive(Debug, Clone)]
pub struct Notification {
    pub alert: Alert,
    pub first_fired: DateTime<Utc>,
    pub reminder: bool,
}

impl Notification {
    /// `FIRING: <summary>`, `FIRING (reminder, since ...): ...`, `RESOLVED: ...`.
    pub fn headline(&self) -> String {
        let summary = one_line(&self.alert.summary);
        match (self.alert.state, self.reminder) {
            (AlertState::Resolved, _) => format!("RESOLVED: {summary}"),
            (AlertState::Firing, false) => format!("FIRING: {summary}"),
            (AlertState::Firing, true) => format!(
                "FIRING (reminder, since {}): {summary}",
                self.first_fired.format("%Y-%m-%d %H:%M UTC")
            ),
        }
    }
}

/// Control characters (line breaks included) as spaces, runs of blanks collapsed.
pub(crate) fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Errors of alerting. Delivery errors name the sink and the server (never a URL path,
/// header value or password) and quote the server's answer.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert sink {sink}: webhook {target}: {message}")]
    Webhook {
        sink: String,
        /// `scheme://host:port` only.
        target: String,
        message: String,
    },
    #[error("alert sink {sink}: SMTP server {server}: {message}")]
    Smtp {
        sink: String,
        server: String,
        message: String,
    },
    #[error("alert sink {0:?} is not declared; add an [alerts.{0}] table or remove it from the tenant's alerts")]
    UnknownSink(String),
    #[error("alert store: {0}")]
    Store(String),
}

/// The sinks of a tenant: its own `alerts = [...]` list when it has one, else every
/// declared sink.
pub fn sinks_for(
    tenant_alerts: Option<&[String]>,
    all: &BTreeMap<String, AlertSinkConfig>,
) -> Vec<String> {
    match tenant_alerts {
        Some(own) => own.to_vec(),
        None => all.keys().cloned().collect(),
    }
}

/// Deliver one notification to one sink now (no dedup; [`Alerter`] decides when). Also
/// what a "send a test alert" command calls.
pub fn send(sink: &str, config: &AlertSinkConfig, n: &Notification) -> Result<(), AlertError> {
    match config {
        AlertSinkConfig::Webhook(c) => webhook::send(sink, c, n),
        AlertSinkConfig::Smtp(c) => smtp::send(sink, c, n),
    }
}
