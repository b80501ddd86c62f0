//! The `[alerts.NAME]` tables: one alert sink each, by `kind`.
//!
//! ```toml
//! [alerts.ops]
//! kind = "webhook"
//! url = "https://hooks.example.com/haven"
//! headers = { Authorization = "Bearer ..." }   # optional
//! timeout = 10                                  # optional, seconds
//!
//! [alerts.oncall]
//! kind = "smtp"
//! server = "smtp.example.com:587"
//! from = "haven@example.com"
//! to = ["oncall@example.com"]
//! username = "haven"                            # optional, with password-file
//! password-file = "/etc/haven/smtp-password"
//! tls = "auto"                                  # auto (default) | starttls | tls | none
//! ```
//! Every tenant's alerts go to every declared sink unless the tenant lists its own
//! (`alerts = ["ops"]`, see [`super::sinks_for`]). [`AlertSinkConfig::validate`] checks a
//! table; its messages start with the key at fault.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default whole-request timeout of a webhook, in seconds.
pub const WEBHOOK_TIMEOUT_SECS: u64 = 10;
/// Default whole-session timeout of an SMTP delivery, in seconds.
pub const SMTP_TIMEOUT_SECS: u64 = 30;

/// One alert sink, by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AlertSinkConfig {
    Webhook(WebhookConfig),
    Smtp(SmtpConfig),
}

/// `kind = "webhook"`: an HTTP POST of a JSON document per notification, with a
/// Slack-compatible `text` field (Slack, Mattermost and Rocket.Chat incoming webhooks
/// take it as is; other receivers read the structured fields).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the JSON is POSTed to. Redirects are not followed.
    /// Errors and logs show only its scheme, host and port: the path of a Slack webhook
    /// is its secret.
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ..." }`. Their values are
    /// never shown in errors or logs. `Host`, `Content-Type`, `Content-Length`,
    /// `Connection` and `Transfer-Encoding` are set by Haven and cannot be given.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds the whole request (connect, TLS, send, answer) may take; default 10.
    pub timeout: Option<u64>,
    /// PEM file of the CA certificates to trust for `https://` instead of the system's
    /// (a private CA). Relative to the config file.
    pub ca_file: Option<PathBuf>,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// The default. Port 465: implicit TLS. Any other port (587, 25): STARTTLS when the
    /// server offers it, else plain text; but credentials (`username`) are never sent
    /// over plain text in this mode: without STARTTLS the delivery fails.
    #[default]
    Auto,
    /// STARTTLS, required: a server that does not offer it is an error.
    Starttls,
    /// Implicit TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// Plain text, also for `AUTH`: only on a trusted link (loopback, a local relay).
    None,
}

/// `kind = "smtp"`: one e-mail per notification through a submission server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmtpConfig {
    /// `host:port` of the server (`[::1]:25` for IPv6). Without a port: 465 when
    /// `tls = "tls"`, else 587.
    pub server: String,
    /// The sender address (envelope and `From:` header), e.g. `haven@example.com`.
    pub from: String,
    /// Recipient addresses; at least one. One message goes to all of them.
    pub to: Vec<String>,
    /// Login for `AUTH PLAIN` (or `AUTH LOGIN` when the server offers only that).
    /// Needs `password-file`.
    pub username: Option<String>,
    /// File holding the password (one line; a trailing newline is ignored). Read at each
    /// delivery, never logged. Relative to the config file.
    pub password_file: Option<PathBuf>,
    /// `auto` (default), `starttls`, `tls` or `none`; see [`SmtpTls`].
    #[serde(default)]
    pub tls: SmtpTls,
    /// Start of every subject line; default `[haven]`, giving
    /// `[haven] FIRING: ...` and `[haven] RESOLVED: ...`.
    pub subject_prefix: Option<String>,
    /// Seconds the whole SMTP session may take; default 30.
    pub timeout: Option<u64>,
    /// PEM file of the CA certificates to trust instead of the system's (a private CA).
    /// Relative to the config file.
    pub ca_file: Option<PathBuf>,
}

/// A problem in one table: `KEY: what is wrong and what to do`.
fn bad(key: &str, message: impl Into<String>) -> String {
    format!("{key}: {}", message.into())
}

impl AlertSinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            AlertSinkConfig::Webhook(_) => "webhook",
            AlertSinkConfig::Smtp(_) => "smtp",
        }
    }

    /// Check the table beyond its types: URL, addresses, credentials, timeouts. The
    /// message starts with the key at fault (`url: ...`, `to: ...`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AlertSinkConfig::Webhook(w) => w.validate(),
            AlertSinkConfig::Smtp(s) => s.validate(),
        }
    }

    /// Make relative `password-file` / `ca-file` paths relative to `base` (the folder of
    /// the config file).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        };
        match self {
            AlertSinkConfig::Webhook(w) => fix(&mut w.ca_file),
            AlertSinkConfig::Smtp(s) => {
                fix(&mut s.password_file);
                fix(&mut s.ca_file);
            }
        }
    }

    /// A description safe to log: no URL path, no header values, no password.
    pub fn describe(&self) -> String {
        match self {
            AlertSinkConfig::Webhook(w) => format!("webhook to {}", redact_url(&w.url)),
            AlertSinkConfig::Smtp(s) => format!(
                "e-mail to {} through {}",
                s.to.join(", "),
                s.server_addr()
                    .map_or(s.server.clone(), |(h, p)| format!("{h}:{p}"))
            ),
        }
    }
}

/// `scheme://host:port` of a URL (what errors may show), or a placeholder.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(an invalid URL)".into(),
    }
}

const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "connection",
    "transfer-encoding",
];

impl WebhookConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.unwrap_or(WEBHOOK_TIMEOUT_SECS))
    }

    fn validate(&self) -> Result<(), String> {
        let u = url::Url::parse(&self.url).map_err(|e| {
            bad(
                "url",
                format!("not a URL ({e}); give e.g. https://hooks.example.com/haven"),
            )
        })?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(bad(
                "url",
                format!(
                    "scheme {:?} is not supported; use http:// or https://",
                    u.scheme()
                ),
            ));
        }
        if u.host_str().unwrap_or("").is_empty() {
            return Err(bad("url", "the URL has no host"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "url",
                "credentials in the URL are not supported; put them in headers (e.g. Authorization)",
            ));
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(bad(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(bad(
                    "headers",
                    format!("header {name} is set by Haven; remove it"),
                ));
            }
            if value.contains(['\r', '\n']) {
                return Err(bad(
                    "headers",
                    format!("the value of header {name} contains a line break"),
                ));
            }
        }
        check_timeout(self.timeout)
    }
}

// Header values may be tokens and the URL path may be one (Slack): keep them out of Debug.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn check_timeout(t: Option<u64>) -> Result<(), String> {
    match t {
        Some(0) => Err(bad("timeout", "must be at least 1 (seconds)")),
        Some(t) if t > 3600 => Err(bad("timeout", "at most 3600 (seconds)")),
        _ => Ok(()),
    }
}

/// A plain `local@domain` address: what SMTP commands and headers can carry unquoted.
pub(crate) fn plain_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && a.len() <= 254
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c))
        }
        None => false,
    }
}

impl SmtpConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.unwrap_or(SMTP_TIMEOUT_SECS))
    }

    pub fn subject_prefix(&self) -> &str {
        self.subject_prefix.as_deref().unwrap_or("[haven]")
    }

    /// Host (without IPv6 brackets) and port of `server`.
    pub fn server_addr(&self) -> Result<(String, u16), String> {
        let s = self.server.trim();
        let default_port = if self.tls == SmtpTls::Tls { 465 } else { 587 };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or("an IPv6 address needs a closing ]")?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or("expected :PORT after ]")?),
                ),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err("no host; give host:port, e.g. smtp.example.com:587".into());
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{p:?} is not a port number"))?,
            None => default_port,
        };
        Ok((host.to_string(), port))
    }

    /// What [`SmtpTls::Auto`] means for this server.
    pub(crate) fn effective_tls(&self) -> SmtpTls {
        match self.tls {
            SmtpTls::Auto if self.server_addr().is_ok_and(|(_, p)| p == 465) => SmtpTls::Tls,
            t => t,
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.server_addr().map_err(|m| bad("server", m))?;
        if !plain_address(&self.from) {
            return Err(bad(
                "from",
                format!(
                    "{:?} is not an e-mail address like haven@example.com",
                    self.from
                ),
            ));
        }
        if self.to.is_empty() {
            return Err(bad(
                "to",
                "no recipients; give at least one, e.g. to = [\"oncall@example.com\"]",
            ));
        }
        if let Some(a) = self.to.iter().find(|a| !plain_address(a)) {
            return Err(bad(
                "to",
                format!("{a:?} is not an e-mail address like oncall@example.com"),
            ));
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => {
                return Err(bad(
                    "password-file",
                    "username is given but no password-file; add password-file = \"/path/to/file\"",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "username",
                    "password-file is given but no username; add username = \"...\"",
                ))
            }
            (Some(u), Some(_)) if u.is_empty() || u.contains(['\r', '\n', '\0']) => {
                return Err(bad("username", "empty or contains a line break"))
            }
            _ => {}
        }
        if self
            .subject_prefix
            .as_deref()
            .is_some_and(|p| p.contains(['\r', '\n']))
        {
            return Err(bad("subject-prefix", "contains a line break"));
        }
        check_timeout(self.timeout)
    }
}
