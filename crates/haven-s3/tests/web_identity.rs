//! [`WebIdentity`] against moto's STS (see tests/moto for what moto does not check): keys
//! are fetched once and reused while fresh, fetched again once due for renewal, and the
//! token file is read at each exchange. The CLI's use of them is in the haven crate's
//! `tests/s3.rs`.

mod moto;

use std::time::Duration;

use haven_s3::credentials::WebIdentity;
use moto::Moto;

const ROLE: &str = "arn:aws:iam::123456789012:role/haven-renewal";

fn provider(server: &Moto, token: &std::path::Path, session: &str) -> WebIdentity {
    WebIdentity::new(
        ROLE.into(),
        token.into(),
        session.into(),
        server.endpoint.clone(),
    )
}

fn sessions(server: &Moto, name: &str) -> usize {
    server
        .sts_sessions()
        .iter()
        .filter(|(role, session)| role == ROLE && session == name)
        .count()
}

#[test]
fn keys_are_reused_while_fresh_and_fetched_again_when_due() {
    let server = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.renewal.sig\n").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Sessions last an hour: the second request gets the same keys, and STS saw one.
    let fresh = provider(&server, &token, "fresh");
    let first = rt.block_on(fresh.current()).unwrap();
    let b = rt.block_on(fresh.current()).unwrap();
    assert_eq!(first.key_id, b.key_id);
    assert!(
        first.token.is_some(),
        "temporary keys carry a session token"
    );
    assert_eq!(sessions(&server, "fresh"), 1);

    // A renewal margin longer than the session: every request is due, so each one
    // exchanges the token again and gets new keys.
    let due = provider(&server, &token, "due").renew_before(Duration::from_secs(7200));
    let a = rt.block_on(due.current()).unwrap();
    let b = rt.block_on(due.current()).unwrap();
    assert_ne!(a.key_id, b.key_id);
    assert_eq!(sessions(&server, "due"), 2);

    // The token file is read at each exchange: gone, the renewal fails naming it.
    std::fs::remove_file(&token).unwrap();
    let e = rt.block_on(due.current()).unwrap_err();
    assert!(
        e.contains("web identity token file") && e.contains(token.to_str().unwrap()),
        "{e}"
    );
    // The provider holding fresh keys does not need the file until they are due.
    assert_eq!(rt.block_on(fresh.current()).unwrap().key_id, first.key_id);
    assert_eq!(sessions(&server, "fresh"), 1);
}
