//! RFC 2136 dynamic UPDATE, signed with TSIG (RFC 8945), sent to the zone's primary.
//!
//! `replace` is one UPDATE message: delete the RRset (class ANY, RFC 2136 2.5.2), then add
//! each value (2.5.1); the server applies it atomically, so a resolver never sees the name
//! empty. It is then read back from the same server (`current`) and must match. `check` sends
//! an UPDATE whose only content is a prerequisite that always holds (the zone apex is in use,
//! 2.4.4): the server authenticates the key and checks the zone's update policy, and changes
//! nothing (no update section, so no new serial).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::{DNSClass, Record, RecordType as HType};

use crate::wire::{self, htype};
use crate::{
    confirm_applied, normalize_values, DnsError, Provider, RecordSet, RecordType, TsigKey,
};

/// A zone's primary that accepts dynamic updates (BIND `allow-update { key ...; }`, Knot
/// `acl ... action update`, PowerDNS with dnsupdate on).
#[derive(Debug)]
pub struct Rfc2136 {
    server: SocketAddr,
    zone: String,
    key: Option<TsigKey>,
    timeout: Duration,
}

impl Rfc2136 {
    /// `zone` with or without the final dot; `key` None sends unsigned updates (only for
    /// servers that allow updates by address).
    pub fn new(server: SocketAddr, zone: &str, key: Option<TsigKey>, timeout: Duration) -> Rfc2136 {
        Rfc2136 {
            server,
            zone: crate::fqdn(zone),
            key,
            timeout,
        }
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    fn check_in_zone(&self, name: &str) -> Result<String, DnsError> {
        let fq = crate::fqdn(name);
        if wire::name(&self.zone)?.zone_of(&wire::name(&fq)?) {
            Ok(fq)
        } else {
            Err(DnsError::OutsideZone {
                name: fq,
                zone: self.zone.clone(),
            })
        }
    }

    fn update_message(&self) -> Result<Message, DnsError> {
        let mut msg = Message::new();
        msg.set_id(wire::random_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::query(wire::name(&self.zone)?, HType::SOA);
        zone.set_query_class(DNSClass::IN);
        msg.add_zone(zone);
        Ok(msg)
    }

    /// Signs, sends and judges one UPDATE. `what` names the record for errors.
    fn send(&self, mut msg: Message, what: &str) -> Result<(), DnsError> {
        let mut verifier = match &self.key {
            Some(key) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                msg.finalize(&key.signer(), now as u32)
                    .map_err(|e| self.protocol(what, format!("cannot sign: {e}")))?
            }
            None => None,
        };
        let bytes = msg.to_vec().map_err(|e| DnsError::BadRecord {
            name: what.to_string(),
            detail: e.to_string(),
        })?;
        let raw = wire::exchange(self.server, &bytes, self.timeout, what)?;
        let answer = wire::parse(self.server, what, &raw)?;
        if answer.message_type() != MessageType::Response || answer.op_code() != OpCode::Update {
            return Err(self.protocol(what, "the answer is not an UPDATE response".into()));
        }
        if let Some(error) = tsig_error(&answer) {
            if error != 0 {
                return Err(self.tsig_error(error));
            }
        }
        match answer.response_code() {
            ResponseCode::NoError => {}
            code => return Err(self.rcode_error(code, what)),
        }
        // A success must be signed by the same key: otherwise anyone on the path could fake
        // "done" and the runbook would report a cut-over that never happened.
        if let Some(verify) = verifier.as_mut() {
            if answer.signature().is_empty() {
                return Err(
                    self.protocol(what, "the success answer carries no TSIG signature".into())
                );
            }
            verify(&raw).map_err(|e| {
                self.protocol(
                    what,
                    format!("the answer's TSIG signature does not verify: {e}"),
                )
            })?;
        }
        Ok(())
    }

    fn protocol(&self, what: &str, detail: String) -> DnsError {
        DnsError::Protocol {
            server: self.server.to_string(),
            name: what.to_string(),
            detail,
        }
    }

    fn key_name(&self) -> String {
        self.key
            .as_ref()
            .map(|k| k.name().to_string())
            .unwrap_or_default()
    }

    fn tsig_error(&self, code: u16) -> DnsError {
        let (code, meaning, advice) = match code {
            16 => (
                "BADSIG",
                "the signature does not match",
                "the secret differs from the server's: copy the key file from the server again",
            ),
            17 => (
                "BADKEY",
                "the server does not know this key",
                "check the key name in tsig-key-file against the server's key statement",
            ),
            18 => (
                "BADTIME",
                "the clocks differ by more than 5 minutes",
                "fix this machine's or the server's clock (NTP)",
            ),
            22 => (
                "BADTRUNC",
                "truncated MAC refused",
                "use a full-length hmac-sha256 key",
            ),
            _ => (
                "TSIG error (unknown code)",
                "the server refused the signature",
                "check the key and the server's log",
            ),
        };
        DnsError::Tsig {
            server: self.server.to_string(),
            zone: self.zone.clone(),
            key: self.key_name(),
            code,
            meaning,
            advice,
        }
    }

    fn rcode_error(&self, code: ResponseCode, what: &str) -> DnsError {
        let key = self.key.as_ref().map(|k| k.name().to_string());
        let refused = |code: &'static str, advice: &'static str| DnsError::Refused {
            server: self.server.to_string(),
            zone: self.zone.clone(),
            key: key.clone(),
            code,
            advice,
        };
        match code {
            ResponseCode::Refused if key.is_some() => refused(
                "REFUSED",
                "the key is not allowed to update this zone: add it to the zone's allow-update or update-policy on the server",
            ),
            ResponseCode::Refused => refused("REFUSED", "the zone accepts only signed updates: set tsig-key-file"),
            ResponseCode::NotAuth => refused(
                "NOTAUTH",
                "the server is not the primary of this zone or did not accept the key: point server at the zone's primary",
            ),
            ResponseCode::NotZone => DnsError::OutsideZone { name: what.to_string(), zone: self.zone.clone() },
            code => DnsError::Rcode {
                server: self.server.to_string(),
                name: what.to_string(),
                code: code.to_str(),
                advice: match code {
                    ResponseCode::ServFail => "the server failed to apply it (zone file or journal not writable?); it will be retried",
                    ResponseCode::NotImp | ResponseCode::FormErr => "the server does not support dynamic updates for this zone",
                    _ => "see the server's log",
                },
            },
        }
    }
}

/// The error field of the answer's TSIG record, if it has one. hickory-proto has no accessor
/// for it; its presentation form is "alg time fudge mac oid error other", fields split by one
/// space each (the hex MAC may be empty, so plain split, not split_whitespace).
fn tsig_error(answer: &Message) -> Option<u16> {
    let record = answer
        .signature()
        .iter()
        .find(|r| r.record_type() == HType::TSIG)?;
    let text = record.data().to_string();
    let fields: Vec<&str> = text.split(' ').collect();
    if fields.len() == 7 {
        fields[5].parse().ok()
    } else {
        None
    }
}

impl Provider for Rfc2136 {
    fn describe(&self) -> String {
        match &self.key {
            Some(k) => format!(
                "rfc2136 {} zone {} key {}",
                self.server,
                self.zone,
                k.name()
            ),
            None => format!("rfc2136 {} zone {} (unsigned)", self.server, self.zone),
        }
    }

    fn replace(&self, rs: &RecordSet) -> Result<(), DnsError> {
        let name = self.check_in_zone(&rs.name)?;
        let values = normalize_values(rs.rtype, &name, &rs.values)?;
        let owner = wire::name(&name)?;
        let mut msg = self.update_message()?;
        let mut delete = Record::update0(owner.clone(), 0, htype(rs.rtype)).into_record_of_rdata();
        delete.set_dns_class(DNSClass::ANY);
        msg.add_update(delete);
        for v in &values {
            let mut add = Record::from_rdata(owner.clone(), rs.ttl, wire::rdata(rs.rtype, v)?);
            add.set_dns_class(DNSClass::IN);
            msg.add_update(add);
        }
        self.send(msg, &name)?;
        confirm_applied(self, name, rs.rtype, values)
    }

    fn delete(&self, name: &str, rtype: RecordType) -> Result<(), DnsError> {
        let name = self.check_in_zone(name)?;
        let mut msg = self.update_message()?;
        let mut delete =
            Record::update0(wire::name(&name)?, 0, htype(rtype)).into_record_of_rdata();
        delete.set_dns_class(DNSClass::ANY);
        msg.add_update(delete);
        self.send(msg, &name)?;
        let got = self.current(&name, rtype)?;
        if !got.is_empty() {
            return Err(DnsError::NotApplied {
                provider: self.describe(),
                name,
                rtype: rtype.as_str(),
                wanted: vec![],
                got,
            });
        }
        Ok(())
    }

    fn check(&self, zone_or_name: &str) -> Result<(), DnsError> {
        self.check_in_zone(zone_or_name)?;
        let mut msg = self.update_message()?;
        // 2.4.4 "Name Is In Use": the apex always is (it holds the SOA).
        let mut prereq =
            Record::update0(wire::name(&self.zone)?, 0, HType::ANY).into_record_of_rdata();
        prereq.set_dns_class(DNSClass::ANY);
        msg.add_pre_requisite(prereq);
        self.send(msg, &self.zone)
    }

    fn current(&self, name: &str, rtype: RecordType) -> Result<Vec<String>, DnsError> {
        let name = self.check_in_zone(name)?;
        wire::query(self.server, &name, rtype, self.timeout)
    }
}
