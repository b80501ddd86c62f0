//! RFC 2136 updates signed with TSIG against a real BIND 9 started on loopback (support/
//! bind.rs): every change is read back from the server, and failures leave the zone as it
//! was (same SOA serial).

mod support;

use std::time::Duration;

use haven_dns::{DnsError, Provider, RecordSet, RecordType, Rfc2136, TsigKey};
use support::bind::{Bind, ZONE};

const T: Duration = Duration::from_secs(5);

fn provider(bind: &Bind, key: Option<TsigKey>) -> Rfc2136 {
    Rfc2136::new(bind.addr, ZONE, key, T)
}

fn a(name: &str, values: &[&str]) -> RecordSet {
    RecordSet {
        name: name.into(),
        rtype: RecordType::A,
        ttl: 60,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn replace_points_the_name_at_the_new_site_and_bumps_the_serial() {
    let bind = Bind::start();
    let dns = provider(&bind, Some(bind.key()));
    assert_eq!(bind.answer("acme", RecordType::A), vec!["127.0.0.1"]);
    let before = bind.serial();

    dns.replace(&a("acme.example.test.", &["127.0.0.2"]))
        .unwrap();
    assert_eq!(
        bind.answer("acme", RecordType::A),
        vec!["127.0.0.2"],
        "the old address must be gone"
    );
    assert_eq!(
        dns.current("acme.example.test", RecordType::A).unwrap(),
        vec!["127.0.0.2"]
    );
    let after = bind.serial();
    assert!(after > before, "serial {before} -> {after}");

    // Idempotent: a resumed run repeats it without harm.
    dns.replace(&a("acme.example.test.", &["127.0.0.2"]))
        .unwrap();
    assert_eq!(bind.answer("acme", RecordType::A), vec!["127.0.0.2"]);

    // Several values, a new name, other types.
    dns.replace(&a("web.example.test.", &["10.0.0.2", "10.0.0.1"]))
        .unwrap();
    assert_eq!(
        bind.answer("web", RecordType::A),
        vec!["10.0.0.1", "10.0.0.2"]
    );
    dns.replace(&RecordSet {
        name: "v6.example.test.".into(),
        rtype: RecordType::Aaaa,
        ttl: 60,
        values: vec!["2001:db8::2".into()],
    })
    .unwrap();
    assert_eq!(bind.answer("v6", RecordType::Aaaa), vec!["2001:db8::2"]);
    dns.replace(&RecordSet {
        name: "www.example.test.".into(),
        rtype: RecordType::Cname,
        ttl: 60,
        values: vec!["acme.example.test".into()],
    })
    .unwrap();
    assert_eq!(
        bind.answer("www", RecordType::Cname),
        vec!["acme.example.test."]
    );
}

#[test]
fn delete_removes_the_rrset_and_absent_is_fine() {
    let bind = Bind::start();
    let dns = provider(&bind, Some(bind.key()));
    dns.delete("acme.example.test.", RecordType::A).unwrap();
    assert!(bind.answer("acme", RecordType::A).is_empty());
    dns.delete("acme.example.test.", RecordType::A).unwrap();
    dns.delete("never-was.example.test.", RecordType::Txt)
        .unwrap();
}

#[test]
fn wrong_secret_fails_naming_server_and_key_and_changes_nothing() {
    let bind = Bind::start();
    let before = bind.serial();
    let wrong = TsigKey::from_file(&bind.wrong_secret_file).unwrap();
    let err = provider(&bind, Some(wrong))
        .replace(&a("acme.example.test.", &["127.0.0.9"]))
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        matches!(err, DnsError::Tsig { code, .. } if code == "BADSIG"),
        "{err:?}"
    );
    assert!(
        msg.contains(&bind.addr.to_string()) && msg.contains("haven-test."),
        "{msg}"
    );
    assert!(!err.is_transient());
    assert_eq!(bind.serial(), before);
    assert_eq!(bind.answer("acme", RecordType::A), vec!["127.0.0.1"]);

    let unknown = TsigKey::from_file(&bind.unknown_key_file).unwrap();
    let err = provider(&bind, Some(unknown))
        .replace(&a("acme.example.test.", &["127.0.0.9"]))
        .unwrap_err();
    assert!(
        matches!(err, DnsError::Tsig { code, .. } if code == "BADKEY"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not-known."), "{err}");

    // Unsigned: the zone only takes signed updates.
    let err = provider(&bind, None)
        .replace(&a("acme.example.test.", &["127.0.0.9"]))
        .unwrap_err();
    assert!(matches!(err, DnsError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("tsig-key-file"), "{err}");
    assert_eq!(bind.serial(), before);
}

#[test]
fn check_proves_the_key_and_changes_nothing() {
    let bind = Bind::start();
    let before = bind.serial();
    provider(&bind, Some(bind.key())).check(ZONE).unwrap();
    provider(&bind, Some(bind.key()))
        .check("acme.example.test.")
        .unwrap();
    let wrong = TsigKey::from_file(&bind.wrong_secret_file).unwrap();
    let err = provider(&bind, Some(wrong)).check(ZONE).unwrap_err();
    assert!(
        err.to_string().contains("BADSIG") && err.to_string().contains("haven-test."),
        "{err}"
    );
    let err = provider(&bind, Some(bind.key()))
        .check("acme.other.test.")
        .unwrap_err();
    assert!(matches!(err, DnsError::OutsideZone { .. }), "{err:?}");
    assert_eq!(bind.serial(), before, "check must not change the zone");
}

#[test]
fn a_big_txt_set_goes_over_tcp_both_ways() {
    let bind = Bind::start();
    let dns = provider(&bind, Some(bind.key()));
    // 40 values of 200 bytes: an 8 KB UPDATE (TCP from the start) and an answer larger than
    // the 1232-byte UDP buffer (TC, then TCP).
    let values: Vec<String> = (0..40)
        .map(|i| format!("{i:03}-{}", "x".repeat(196)))
        .collect();
    let rs = RecordSet {
        name: "big.example.test.".into(),
        rtype: RecordType::Txt,
        ttl: 60,
        values: values.clone(),
    };
    dns.replace(&rs).unwrap();
    let got = bind.answer("big", RecordType::Txt);
    assert_eq!(got.len(), 40);
    assert_eq!(got, values);
    // A value longer than one 255-byte character-string is split and read back whole.
    let long = "y".repeat(600);
    dns.replace(&RecordSet {
        name: "long.example.test.".into(),
        rtype: RecordType::Txt,
        ttl: 60,
        values: vec![long.clone()],
    })
    .unwrap();
    assert_eq!(bind.answer("long", RecordType::Txt), vec![long]);
}

#[test]
fn a_dead_server_is_a_transient_error_naming_it() {
    // A port nobody listens on: connection refused (or a timeout), both retryable.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let dns = Rfc2136::new(addr, ZONE, None, Duration::from_millis(500));
    let err = dns
        .replace(&a("acme.example.test.", &["127.0.0.2"]))
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
