//! The shared backend contract suite against a real S3 server (moto on loopback), and
//! the S3-specific failures: missing bucket, refused credentials, closed port, a
//! prefix holding foreign objects.

mod moto;

use haven_s3::{Credentials, S3Backend, S3Location};
use haven_store::{ErrorClass, FileKind, ReadBackend, WriteBackend};
use moto::Moto;

fn creds() -> Credentials {
    Credentials {
        access_key_id: moto::ACCESS_KEY.into(),
        secret_access_key: moto::SECRET_KEY.into(),
        session_token: None,
    }
}

fn backend(url: &str) -> S3Backend {
    S3Backend::new(S3Location::parse_with(url, None, None).unwrap(), creds()).unwrap()
}

#[test]
fn contract_suite_with_prefix_and_at_bucket_root() {
    let server = Moto::start();
    server.create_bucket("suite");
    let b = backend(&format!("s3:{}/suite/some/prefix", server.endpoint));
    haven_store::suite::run_all(&b);
    let keys = server.keys("suite");
    assert!(
        keys.iter().all(|k| k.starts_with("some/prefix/")),
        "every object under the prefix: {keys:?}"
    );
    assert!(keys.contains(&"some/prefix/data/ab/ab01".to_string()));

    server.create_bucket("root");
    haven_store::suite::run_all(&backend(&format!("s3:{}/root", server.endpoint)));
}

#[test]
fn listing_pages_through_more_than_one_thousand_objects() {
    let server = Moto::start();
    server.create_bucket("many");
    let b = backend(&format!("s3:{}/many/p", server.endpoint));
    b.create().unwrap();
    let names: Vec<String> = (0..1100).map(|i| format!("{i:04x}")).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(275) {
            let b = &b;
            s.spawn(move || {
                for n in chunk {
                    b.write(FileKind::Lock, n, b"x").unwrap();
                }
            });
        }
    });
    assert_eq!(b.list(FileKind::Lock).unwrap().len(), 1100);
}

#[test]
fn failures_are_classified_and_name_the_url() {
    let server = Moto::start();
    // Missing bucket: permanent, says so, nothing created.
    let url = format!("s3:{}/nosuchbucket/p", server.endpoint);
    let e = backend(&url).list(FileKind::Marker).unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&url) && text.contains("bucket nosuchbucket does not exist"),
        "{text}"
    );
    assert!(backend(&url).create().is_err());
    assert!(!server.bucket_exists("nosuchbucket"));

    // A prefix holding something else: create refuses, the object stays alone.
    server.create_bucket("foreign");
    server.put_object("foreign", "p/photo.jpg", b"not haven");
    let url = format!("s3:{}/foreign/p", server.endpoint);
    let b = backend(&url);
    assert!(b.list(FileKind::Marker).unwrap().is_empty());
    let e = b.create().unwrap_err();
    assert!(
        e.to_string().contains(&url) && e.to_string().contains("already holds objects"),
        "{e}"
    );
    assert_eq!(server.keys("foreign"), vec!["p/photo.jpg".to_string()]);

    // Nothing listening: transient, names the endpoint; the secret never appears.
    let port = moto::closed_port();
    let url = format!("s3:http://127.0.0.1:{port}/b/p");
    let e = backend(&url).list(FileKind::Marker).unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(!e.to_string().contains(moto::SECRET_KEY), "{e}");
}

#[test]
fn refused_credentials_are_permanent_access_denied() {
    let server = Moto::start_with_auth();
    let url = format!("s3:{}/bucket/p", server.endpoint);
    let e = backend(&url).list(FileKind::Marker).unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&url)
            && text.contains("access denied: check the credentials (from the given keys)"),
        "{text}"
    );
    assert!(!text.contains(moto::SECRET_KEY), "{text}");
}
