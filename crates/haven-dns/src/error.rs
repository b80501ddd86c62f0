//! Errors of DNS updates. Rules: every message names the server (or API) and the zone or
//! record, and for credential failures the key's name (never its secret), and says what to do.
//! [`DnsError::is_transient`] tells a runbook's retry loop whether trying again can help.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("name server {server} did not answer for {name} ({detail}): check that it runs and listens there, and the firewall")]
    Unreachable {
        server: String,
        name: String,
        detail: String,
    },

    #[error(
        "name server {server} rejected TSIG key {key:?} for zone {zone} ({code}: {meaning}): {advice}"
    )]
    Tsig {
        server: String,
        zone: String,
        key: String,
        code: &'static str,
        meaning: &'static str,
        advice: &'static str,
    },

    #[error("name server {server} refused the update of zone {zone}{key_part} ({code}): {advice}", key_part = key.as_ref().map(|k| format!(" with key {k:?}")).unwrap_or_else(|| " (no key)".into()))]
    Refused {
        server: String,
        zone: String,
        key: Option<String>,
        code: &'static str,
        advice: &'static str,
    },

    #[error("name server {server} answered {code} for {name}: {advice}")]
    Rcode {
        server: String,
        name: String,
        code: &'static str,
        advice: &'static str,
    },

    #[error("name server {server}'s answer for {name} is malformed or unsigned ({detail}): check that {server} is the zone's primary and the key matches")]
    Protocol {
        server: String,
        name: String,
        detail: String,
    },

    #[error("{provider} still answers {got:?} for {name} {rtype} after the update (wanted {wanted:?}): check for a second primary or a zone that is not dynamic")]
    NotApplied {
        provider: String,
        name: String,
        rtype: &'static str,
        wanted: Vec<String>,
        got: Vec<String>,
    },

    #[error("record {name}: {detail}")]
    BadRecord { name: String, detail: String },

    #[error("{name} is not inside zone {zone}: fix the step's record or zone")]
    OutsideZone { name: String, zone: String },

    #[error("TSIG key file {}: {detail}", path.display())]
    KeyFile { path: PathBuf, detail: String },

    #[error("Cloudflare API {api} {what}: HTTP {status}{errors}: {advice}", errors = if errors.is_empty() { String::new() } else { format!(" ({errors})") })]
    Api {
        api: String,
        what: String,
        status: u16,
        errors: String,
        advice: &'static str,
    },

    #[error(
        "Cloudflare API {api} unreachable for {what} ({detail}): check api-url and the network"
    )]
    ApiUnreachable {
        api: String,
        what: String,
        detail: String,
    },

    #[error("Cloudflare API {api} has no zone for {name}: give zone-id, or check the token can read that zone")]
    NoZone { api: String, name: String },
}

impl DnsError {
    /// Whether trying again later can help (a server down or overloaded, a rate limit), as
    /// opposed to a wrong key, a refused update or a bad value, which need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            DnsError::Unreachable { .. } | DnsError::ApiUnreachable { .. } => true,
            DnsError::Rcode { code, .. } => *code == "SERVFAIL",
            DnsError::Tsig { code, .. } => *code == "BADTIME",
            DnsError::Api { status, .. } => *status == 429 || *status >= 500,
            // A secondary may not have the change yet; reading again can see it.
            DnsError::NotApplied { .. } => true,
            _ => false,
        }
    }
}
