//! WAL over the replication protocol (`wal = "stream"`): `pg_receivewal` on a replication
//! slot writes the WAL into a spool folder as the server sends it; the ops layer's
//! receiver moves it from there into the repository.
//!
//! ```text
//! server ──replication slot──> pg_receivewal -D SPOOL -S SLOT --no-loop -s 1 [--synchronous]
//!                                 SPOOL/000000010000000000000007          complete segments
//!                                 SPOOL/000000010000000000000008.partial  the one being written
//!                                 SPOOL/00000002.history                  a timeline switch
//! psql: pg_replication_slots ──> SlotStatus (how much WAL the slot holds back on the server)
//! ```
//! The slot (created with its WAL reserved at once) makes the server keep every segment
//! until `pg_receivewal` confirmed it, so a
//! receiver that was down resumes where it stopped, with no gap; the price is WAL held on
//! the primary's disk, which [`SlotStatus::retained`] measures for the ops layer to alert
//! on and to bound (`slot-max-lag`). With `--synchronous` the receiver fsyncs what it
//! received and reports it flushed at once, so the server can count it as a synchronous
//! standby under its application name (the slot's name here).

use std::path::Path;

use super::lsn::Lsn;
use crate::postgres::conninfo::quote_literal;
use crate::postgres::PostgresComponent;
use crate::process::{Limits, Running};
use crate::{Result, SourceError};

/// What the server says of a replication slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// A receiver is connected to it now.
    pub active: bool,
    /// Bytes of WAL the server keeps for it (its current position minus the slot's
    /// restart position).
    pub retained: u64,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    pub wal_status: String,
    /// The server's current WAL position.
    pub current: Lsn,
    /// The server's `synchronous_standby_names`.
    pub synchronous_standby_names: String,
}

impl PostgresComponent {
    /// Create the physical slot `slot` unless it exists. With `reserve`, its WAL is
    /// reserved at once (from the last checkpoint's redo position): the server keeps every
    /// segment for it even before a receiver connects, and `pg_receivewal` starts at the
    /// slot's position. Without, it reserves from where the receiver starts streaming
    /// (what a slot made anew after a drop needs: the WAL back to the last checkpoint may
    /// already be more than `slot-max-lag`).
    pub fn ensure_slot(&self, slot: &str, reserve: bool) -> Result<()> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        let lit = quote_literal(slot);
        session.query(&format!(
            "SELECT pg_create_physical_replication_slot({lit}, {reserve}) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {lit});"
        ))?;
        session.close()
    }

    /// Commit a transaction that writes WAL (`txid_current()`): after a base backup,
    /// so that a streaming receiver completes the segment the backup ended in (it
    /// closes a segment only once WAL after it arrives; an idle server may write none
    /// for minutes).
    pub fn write_a_commit(&self) -> Result<()> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        session.query("SELECT txid_current();")?;
        session.close()
    }

    /// The slot's state, or None when it does not exist.
    pub fn slot_status(&self, slot: &str) -> Result<Option<SlotStatus>> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        let rows = session.query(&format!(
            "SELECT s.active, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint, \
             COALESCE(s.wal_status, ''), pg_current_wal_lsn(), current_setting('synchronous_standby_names') \
             FROM pg_replication_slots s WHERE s.slot_name = {};",
            quote_literal(slot)
        ))?;
        session.close()?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let fields: Vec<&str> = row.split('|').collect();
        let parsed = match fields[..] {
            [active, retained, wal_status, current, sync] => (|| {
                Some(SlotStatus {
                    active: active == "t",
                    retained: retained.parse::<i64>().ok()?.max(0) as u64,
                    wal_status: wal_status.to_string(),
                    current: current.parse().ok()?,
                    synchronous_standby_names: sync.to_string(),
                })
            })(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            SourceError::failed(
                format!("reading replication slot {slot} on {}", conn.render(false)),
                format!("unexpected answer {row:?}"),
            )
        })
    }

    /// Drop the slot (its receiver must be gone: an active slot cannot be dropped, so
    /// the walsender holding it is terminated first). The server frees the WAL it kept.
    pub fn drop_slot(&self, slot: &str) -> Result<()> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        let lit = quote_literal(slot);
        session.query(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = {lit} AND active_pid IS NOT NULL;"
        ))?;
        session.query(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {lit} AND NOT active;"
        ))?;
        session.close()
    }

    /// Start `pg_receivewal` into `spool` on `slot`, with the slot's name as its
    /// application name. It runs until the connection ends (`--no-loop`: the caller
    /// decides about reconnecting) or it is stopped; no timeout applies.
    pub fn receive_wal(&self, spool: &Path, slot: &str, synchronous: bool) -> Result<Running> {
        let conn = self.conn()?;
        let tool = self.tool("pg_receivewal")?;
        let what = format!("pg_receivewal from {} (slot {slot})", conn.render(false));
        let mut cmd = self.command(&tool, &conn, &what);
        cmd.limits(Limits::default())
            .env("PGAPPNAME", slot)
            .arg("-D")
            .arg(spool)
            .args(["-S", slot, "--no-loop", "-s", "1", "-d"])
            .arg(conn.render(false));
        if synchronous {
            cmd.arg("--synchronous");
        }
        cmd.spawn()
    }
}

/// The slot name Haven uses for `component` of `tenant` when the config names none:
/// `haven_<tenant>_<component>`, lowercased, other characters as `_`, at most 63 bytes.
pub fn default_slot_name(tenant: &str, component: &str) -> String {
    let raw = format!("haven_{tenant}_{component}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// Whether `s` can name a replication slot: 1 to 63 of `a-z 0-9 _`.
pub fn valid_slot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Bytes as PostgreSQL writes sizes: a number and `B`, `kB`, `MB`, `GB` or `TB` (powers
/// of 1024; `KiB`... accepted too).
pub fn parse_wal_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use a number and a unit, e.g. 10GB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" | "kib" | "k" => 10,
        "mb" | "mib" | "m" => 20,
        "gb" | "gib" | "g" => 30,
        "tb" | "tib" | "t" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: the unit is one of B, kB, MB, GB, TB (e.g. 10GB)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_made_valid() {
        assert_eq!(default_slot_name("acme", "db"), "haven_acme_db");
        assert_eq!(default_slot_name("Acme-EU", "db.1"), "haven_acme_eu_db_1");
        assert!(valid_slot_name(&default_slot_name(&"x".repeat(80), "db")));
        assert_eq!(default_slot_name(&"x".repeat(80), "db").len(), 63);
        assert!(!valid_slot_name("Haven"));
        assert!(!valid_slot_name(""));
    }

    #[test]
    fn sizes_read_like_postgresql_writes_them() {
        assert_eq!(parse_wal_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_wal_size("512 MB"), Ok(512 << 20));
        assert_eq!(parse_wal_size("64kB"), Ok(64 << 10));
        assert_eq!(parse_wal_size("1000"), Ok(1000));
        assert!(parse_wal_size("10 parsecs").is_err());
        assert!(parse_wal_size("GB").is_err());
        assert!(parse_wal_size("99999999999TB").is_err());
    }
}
