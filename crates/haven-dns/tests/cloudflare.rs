//! The Cloudflare provider against a local stand-in of the v4 API (support/
//! cloudflare_standin.py): the real API is not reachable from the test machines, so these
//! tests prove the calls are the documented ones, in the right order, with the token.

mod support;

use std::time::Duration;

use haven_dns::{Cloudflare, DnsError, Provider, RecordSet, RecordType};
use serde_json::Value;
use support::cloudflare::Standin;

const TOKEN: &str = "cf-test-token-3f9a";
const T: Duration = Duration::from_secs(5);

fn standin() -> Standin {
    Standin::start(
        TOKEN,
        &[("example.com", "zone-example"), ("other.org", "zone-other")],
        &[
            ("acme.example.com", "A", "192.0.2.1", 300, true),
            ("two.example.com", "A", "192.0.2.7", 120, false),
            ("two.example.com", "A", "192.0.2.8", 120, false),
        ],
    )
}

fn a(name: &str, values: &[&str]) -> RecordSet {
    RecordSet {
        name: name.into(),
        rtype: RecordType::A,
        ttl: 60,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn writes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["method"] != "GET")
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect()
}

fn record<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["name"] == name).collect()
}

#[test]
fn replace_finds_the_zone_by_name_and_patches_content_keeping_ttl_and_proxied() {
    let cf = standin();
    let dns = Cloudflare::new(&cf.api, TOKEN.into(), None, T);
    dns.replace(&a("acme.example.com.", &["198.51.100.2"]))
        .unwrap();

    let records = cf.records();
    let acme = record(&records, "acme.example.com");
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0]["content"], "198.51.100.2");
    assert_eq!(acme[0]["ttl"], 300, "PATCH keeps the TTL");
    assert_eq!(acme[0]["proxied"], true, "PATCH keeps proxied");

    let log = cf.log();
    let paths: Vec<&str> = log.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths[0], "/client/v4/zones?name=acme.example.com",
        "longest name first"
    );
    assert_eq!(paths[1], "/client/v4/zones?name=example.com");
    assert!(
        paths[2]
            .starts_with("/client/v4/zones/zone-example/dns_records?type=A&name=acme.example.com"),
        "{paths:?}"
    );
    assert_eq!(
        writes(&log),
        vec![format!(
            "PATCH /client/v4/zones/zone-example/dns_records/{}",
            acme[0]["id"].as_str().unwrap()
        )]
    );
    assert_eq!(
        log.iter()
            .filter(|e| e["method"] == "PATCH")
            .map(|e| e["body"].clone())
            .collect::<Vec<_>>(),
        vec![serde_json::json!({"content": "198.51.100.2"})]
    );
    assert_eq!(
        dns.current("acme.example.com", RecordType::A).unwrap(),
        vec!["198.51.100.2"]
    );

    // Repeating it writes nothing (a resumed run).
    let before = writes(&cf.log()).len();
    dns.replace(&a("acme.example.com.", &["198.51.100.2"]))
        .unwrap();
    assert_eq!(writes(&cf.log()).len(), before);
}

#[test]
fn replace_creates_missing_records_and_removes_extra_ones() {
    let cf = standin();
    let dns = Cloudflare::new(&cf.api, TOKEN.into(), Some("zone-example".into()), T);
    dns.replace(&a("new.example.com.", &["203.0.113.5"]))
        .unwrap();
    let records = cf.records();
    let new = record(&records, "new.example.com");
    assert_eq!(
        (
            new.len(),
            new[0]["content"].as_str(),
            new[0]["ttl"].as_u64(),
            new[0]["proxied"].as_bool()
        ),
        (1, Some("203.0.113.5"), Some(60), Some(false))
    );
    assert!(
        cf.log()
            .iter()
            .all(|e| !e["path"].as_str().unwrap().contains("zones?name")),
        "a configured zone id needs no lookup"
    );

    // Two records -> one: the one already right stays, the other goes.
    dns.replace(&a("two.example.com.", &["192.0.2.8"])).unwrap();
    let records = cf.records();
    let two = record(&records, "two.example.com");
    assert_eq!(two.len(), 1);
    assert_eq!(two[0]["content"], "192.0.2.8");
    assert_eq!(
        writes(&cf.log())
            .iter()
            .filter(|w| w.starts_with("DELETE"))
            .count(),
        1
    );

    dns.delete("two.example.com", RecordType::A).unwrap();
    assert!(record(&cf.records(), "two.example.com").is_empty());
    dns.replace(&RecordSet {
        name: "www.example.com.".into(),
        rtype: RecordType::Cname,
        ttl: 60,
        values: vec!["acme.example.com.".into()],
    })
    .unwrap();
    assert_eq!(
        record(&cf.records(), "www.example.com")[0]["content"],
        "acme.example.com",
        "Cloudflare stores CNAME targets without the dot"
    );
    assert_eq!(
        dns.current("www.example.com.", RecordType::Cname).unwrap(),
        vec!["acme.example.com."]
    );
}

#[test]
fn a_refused_token_names_the_api_never_the_token_and_changes_nothing() {
    let cf = standin();
    let dns = Cloudflare::new(&cf.api, "wrong-token".into(), None, T);
    let err = dns
        .replace(&a("acme.example.com.", &["198.51.100.2"]))
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, DnsError::Api { status: 403, .. }), "{err:?}");
    assert!(
        msg.contains(&cf.api) && msg.contains("token-file") && msg.contains("Invalid access token"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-token")
            && !format!("{err:?}").contains("wrong-token")
            && !format!("{dns:?}").contains("wrong-token")
    );
    assert!(!err.is_transient());
    assert_eq!(
        record(&cf.records(), "acme.example.com")[0]["content"],
        "192.0.2.1"
    );
}

#[test]
fn check_reads_only_and_fails_on_a_bad_token_or_unknown_zone() {
    let cf = standin();
    Cloudflare::new(&cf.api, TOKEN.into(), None, T)
        .check("example.com.")
        .unwrap();
    assert!(writes(&cf.log()).is_empty());
    let err = Cloudflare::new(&cf.api, "nope".into(), None, T)
        .check("example.com.")
        .unwrap_err();
    assert!(matches!(err, DnsError::Api { status: 403, .. }), "{err:?}");
    let err = Cloudflare::new(&cf.api, TOKEN.into(), None, T)
        .check("example.net.")
        .unwrap_err();
    assert!(matches!(err, DnsError::NoZone { .. }), "{err:?}");
    assert!(writes(&cf.log()).is_empty());
}

#[test]
fn server_errors_are_transient_and_a_dead_api_too() {
    let cf = standin();
    let dns = Cloudflare::new(&cf.api, TOKEN.into(), Some("zone-example".into()), T);
    cf.fail_next(503, 1);
    let err = dns
        .replace(&a("acme.example.com.", &["198.51.100.2"]))
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    dns.replace(&a("acme.example.com.", &["198.51.100.2"]))
        .unwrap();

    let dead = Cloudflare::new(
        "http://127.0.0.1:9/client/v4",
        TOKEN.into(),
        Some("z".into()),
        Duration::from_secs(2),
    );
    let err = dead
        .current("acme.example.com.", RecordType::A)
        .unwrap_err();
    assert!(
        matches!(err, DnsError::ApiUnreachable { .. }) && err.is_transient(),
        "{err:?}"
    );
}
