//! DNS record updates for disaster-recovery runbooks: the last step of a failover points a
//! name at the new site.
//!
//! Main types: [`RecordSet`] (what a name should answer), the [`Provider`] trait (replace,
//! delete, read back, dry-run check), and its two implementations: [`Rfc2136`] (dynamic
//! UPDATE signed with a [`TsigKey`], sent to the zone's primary over UDP, TCP when the message
//! is large or the answer truncated) and [`Cloudflare`] (the v4 REST API). [`query`] and
//! [`soa_serial`] ask a server directly, for verification and tests.
//!
//! Data flow of an RFC 2136 replace: `RecordSet` -> one UPDATE message (delete the RRset, add
//! each value) -> TSIG-signed (hickory-proto) -> `wire::exchange` (std sockets) -> response
//! code and TSIG error mapped to [`DnsError`] -> `current()` reads the answer back and the
//! replace fails unless it matches. Spec: docs/DNS.md; choices: docs/adr/0013-dns.md.

mod cloudflare;
mod error;
mod rfc2136;
mod tsig;
mod wire;

use std::fmt;
use std::str::FromStr;

pub use cloudflare::Cloudflare;
pub use error::DnsError;
pub use rfc2136::Rfc2136;
pub use tsig::TsigKey;
pub use wire::{query, soa_serial};

/// The record types a runbook may point at a new site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Txt,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordType {
    type Err = DnsError;
    fn from_str(s: &str) -> Result<Self, DnsError> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(RecordType::A),
            "AAAA" => Ok(RecordType::Aaaa),
            "CNAME" => Ok(RecordType::Cname),
            "TXT" => Ok(RecordType::Txt),
            _ => Err(DnsError::BadRecord {
                name: String::new(),
                detail: format!("record type {s:?} is not supported: use A, AAAA, CNAME or TXT"),
            }),
        }
    }
}

/// What one name answers for one type: the desired state a provider makes true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSet {
    /// Fully qualified name; a missing final dot is added.
    pub name: String,
    pub rtype: RecordType,
    pub ttl: u32,
    /// A/AAAA: addresses; CNAME: one target name; TXT: each value one record.
    pub values: Vec<String>,
}

/// Where a runbook's `dns` step changes a record. Every method is idempotent, so a resumed
/// run may repeat an interrupted `replace`.
pub trait Provider: Send + Sync {
    /// "rfc2136 127.0.0.1:53 zone example.com. key haven." — for logs and errors (no secret).
    fn describe(&self) -> String;
    /// Make `rs.name`/`rs.rtype` answer exactly `rs.values`, then read it back.
    fn replace(&self, rs: &RecordSet) -> Result<(), DnsError>;
    /// Remove every record of this name and type (absent already is fine).
    fn delete(&self, name: &str, rtype: RecordType) -> Result<(), DnsError>;
    /// Dry run: the server answers for the zone and accepts the credentials; changes nothing.
    fn check(&self, zone_or_name: &str) -> Result<(), DnsError>;
    /// The values the provider serves now for this name and type (sorted).
    fn current(&self, name: &str, rtype: RecordType) -> Result<Vec<String>, DnsError>;
}

/// "acme.example.com" -> "acme.example.com."; the form every API of this crate takes.
pub fn fqdn(name: &str) -> String {
    let name = name.trim();
    if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.", name.to_ascii_lowercase())
    }
}

/// After a change: the provider must now serve exactly `values` (normalized) for the name,
/// read back from it; else [`DnsError::NotApplied`] names what it serves instead.
pub(crate) fn confirm_applied(
    provider: &dyn Provider,
    name: String,
    rtype: RecordType,
    values: Vec<String>,
) -> Result<(), DnsError> {
    let got = provider.current(&name, rtype)?;
    if got != values {
        return Err(DnsError::NotApplied {
            provider: provider.describe(),
            name,
            rtype: rtype.as_str(),
            wanted: values,
            got,
        });
    }
    Ok(())
}

/// Values in the form `current()` returns, so a replace can compare them: A/AAAA parsed and
/// printed canonically, CNAME as an fqdn, TXT as given; sorted and deduplicated.
pub(crate) fn normalize_values(
    rtype: RecordType,
    name: &str,
    values: &[String],
) -> Result<Vec<String>, DnsError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let bad = |what: &str| DnsError::BadRecord {
            name: name.to_string(),
            detail: format!("value {v:?} is not {what}"),
        };
        let norm = match rtype {
            RecordType::A => v
                .trim()
                .parse::<std::net::Ipv4Addr>()
                .map_err(|_| bad("an IPv4 address"))?
                .to_string(),
            RecordType::Aaaa => v
                .trim()
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("an IPv6 address"))?
                .to_string(),
            RecordType::Cname => {
                if v.trim().is_empty() {
                    return Err(bad("a host name"));
                }
                fqdn(v)
            }
            RecordType::Txt => v.clone(),
        };
        out.push(norm);
    }
    if rtype == RecordType::Cname && out.len() > 1 {
        return Err(DnsError::BadRecord {
            name: name.to_string(),
            detail: "a CNAME has exactly one value".into(),
        });
    }
    if out.is_empty() {
        return Err(DnsError::BadRecord {
            name: name.to_string(),
            detail: "no value given: use delete to remove a record".into(),
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_types_parse_both_cases() {
        assert_eq!("aaaa".parse::<RecordType>().unwrap(), RecordType::Aaaa);
        assert_eq!("TXT".parse::<RecordType>().unwrap(), RecordType::Txt);
        assert!("MX"
            .parse::<RecordType>()
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }

    #[test]
    fn values_are_normalized_for_comparison() {
        let v = normalize_values(
            RecordType::A,
            "a.",
            &["10.0.0.2".into(), " 10.0.0.1".into(), "10.0.0.2".into()],
        )
        .unwrap();
        assert_eq!(v, vec!["10.0.0.1", "10.0.0.2"]);
        assert!(normalize_values(RecordType::A, "a.", &["::1".into()]).is_err());
        assert_eq!(
            normalize_values(RecordType::Cname, "a.", &["B.Example.".into()]).unwrap(),
            vec!["b.example."]
        );
        assert!(normalize_values(RecordType::Cname, "a.", &["b.".into(), "c.".into()]).is_err());
        assert!(normalize_values(RecordType::Txt, "a.", &[]).is_err());
    }
}
