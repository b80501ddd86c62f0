//! Plans: when and how the daemon backs a tenant up, how long points are kept, what RPO
//! is promised, how failures are retried and who is alerted. Every key has a default, so
//! a tenant without any of them gets the documented plan: daily at 03:00 UTC, keep 15
//! daily points, RPO 24 h, 3 attempts 5 minutes apart, every declared alert sink.
//!
//! ```toml
//! [daemon]                          # all optional
//! state-dir = "/var/lib/haven"      # the catalog (SQLite) lives here
//! listen = "127.0.0.1:8470"
//! api-token-file = "/etc/haven/api-token"   # or HAVEN_API_TOKEN
//! concurrency = 2                   # tenants backed up at the same time
//! retention-schedule = "30 4 * * *" # forget + prune, per repository
//! reminder = "4h"                   # a firing alert is re-sent this often
//! shutdown-grace = "30s"            # on SIGTERM, running jobs get this long to finish
//! job-timeout = "24h"               # a job still running then is stopped (its programs killed)
//!
//! [tenants.acme]
//! schedule = "0 3 * * *"            # cron, UTC (a leading seconds field is allowed)
//! retention = { keep-daily = 15 }   # keep-last/hourly/daily/weekly/monthly/yearly, keep-within
//! rpo = "24h"
//! retries = { attempts = 3, backoff = "5m", parallel = 4 }
//! alerts = ["ops"]                  # default: every [alerts.*] sink
//! verify-schedule = "0 6 * * 0"     # optional restore drills
//! probe-every = "30s"               # optional: probe the systems between backups
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use haven_repo::retention::KeepPolicy;

/// `5m`, `24h`, `30s`, `15d`, `1h30m` (one parser for every duration in the config).
pub use haven_sources::process::{format_span, parse_span};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// e.g. "30d": keep every point newer than this before the newest one.
    pub keep_within: Option<String>,
}

impl RawRetention {
    pub fn policy(&self) -> Result<KeepPolicy, String> {
        let within = match &self.keep_within {
            Some(w) => Some(haven_repo::retention::parse_duration(w)?),
            None => None,
        };
        let p = KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within,
            tags: vec![],
        };
        if p.is_empty() || p.keeps_nothing() {
            return Err("the retention keeps nothing: give at least one keep-* rule above 0, e.g. { keep-daily = 15 }".into());
        }
        Ok(p)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRetries {
    pub attempts: Option<u32>,
    pub backoff: Option<String>,
    pub parallel: Option<usize>,
}

/// How failed components are retried within one backup run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Tries of different components of one run that may run at the same time: each
    /// failed component waits and retries on its own, beside the others.
    pub parallel: usize,
}

impl Retries {
    /// One try per component (`tenant backup` on the command line).
    pub const ONCE: Retries = Retries {
        attempts: 1,
        backoff: Duration::ZERO,
        parallel: 1,
    };
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 3,
            backoff: Duration::from_secs(300),
            parallel: 4,
        }
    }
}

/// A tenant's validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub schedule: String,
    pub retention: KeepPolicy,
    pub rpo: Duration,
    pub retries: Retries,
    /// Sinks to alert (`None`: every declared sink).
    pub alerts: Option<Vec<String>>,
    pub verify_schedule: Option<String>,
    /// Probe the tenant's systems this often between backups (`probe-every`): a dead
    /// site is alerted (`source-down`) without waiting for the next backup slot.
    pub probe_every: Option<Duration>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            schedule: "0 3 * * *".into(),
            retention: KeepPolicy {
                daily: Some(15),
                ..Default::default()
            },
            rpo: Duration::from_secs(24 * 3600),
            retries: Retries::default(),
            alerts: None,
            verify_schedule: None,
            probe_every: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub concurrency: Option<usize>,
    pub retention_schedule: Option<String>,
    pub reminder: Option<String>,
    pub shutdown_grace: Option<String>,
    pub job_timeout: Option<String>,
}

/// The daemon's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where the API token comes from (read at start; HAVEN_API_TOKEN wins).
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub concurrency: usize,
    pub retention_schedule: String,
    pub reminder: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are abandoned
    /// (marked interrupted, retried at the next start).
    pub shutdown_grace: Duration,
    /// The deadline of every job: when it passes, every program the job still runs is
    /// stopped (with its process group) and the job fails, so a hung dump tool cannot
    /// hold the repository's lock for ever.
    pub job_timeout: Duration,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            state_dir: PathBuf::from("/var/lib/haven"),
            listen: "127.0.0.1:8470".parse().expect("valid address"),
            api_token: None,
            api_token_file: None,
            concurrency: 2,
            retention_schedule: "30 4 * * *".into(),
            reminder: Duration::from_secs(4 * 3600),
            shutdown_grace: Duration::from_secs(30),
            job_timeout: Duration::from_secs(24 * 3600),
        }
    }
}
