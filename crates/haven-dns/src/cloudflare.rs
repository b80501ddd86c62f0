//! Cloudflare's v4 API (https://developers.cloudflare.com/api/resources/dns/), as documented:
//! `GET /zones?name=ZONE` finds the zone id when it is not configured (trying the record's
//! parent names, longest first), `GET /zones/{id}/dns_records?type=T&name=N` lists the
//! records, `PATCH /zones/{id}/dns_records/{rid}` changes one's content (TTL and proxied are
//! left as they are), `POST` creates a missing one, `DELETE` removes extra ones. Every call
//! carries `Authorization: Bearer TOKEN`; the token is never logged or shown in errors.
//!
//! Only a local stand-in of the API is reachable from the test machines (tests/support/
//! cloudflare_standin.py); docs/DNS.md says so.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{confirm_applied, normalize_values, DnsError, Provider, RecordSet, RecordType};

pub struct Cloudflare {
    api: String,
    token: String,
    zone_id: Mutex<Option<String>>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// One DNS record as the API returns it (the fields this provider reads).
#[derive(Debug)]
struct CfRecord {
    id: String,
    content: String,
}

impl Cloudflare {
    /// `api_base` such as "https://api.cloudflare.com/client/v4"; `zone_id` None looks it up
    /// by name on first use.
    pub fn new(
        api_base: &str,
        token: String,
        zone_id: Option<String>,
        timeout: Duration,
    ) -> Cloudflare {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are judged here, with the API's own error messages.
            .http_status_as_error(false)
            .build()
            .into();
        Cloudflare {
            api: api_base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            zone_id: Mutex::new(zone_id.filter(|z| !z.is_empty())),
            agent,
        }
    }

    /// One call; returns the envelope's `result` on success.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, DnsError> {
        let url = format!("{}{}", self.api, path);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            _ => unreachable!("method {method} without a body"),
        };
        let mut response = result.map_err(|e| DnsError::ApiUnreachable {
            api: self.api.clone(),
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let envelope: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let success = envelope
            .get("success")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if (200..300).contains(&status) && success {
            return Ok(envelope.get("result").cloned().unwrap_or(Value::Null));
        }
        let errors = envelope
            .get("errors")
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").map(|c| c.to_string()).unwrap_or_default(),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let advice = match status {
            400 => "the request was refused as invalid: check the record name and value",
            401 | 403 => "the token was refused: check token-file and that the token has Zone DNS Edit permission for this zone",
            404 => "not found: check zone-id and the record name",
            429 => "rate limited; it will be retried",
            s if s >= 500 => "Cloudflare failed; it will be retried",
            _ => "see the API's error message",
        };
        Err(DnsError::Api {
            api: self.api.clone(),
            what: what.to_string(),
            status,
            errors,
            advice,
        })
    }

    /// The zone id: configured, cached, or found by walking the name's parents.
    fn zone_for(&self, name: &str) -> Result<String, DnsError> {
        if let Some(id) = self
            .zone_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(id);
        }
        let bare = name.trim_end_matches('.');
        let labels: Vec<&str> = bare.split('.').collect();
        for start in 0..labels.len().saturating_sub(1) {
            let candidate = labels[start..].join(".");
            let found = self.call(
                "GET",
                &format!("/zones?name={}", enc(&candidate)),
                None,
                &format!("zone lookup {candidate}"),
            )?;
            if let Some(id) = found
                .as_array()
                .and_then(|a| a.first())
                .and_then(|z| z.get("id"))
                .and_then(Value::as_str)
            {
                *self.zone_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
                return Ok(id.to_string());
            }
        }
        Err(DnsError::NoZone {
            api: self.api.clone(),
            name: crate::fqdn(name),
        })
    }

    fn records(
        &self,
        zone: &str,
        name: &str,
        rtype: RecordType,
    ) -> Result<Vec<CfRecord>, DnsError> {
        let bare = name.trim_end_matches('.');
        let path = format!(
            "/zones/{zone}/dns_records?type={}&name={}&per_page=100",
            rtype.as_str(),
            enc(bare)
        );
        let result = self.call("GET", &path, None, &format!("list {bare} {rtype}"))?;
        Ok(result
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| {
                        Some(CfRecord {
                            id: r.get("id")?.as_str()?.to_string(),
                            content: r.get("content")?.as_str()?.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Percent-encodes a query value (names are ASCII; this covers what a name can hold).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Cloudflare writes CNAME targets without the final dot; compare in our canonical form.
fn canonical(rtype: RecordType, name: &str, content: &str) -> String {
    normalize_values(rtype, name, &[content.to_string()])
        .ok()
        .and_then(|v| v.into_iter().next())
        .unwrap_or_else(|| content.to_string())
}

impl Provider for Cloudflare {
    fn describe(&self) -> String {
        match self
            .zone_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
        {
            Some(id) => format!("cloudflare {} zone-id {id}", self.api),
            None => format!("cloudflare {}", self.api),
        }
    }

    fn replace(&self, rs: &RecordSet) -> Result<(), DnsError> {
        let name = crate::fqdn(&rs.name);
        let bare = name.trim_end_matches('.').to_string();
        let values = normalize_values(rs.rtype, &name, &rs.values)?;
        let zone = self.zone_for(&name)?;
        let existing = self.records(&zone, &name, rs.rtype)?;
        // Records already holding a wanted value stay untouched; the others are reused for the
        // missing values (PATCH keeps their TTL and proxied flag), then created or removed.
        let (mut keep, mut spare) = (Vec::new(), Vec::new());
        for r in existing {
            let c = canonical(rs.rtype, &name, &r.content);
            if values.contains(&c) && !keep.contains(&c) {
                keep.push(c);
            } else {
                spare.push(r);
            }
        }
        let mut spare = spare.into_iter();
        for v in values.iter().filter(|v| !keep.contains(v)) {
            let content = if rs.rtype == RecordType::Cname {
                v.trim_end_matches('.').to_string()
            } else {
                v.clone()
            };
            match spare.next() {
                Some(r) => {
                    self.call(
                        "PATCH",
                        &format!("/zones/{zone}/dns_records/{}", r.id),
                        Some(json!({ "content": content })),
                        &format!("update {bare} {}", rs.rtype),
                    )?;
                }
                None => {
                    let ttl = if rs.ttl == 0 { 1 } else { rs.ttl };
                    let body = json!({ "type": rs.rtype.as_str(), "name": bare, "content": content, "ttl": ttl, "proxied": false });
                    self.call(
                        "POST",
                        &format!("/zones/{zone}/dns_records"),
                        Some(body),
                        &format!("create {bare} {}", rs.rtype),
                    )?;
                }
            }
        }
        for r in spare {
            self.call(
                "DELETE",
                &format!("/zones/{zone}/dns_records/{}", r.id),
                None,
                &format!("delete extra {bare} {}", rs.rtype),
            )?;
        }
        confirm_applied(self, name, rs.rtype, values)
    }

    fn delete(&self, name: &str, rtype: RecordType) -> Result<(), DnsError> {
        let name = crate::fqdn(name);
        let zone = self.zone_for(&name)?;
        for r in self.records(&zone, &name, rtype)? {
            self.call(
                "DELETE",
                &format!("/zones/{zone}/dns_records/{}", r.id),
                None,
                &format!("delete {} {rtype}", name.trim_end_matches('.')),
            )?;
        }
        Ok(())
    }

    fn check(&self, zone_or_name: &str) -> Result<(), DnsError> {
        let zone = self.zone_for(zone_or_name)?;
        // Reading the zone's records proves the token is accepted for it; nothing is written.
        self.call(
            "GET",
            &format!("/zones/{zone}/dns_records?per_page=1"),
            None,
            "check (list records)",
        )?;
        Ok(())
    }

    fn current(&self, name: &str, rtype: RecordType) -> Result<Vec<String>, DnsError> {
        let name = crate::fqdn(name);
        let zone = self.zone_for(&name)?;
        let mut values: Vec<String> = self
            .records(&zone, &name, rtype)?
            .iter()
            .map(|r| canonical(rtype, &name, &r.content))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}
