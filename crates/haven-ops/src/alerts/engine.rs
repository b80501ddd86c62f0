//! The dedup engine: [`Alerter`] turns "this condition holds" ([`Alerter::fire`]) and
//! "it no longer holds" ([`Alerter::resolve`]) into one notification per condition and
//! sink, reminders while it lasts ([`Alerter::tick`]), and one "resolved" to each sink
//! that was told it fired. Its state is one [`AlertRecord`] per alert key in an
//! [`AlertStore`], so a restarted daemon neither repeats nor forgets.
//!
//! Per sink, the record's message keeps what was told and what is owed:
//!
//! | event | sink not told yet | sink told "firing" |
//! |---|---|---|
//! | fire | owe "firing" | nothing (the details are refreshed for reminders) |
//! | tick | retry what is owed | reminder when `reminder` has passed since the last send |
//! | resolve | drop the owed "firing": nothing is sent | owe "resolved" |
//!
//! Whatever is owed is sent at once and, when that fails, at every later tick (and fire)
//! until it works: a sink that was down gets the alert when it is back. A fire while a
//! "resolved" is still owed cancels it: for that sink the condition never ended. A fire
//! after everything was resolved is a new condition (new `first_fired`).
//!
//! Time is always the caller's `now`; the engine never reads the clock (tests need no
//! waiting; the e-mail `Date:` header is the only wall-clock time, taken when sending).
//! Deliveries run one after another on the caller's thread, each bounded by its sink's
//! timeout.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{send, Alert, AlertError, AlertSinkConfig, AlertState, Notification};

/// How often a firing alert is re-sent while it lasts, unless configured.
pub const DEFAULT_REMINDER: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// The state of one alert key: a row of the catalog's `alerts` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// The alert key, e.g. `rpo:acme:db`.
    pub key: String,
    /// The condition's state (`firing` / `resolved`, [`AlertState::as_str`]).
    pub state: AlertState,
    /// When this condition started (the first fire since the last resolve).
    pub first_fired: DateTime<Utc>,
    /// When a firing notification (first or reminder) last reached any sink.
    pub last_sent: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// JSON `{"v":1,"alert":{...},"sinks":{NAME:{"told":bool,"last_sent":...,"owed":...}}}`:
    /// the latest [`Alert`] and each sink's delivery state ([`RecordMessage`]).
    pub message: String,
}

/// What [`AlertRecord::message`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMessage {
    /// Format version, 1.
    pub v: u32,
    pub alert: Alert,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkDelivery>,
}

/// One sink's side of a condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkDelivery {
    /// A "firing" of this condition reached the sink.
    #[serde(default)]
    pub told: bool,
    /// When a firing notification (first or reminder) last reached it.
    #[serde(default)]
    pub last_sent: Option<DateTime<Utc>>,
    /// The notification still owed after a failed attempt (or not yet tried).
    #[serde(default)]
    pub owed: Option<AlertState>,
}

impl AlertRecord {
    /// The message, parsed.
    pub fn decode(&self) -> Result<RecordMessage, AlertError> {
        let m: RecordMessage = serde_json::from_str(&self.message).map_err(|e| {
            AlertError::Store(format!(
                "the stored state of alert {} is unreadable: {e}",
                self.key
            ))
        })?;
        if m.v != 1 {
            return Err(AlertError::Store(format!(
                "the stored state of alert {} has format version {}; this build reads 1",
                self.key, m.v
            )));
        }
        Ok(m)
    }

    /// The latest alert of this key.
    pub fn alert(&self) -> Result<Alert, AlertError> {
        self.decode().map(|m| m.alert)
    }
}

/// Persistent alert state, one record per alert key. Contract:
/// - `put` inserts or replaces the record of `record.key`, and is durable when it
///   returns (the engine writes after each round of deliveries);
/// - `all` lists every record (resolved ones too: they may still owe a "resolved"), in
///   any order; there is one per distinct key ever fired, so it stays small;
/// - failures are [`AlertError::Store`] with a message naming the store.
///
/// The catalog's `alerts` table (key, state, first_fired, last_sent, resolved_at,
/// message) holds [`AlertRecord`] as is.
pub trait AlertStore {
    fn get(&self, key: &str) -> Result<Option<AlertRecord>, AlertError>;
    fn put(&mut self, record: &AlertRecord) -> Result<(), AlertError>;
    fn all(&self) -> Result<Vec<AlertRecord>, AlertError>;
}

/// An [`AlertStore`] in memory (tests; a daemon without a catalog).
#[derive(Debug, Clone, Default)]
pub struct MemoryAlertStore {
    records: BTreeMap<String, AlertRecord>,
}

impl MemoryAlertStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl AlertStore for MemoryAlertStore {
    fn get(&self, key: &str) -> Result<Option<AlertRecord>, AlertError> {
        Ok(self.records.get(key).cloned())
    }

    fn put(&mut self, record: &AlertRecord) -> Result<(), AlertError> {
        self.records.insert(record.key.clone(), record.clone());
        Ok(())
    }

    fn all(&self) -> Result<Vec<AlertRecord>, AlertError> {
        Ok(self.records.values().cloned().collect())
    }
}

/// The dedup engine over the declared sinks and a store.
pub struct Alerter {
    sinks: BTreeMap<String, AlertSinkConfig>,
    reminder: Option<Duration>,
    store: Box<dyn AlertStore + Send>,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("sinks", &self.sinks)
            .field("reminder", &self.reminder)
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// `sinks`: the declared `[alerts.NAME]` tables. `reminder`: how often a firing
    /// alert is re-sent while it lasts ([`DEFAULT_REMINDER`]); zero: never.
    pub fn new(
        sinks: BTreeMap<String, AlertSinkConfig>,
        reminder: std::time::Duration,
        store: Box<dyn AlertStore + Send>,
    ) -> Alerter {
        let reminder = Duration::from_std(reminder)
            .ok()
            .filter(|d| *d > Duration::zero());
        Alerter {
            sinks,
            reminder,
            store,
        }
    }

    pub fn sinks(&self) -> &BTreeMap<String, AlertSinkConfig> {
        &self.sinks
    }

    pub fn store(&self) -> &dyn AlertStore {
        &*self.store
    }

    /// The store back (e.g. to start a new `Alerter` over it, as after a restart).
    pub fn into_store(self) -> Box<dyn AlertStore + Send> {
        self.store
    }

    /// The condition `alert.key` holds (observed at `alert.time`); tell `sinks` (the
    /// tenant's, [`super::sinks_for`]) unless they were told already. Returns the
    /// failures (deliveries, to be retried by [`tick`](Self::tick); the store).
    pub fn fire(
        &mut self,
        mut alert: Alert,
        sinks: &[String],
        now: DateTime<Utc>,
    ) -> Vec<AlertError> {
        let mut errors = Vec::new();
        alert.state = AlertState::Firing;
        let previous = match self.load(&alert.key) {
            Ok(p) => p,
            Err(e) => {
                // Unreadable state: start over rather than never alert again.
                errors.push(e);
                None
            }
        };
        let (mut rec, mut msg) = match previous {
            Some((r, mut m)) if r.state == AlertState::Firing => {
                m.alert = alert.clone();
                (r, m)
            }
            Some((mut r, mut m))
                if m.sinks
                    .values()
                    .any(|s| s.owed == Some(AlertState::Resolved)) =>
            {
                // Resolved, but not every sink heard so: for those it never ended.
                m.sinks.retain(|_, s| s.owed == Some(AlertState::Resolved));
                for s in m.sinks.values_mut() {
                    s.owed = None;
                }
                m.alert = alert.clone();
                r.state = AlertState::Firing;
                r.resolved_at = None;
                (r, m)
            }
            _ => (
                AlertRecord {
                    key: alert.key.clone(),
                    state: AlertState::Firing,
                    first_fired: now,
                    last_sent: None,
                    resolved_at: None,
                    message: String::new(),
                },
                RecordMessage {
                    v: 1,
                    alert: alert.clone(),
                    sinks: BTreeMap::new(),
                },
            ),
        };
        for name in sinks {
            if !self.sinks.contains_key(name) {
                errors.push(AlertError::UnknownSink(name.clone()));
                continue;
            }
            let s = msg.sinks.entry(name.clone()).or_default();
            if !s.told && s.owed.is_none() {
                s.owed = Some(AlertState::Firing);
            }
        }
        self.deliver_owed(&rec, &mut msg, now, &mut errors);
        self.save(&mut rec, &msg, &mut errors);
        errors
    }

    /// The condition `key` no longer holds: each sink told it fired is told it is
    /// resolved; a sink that never got the firing hears nothing.
    pub fn resolve(&mut self, key: &str, now: DateTime<Utc>) -> Vec<AlertError> {
        let mut errors = Vec::new();
        let (mut rec, mut msg) = match self.load(key) {
            Ok(Some((r, m))) if r.state == AlertState::Firing => (r, m),
            Ok(_) => return errors,
            Err(e) => return vec![e],
        };
        rec.state = AlertState::Resolved;
        rec.resolved_at = Some(now);
        for s in msg.sinks.values_mut() {
            s.owed = s.told.then_some(AlertState::Resolved);
        }
        self.deliver_owed(&rec, &mut msg, now, &mut errors);
        self.save(&mut rec, &msg, &mut errors);
        errors
    }

    /// Retry what is owed and send due reminders. State of sinks no longer declared is
    /// dropped.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<AlertError> {
        let mut errors = Vec::new();
        let records = match self.store.all() {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        for mut rec in records {
            let mut msg = match rec.decode() {
                Ok(m) => m,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let before = msg.clone();
            msg.sinks.retain(|name, _| self.sinks.contains_key(name));
            if rec.state == AlertState::Firing {
                if let Some(every) = self.reminder {
                    for (name, s) in msg.sinks.iter_mut() {
                        let due = s.told
                            && s.owed.is_none()
                            && s.last_sent.is_some_and(|t| now - t >= every);
                        if due {
                            let n = Notification {
                                alert: msg.alert.clone(),
                                first_fired: rec.first_fired,
                                reminder: true,
                            };
                            match send(name, &self.sinks[name], &n) {
                                Ok(()) => s.last_sent = Some(now),
                                Err(e) => errors.push(e),
                            }
                        }
                    }
                }
            }
            self.deliver_owed(&rec, &mut msg, now, &mut errors);
            if msg != before {
                self.save(&mut rec, &msg, &mut errors);
            }
        }
        errors
    }

    fn load(&self, key: &str) -> Result<Option<(AlertRecord, RecordMessage)>, AlertError> {
        match self.store.get(key)? {
            Some(r) => {
                let m = r.decode()?;
                Ok(Some((r, m)))
            }
            None => Ok(None),
        }
    }

    fn save(&mut self, rec: &mut AlertRecord, msg: &RecordMessage, errors: &mut Vec<AlertError>) {
        rec.message = serde_json::to_string(msg).expect("JSON of plain values");
        rec.last_sent = msg.sinks.values().filter_map(|s| s.last_sent).max();
        if let Err(e) = self.store.put(rec) {
            errors.push(e);
        }
    }

    /// Send every declared sink what it is owed; what works is no longer owed.
    fn deliver_owed(
        &self,
        rec: &AlertRecord,
        msg: &mut RecordMessage,
        now: DateTime<Utc>,
        errors: &mut Vec<AlertError>,
    ) {
        for (name, s) in msg.sinks.iter_mut() {
            let (Some(owed), Some(config)) = (s.owed, self.sinks.get(name)) else {
                continue;
            };
            let mut alert = msg.alert.clone();
            alert.state = owed;
            if owed == AlertState::Resolved {
                alert.time = rec.resolved_at.unwrap_or(now);
            }
            let n = Notification {
                alert,
                first_fired: rec.first_fired,
                reminder: false,
            };
            match send(name, config, &n) {
                Ok(()) => {
                    s.owed = None;
                    if owed == AlertState::Firing {
                        s.told = true;
                        s.last_sent = Some(now);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
}
