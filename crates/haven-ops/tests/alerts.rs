//! Alerts against real receivers the tests start: an HTTP server (std `TcpListener`,
//! recording each request) and a real SMTP server, aiosmtpd (PyPI; installed with pip
//! when missing) run by a small handler script that writes each accepted message to a
//! file and can refuse recipients, require a login, or require STARTTLS (with a
//! certificate from a throwaway CA made by `openssl`). Time is injected: reminders need
//! no waiting.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use haven_ops::alerts::{
    sinks_for, Alert, AlertError, AlertKind, AlertSinkConfig, AlertState, Alerter,
    MemoryAlertStore, SmtpConfig, SmtpTls, WebhookConfig,
};

// --- an HTTP receiver ------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
}

/// Records every request; answers with `status` (and `answer` as the body).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
    answer: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        Self::listen(TcpListener::bind("127.0.0.1:0").expect("binding a port"))
    }

    fn start_on(port: u16) -> Receiver {
        Self::listen(TcpListener::bind(("127.0.0.1", port)).expect("binding the port again"))
    }

    fn listen(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let answer = Arc::new(Mutex::new("ok".to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st, a, s) = (
            requests.clone(),
            status.clone(),
            answer.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve(conn, &r, st.load(Ordering::SeqCst), &a.lock().unwrap());
                }
            }
        });
        Receiver {
            port,
            requests,
            status,
            answer,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn answer_with(&self, status: u16, body: &str) {
        self.status.store(status, Ordering::SeqCst);
        *self.answer.lock().unwrap() = body.to_string();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, log: &Mutex<Vec<Request>>, status: u16, answer: &str) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return, // the wake-up connection of Drop
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    log.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = conn.write_all(reply.as_bytes());
}

mod common;
use common::smtp::{free_port, SmtpServer};

// --- helpers -------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 3, 0, 0).unwrap()
}

fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

fn webhook(url: &str) -> AlertSinkConfig {
    AlertSinkConfig::Webhook(WebhookConfig {
        url: url.to_string(),
        headers: BTreeMap::from([("X-Token".to_string(), "s3cret-token".to_string())]),
        timeout: Some(5),
        ca_file: None,
    })
}

fn smtp(server: &str, to: &[&str]) -> SmtpConfig {
    SmtpConfig {
        server: server.to_string(),
        from: "haven@example.com".into(),
        to: to.iter().map(|s| s.to_string()).collect(),
        username: None,
        password_file: None,
        tls: SmtpTls::Auto,
        subject_prefix: None,
        timeout: Some(10),
        ca_file: None,
    }
}

fn rpo_alert(at: DateTime<Utc>) -> Alert {
    Alert::firing(
        Alert::key_for(AlertKind::RpoBreached, "acme", Some("db")),
        AlertKind::RpoBreached,
        "acme",
        Some("db"),
        "acme/db: newest recovery point is 26 h old (RPO 24 h) <check>",
        "Last good point 2024-04-30T01:00:00Z; the last two runs failed.\n.a line starting with a dot",
        at,
    )
}

fn alerter(sinks: BTreeMap<String, AlertSinkConfig>) -> Alerter {
    Alerter::new(
        sinks,
        Duration::from_secs(4 * 3600),
        Box::new(MemoryAlertStore::new()),
    )
}

fn all_sinks(a: &Alerter) -> Vec<String> {
    sinks_for(None, a.sinks())
}

fn no_errors(errors: Vec<AlertError>) {
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
}

// --- tests ----------------------------------------------------------------------------------

/// The whole life of a condition at two sinks: one firing each, repeats silent, a
/// reminder after the interval, one resolved each, then silence.
#[test]
fn firing_once_reminder_after_interval_resolved_once() {
    let hook = Receiver::start();
    let mail = SmtpServer::start(serde_json::json!({}));
    let sinks = BTreeMap::from([
        (
            "ops".to_string(),
            webhook(&hook.url("/services/T0/B0/secretpath?x=1")),
        ),
        (
            "oncall".to_string(),
            AlertSinkConfig::Smtp(smtp(
                &mail.server(),
                &["oncall@example.com", "boss@example.com"],
            )),
        ),
    ]);
    let mut a = alerter(sinks);
    let route = all_sinks(&a);

    no_errors(a.fire(rpo_alert(t0()), &route, t0()));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/services/T0/B0/secretpath?x=1")
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Token"), Some("s3cret-token"));
    let j = r.json();
    assert_eq!(
        j["text"],
        "[haven] FIRING: acme/db: newest recovery point is 26 h old (RPO 24 h) &lt;check&gt;"
    );
    assert_eq!(j["state"], "firing");
    assert_eq!(j["key"], "rpo:acme:db");
    assert_eq!(j["tenant"], "acme");
    assert_eq!(j["component"], "db");
    assert_eq!(j["kind"], "rpo-breached");
    assert_eq!(j["reminder"], false);
    assert!(j["details"]
        .as_str()
        .unwrap()
        .contains("the last two runs failed"));
    assert_eq!(j["time"], "2024-05-01T03:00:00Z");

    let mails = mail.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.mail_from, "haven@example.com");
    assert_eq!(m.rcpt_tos, ["oncall@example.com", "boss@example.com"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[haven] FIRING: acme/db: newest recovery point is 26 h old (RPO 24 h) <check>")
    );
    assert_eq!(m.header("From").as_deref(), Some("haven@example.com"));
    assert_eq!(
        m.header("To").as_deref(),
        Some("oncall@example.com, boss@example.com")
    );
    assert!(
        m.header("Date").is_some()
            && m.header("Message-ID")
                .is_some_and(|i| i.ends_with("@example.com>"))
    );
    assert_eq!(
        m.header("X-Haven-Alert-Key").as_deref(),
        Some("rpo:acme:db")
    );
    assert!(m.body().contains("Tenant:     acme"), "{}", m.body());
    assert!(m.body().contains("Component:  db"));
    // Dot-stuffing undone by the server: the line arrives as written.
    assert!(
        m.body().contains("\r\n.a line starting with a dot\r\n"),
        "{}",
        m.body()
    );

    // The same condition again, and ticks before the reminder is due: nothing.
    no_errors(a.fire(rpo_alert(t0() + minutes(5)), &route, t0() + minutes(5)));
    no_errors(a.tick(t0() + minutes(60)));
    no_errors(a.tick(t0() + minutes(239)));
    assert_eq!(hook.requests().len(), 1);
    assert_eq!(mail.mails().len(), 1);

    // Four hours after the last send: a reminder to each, once.
    no_errors(a.tick(t0() + minutes(240)));
    no_errors(a.tick(t0() + minutes(241)));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    let j = reqs[1].json();
    assert_eq!(j["reminder"], true);
    assert_eq!(j["state"], "firing");
    assert!(j["text"]
        .as_str()
        .unwrap()
        .starts_with("[haven] FIRING (reminder, since 2024-05-01 03:00 UTC): acme/db"));
    let mails = mail.mails();
    assert_eq!(mails.len(), 2);
    assert!(mails[1]
        .header("Subject")
        .unwrap()
        .starts_with("[haven] FIRING (reminder, since 2024-05-01 03:00 UTC)"));

    // Resolved: once to each, then nothing more, whatever happens.
    let end = t0() + minutes(300);
    no_errors(a.resolve("rpo:acme:db", end));
    no_errors(a.resolve("rpo:acme:db", end + minutes(1)));
    no_errors(a.tick(end + minutes(24 * 60)));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 3);
    let j = reqs[2].json();
    assert_eq!(j["state"], "resolved");
    assert_eq!(j["time"], "2024-05-01T08:00:00Z");
    assert!(j["text"]
        .as_str()
        .unwrap()
        .starts_with("[haven] RESOLVED: acme/db"));
    let mails = mail.mails();
    assert_eq!(mails.len(), 3);
    assert!(mails[2]
        .header("Subject")
        .unwrap()
        .starts_with("[haven] RESOLVED: acme/db"));

    // A new occurrence later is a new condition: a new firing.
    no_errors(a.fire(rpo_alert(end + minutes(600)), &route, end + minutes(600)));
    assert_eq!(hook.requests().len(), 4);
    assert_eq!(mail.mails().len(), 4);
}

/// The state lives in the store: a new engine over it (a restarted daemon) does not
/// repeat the firing and still sends the resolved.
#[test]
fn state_survives_a_restart() {
    let hook = Receiver::start();
    let sinks = BTreeMap::from([("ops".to_string(), webhook(&hook.url("/hook")))]);
    let mut a = alerter(sinks.clone());
    let alert = Alert::firing(
        "backup:acme",
        AlertKind::BackupFailed,
        "acme",
        None,
        "backup of tenant acme failed",
        "db: pg_dump: connection refused (3 attempts)",
        t0(),
    );
    no_errors(a.fire(alert.clone(), &["ops".into()], t0()));
    let store = a.into_store();
    let rec = store.get("backup:acme").unwrap().unwrap();
    assert_eq!(rec.state, AlertState::Firing);
    assert_eq!(rec.last_sent, Some(t0()));
    assert_eq!(rec.alert().unwrap().summary, "backup of tenant acme failed");

    let mut b = Alerter::new(sinks, Duration::from_secs(4 * 3600), store);
    no_errors(b.fire(alert, &["ops".into()], t0() + minutes(30)));
    no_errors(b.tick(t0() + minutes(31)));
    assert_eq!(hook.requests().len(), 1);
    no_errors(b.resolve("backup:acme", t0() + minutes(60)));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].json()["state"], "resolved");
    assert_eq!(
        b.store().get("backup:acme").unwrap().unwrap().resolved_at,
        Some(t0() + minutes(60))
    );
}

/// A webhook that is down: the error names the sink and the host (not the secret path);
/// the e-mail goes out once; the webhook gets the alert at the next tick once it is back.
#[test]
fn webhook_down_is_reported_and_delivered_when_back() {
    let port = free_port(); // nothing listens there
    let mail = SmtpServer::start(serde_json::json!({}));
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/secretpath");
    let sinks = BTreeMap::from([
        ("ops".to_string(), webhook(&url)),
        (
            "oncall".to_string(),
            AlertSinkConfig::Smtp(smtp(&mail.server(), &["oncall@example.com"])),
        ),
    ]);
    let mut a = alerter(sinks);
    let route = all_sinks(&a);

    let errors = a.fire(rpo_alert(t0()), &route, t0());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let msg = errors[0].to_string();
    assert!(msg.contains("alert sink ops"), "{msg}");
    assert!(msg.contains(&format!("http://127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(
        !msg.contains("secretpath") && !msg.contains("s3cret"),
        "{msg}"
    );
    assert_eq!(mail.mails().len(), 1);

    // Still down at the next tick: reported again, nothing duplicated by e-mail.
    assert_eq!(a.tick(t0() + minutes(1)).len(), 1);
    assert_eq!(mail.mails().len(), 1);

    let hook = Receiver::start_on(port);
    no_errors(a.tick(t0() + minutes(2)));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["state"], "firing");
    assert_eq!(reqs[0].json()["reminder"], false);
    assert_eq!(mail.mails().len(), 1);
    no_errors(a.tick(t0() + minutes(3)));
    assert_eq!(hook.requests().len(), 1);
}

/// A receiver answering with an error status: the status and its body are reported;
/// once it accepts, the alert goes through.
#[test]
fn webhook_error_status_is_reported_and_retried() {
    let hook = Receiver::start();
    hook.answer_with(500, "invalid_payload");
    let sinks = BTreeMap::from([("ops".to_string(), webhook(&hook.url("/hook")))]);
    let mut a = alerter(sinks);
    let errors = a.fire(rpo_alert(t0()), &["ops".into()], t0());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains("invalid_payload"),
        "{msg}"
    );

    hook.answer_with(200, "ok");
    no_errors(a.tick(t0() + minutes(1)));
    no_errors(a.tick(t0() + minutes(2)));
    assert_eq!(hook.requests().len(), 2, "one failed attempt, one delivery");
}

/// A condition that ends before any sink heard of it is never announced, neither its
/// firing nor its end.
#[test]
fn resolved_before_delivery_sends_nothing() {
    let port = free_port();
    let sinks = BTreeMap::from([(
        "ops".to_string(),
        webhook(&format!("http://127.0.0.1:{port}/h")),
    )]);
    let mut a = alerter(sinks);
    assert_eq!(a.fire(rpo_alert(t0()), &["ops".into()], t0()).len(), 1);
    no_errors(a.resolve("rpo:acme:db", t0() + minutes(1)));
    let hook = Receiver::start_on(port);
    no_errors(a.tick(t0() + minutes(2)));
    no_errors(a.tick(t0() + minutes(600)));
    assert!(hook.requests().is_empty());
}

/// A recipient the server refuses: the error names the server and quotes its reply, and
/// nobody gets the message (a retry cannot duplicate it).
#[test]
fn smtp_refused_recipient_names_server_and_reply() {
    let mail = SmtpServer::start(serde_json::json!({"refuse": ["nobody@example.com"]}));
    let sinks = BTreeMap::from([(
        "oncall".to_string(),
        AlertSinkConfig::Smtp(smtp(
            &mail.server(),
            &["oncall@example.com", "nobody@example.com"],
        )),
    )]);
    let mut a = alerter(sinks);
    let errors = a.fire(rpo_alert(t0()), &["oncall".into()], t0());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(msg.contains("alert sink oncall"), "{msg}");
    assert!(
        msg.contains(&format!("SMTP server {}", mail.server())),
        "{msg}"
    );
    assert!(
        msg.contains("RCPT TO:<nobody@example.com> refused: 550 5.1.1"),
        "{msg}"
    );
    assert!(msg.contains("Recipient address rejected"), "{msg}");
    assert!(mail.mails().is_empty());
    // Retried (and refused again) at the next tick.
    assert_eq!(a.tick(t0() + minutes(1)).len(), 1);
}

/// AUTH PLAIN with the password from its file; a wrong password is a clear error that
/// does not contain it.
#[test]
fn smtp_login_and_wrong_password() {
    let mail = SmtpServer::start(serde_json::json!({"user": "haven", "password": "right-pw"}));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let wrong = dir.path().join("wrong");
    std::fs::write(&good, "right-pw\n").unwrap();
    std::fs::write(&wrong, "wrong-pw\n").unwrap();
    let with_password = |file: &Path, tls: SmtpTls| {
        let mut c = smtp(&mail.server(), &["oncall@example.com"]);
        c.username = Some("haven".into());
        c.password_file = Some(file.to_path_buf());
        c.tls = tls;
        BTreeMap::from([("oncall".to_string(), AlertSinkConfig::Smtp(c))])
    };
    let route = ["oncall".to_string()];

    // The default mode never sends a password over plain text.
    let errors = alerter(with_password(&good, SmtpTls::Auto)).fire(rpo_alert(t0()), &route, t0());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("offers no STARTTLS") && msg.contains("tls = \"none\""),
        "{msg}"
    );

    let errors = alerter(with_password(&wrong, SmtpTls::None)).fire(rpo_alert(t0()), &route, t0());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("login as \"haven\" failed") && msg.contains("535"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pw"), "{msg}");
    assert!(mail.mails().is_empty());

    no_errors(alerter(with_password(&good, SmtpTls::None)).fire(rpo_alert(t0()), &route, t0()));
    let mails = mail.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].authenticated && !mails[0].tls);
}

/// Makes a throwaway CA and a certificate for 127.0.0.1 with `openssl`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=haven-test-ca",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// STARTTLS against a server with a private CA's certificate: refused with the system
/// roots (a clear certificate error), delivered with `ca-file`, login inside TLS.
#[test]
fn smtp_starttls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let mail = SmtpServer::start(serde_json::json!({
        "cert": cert, "key": key, "user": "haven", "password": "pw"
    }));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw").unwrap();
    let config = |ca_file: Option<PathBuf>| {
        let mut c = smtp(&mail.server(), &["oncall@example.com"]);
        c.tls = SmtpTls::Starttls;
        c.username = Some("haven".into());
        c.password_file = Some(pw.clone());
        c.ca_file = ca_file;
        BTreeMap::from([("oncall".to_string(), AlertSinkConfig::Smtp(c))])
    };
    let route = ["oncall".to_string()];

    let errors = alerter(config(None)).fire(rpo_alert(t0()), &route, t0());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("STARTTLS handshake failed") && msg.contains("certificate"),
        "{msg}"
    );
    assert!(mail.mails().is_empty());

    no_errors(alerter(config(Some(ca))).fire(rpo_alert(t0()), &route, t0()));
    let mails = mail.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls && mails[0].authenticated);
}

/// `tls = "starttls"` against a server without it is refused before anything is sent.
#[test]
fn smtp_required_starttls_missing_is_an_error() {
    let mail = SmtpServer::start(serde_json::json!({}));
    let mut c = smtp(&mail.server(), &["oncall@example.com"]);
    c.tls = SmtpTls::Starttls;
    let mut a = alerter(BTreeMap::from([(
        "oncall".to_string(),
        AlertSinkConfig::Smtp(c),
    )]));
    let errors = a.fire(rpo_alert(t0()), &["oncall".into()], t0());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("does not offer STARTTLS"),
        "{}",
        errors[0]
    );
    assert!(mail.mails().is_empty());
}

/// The issue's example parses as written; bad tables are refused with the key at fault.
#[test]
fn config_parses_and_bad_tables_are_explained() {
    #[derive(serde::Deserialize)]
    struct File {
        alerts: BTreeMap<String, AlertSinkConfig>,
    }
    let text = r#"
[alerts.ops]
kind = "webhook"
url = "https://hooks.example.com/haven"

[alerts.oncall]
kind = "smtp"
server = "smtp.example.com:587"
from = "haven@example.com"
to = ["oncall@example.com"]
"#;
    let f: File = toml::from_str(text).unwrap();
    for c in f.alerts.values() {
        c.validate().unwrap();
    }
    let AlertSinkConfig::Smtp(s) = &f.alerts["oncall"] else {
        panic!("oncall is smtp")
    };
    assert_eq!(s.tls, SmtpTls::Auto);
    assert_eq!(
        s.server_addr().unwrap(),
        ("smtp.example.com".to_string(), 587)
    );
    assert_eq!(s.subject_prefix(), "[haven]");
    assert_eq!(f.alerts["ops"].kind(), "webhook");
    assert_eq!(
        f.alerts["ops"].describe(),
        "webhook to https://hooks.example.com"
    );

    let parse = |t: &str| toml::from_str::<File>(t).map(|f| f.alerts.into_values().next().unwrap());
    let invalid = |t: &str| parse(t).unwrap().validate().unwrap_err();

    let e = invalid("[alerts.x]\nkind = \"webhook\"\nurl = \"hooks.example.com/haven\"");
    assert!(e.starts_with("url: not a URL"), "{e}");
    let e = invalid("[alerts.x]\nkind = \"webhook\"\nurl = \"ftp://example.com/\"");
    assert!(e.starts_with("url: scheme \"ftp\""), "{e}");
    let e = invalid(
        "[alerts.x]\nkind = \"webhook\"\nurl = \"https://a.example\"\nheaders = { Host = \"b\" }",
    );
    assert!(e.starts_with("headers: header Host is set by Haven"), "{e}");
    let e = invalid("[alerts.x]\nkind = \"smtp\"\nserver = \"smtp.example.com:587\"\nfrom = \"haven@example.com\"\nto = []");
    assert!(e.starts_with("to: no recipients"), "{e}");
    let e = invalid("[alerts.x]\nkind = \"smtp\"\nserver = \"smtp.example.com:x\"\nfrom = \"haven@example.com\"\nto = [\"a@b.c\"]");
    assert!(e.starts_with("server: \"x\" is not a port number"), "{e}");
    let e = invalid("[alerts.x]\nkind = \"smtp\"\nserver = \"smtp.example.com\"\nfrom = \"haven\"\nto = [\"a@b.c\"]");
    assert!(
        e.starts_with("from: \"haven\" is not an e-mail address"),
        "{e}"
    );
    let e = invalid("[alerts.x]\nkind = \"smtp\"\nserver = \"smtp.example.com\"\nfrom = \"haven@example.com\"\nto = [\"a@b.c\"]\nusername = \"u\"");
    assert!(e.starts_with("password-file: username is given"), "{e}");

    let e = parse("[alerts.x]\nkind = \"smtp\"\nserver = \"s:25\"\nfrom = \"haven@example.com\"")
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing field `to`"), "{e}");
    let e = parse("[alerts.x]\nkind = \"webhook\"\nurl = \"https://a.example\"\nretries = 3")
        .err()
        .unwrap();
    assert!(e.to_string().contains("unknown field `retries`"), "{e}");
    let e = parse("[alerts.x]\nkind = \"pager\"").err().unwrap();
    assert!(e.to_string().contains("unknown variant `pager`"), "{e}");
    let e = parse("[alerts.x]\nkind = \"smtp\"\nserver = \"s\"\nfrom = \"h@e.c\"\nto = [\"a@b.c\"]\ntls = \"ssl\"").err().unwrap();
    assert!(e.to_string().contains("unknown variant `ssl`"), "{e}");

    // Without a port: 587, or 465 for implicit TLS.
    let mut s = smtp("mail.example.com", &["a@b.c"]);
    assert_eq!(s.server_addr().unwrap().1, 587);
    s.tls = SmtpTls::Tls;
    assert_eq!(s.server_addr().unwrap().1, 465);
    assert_eq!(
        smtp("[::1]:2525", &["a@b.c"]).server_addr().unwrap(),
        ("::1".to_string(), 2525)
    );
    // Debug output of a webhook never shows its secret path or header values.
    let dbg = format!(
        "{:?}",
        webhook("https://hooks.slack.com/services/T0/B0/SECRET")
    );
    assert!(
        !dbg.contains("SECRET") && !dbg.contains("s3cret-token"),
        "{dbg}"
    );
}

/// A tenant's own list, else every declared sink; an undeclared name is an error at
/// fire time (config validation should have caught it).
#[test]
fn tenant_routing() {
    let all = BTreeMap::from([
        ("ops".to_string(), webhook("http://127.0.0.1:9/a")),
        (
            "oncall".to_string(),
            AlertSinkConfig::Smtp(smtp("127.0.0.1:9", &["a@b.c"])),
        ),
    ]);
    assert_eq!(sinks_for(None, &all), ["oncall", "ops"]);
    let own = vec!["ops".to_string()];
    assert_eq!(sinks_for(Some(&own), &all), ["ops"]);
    assert!(sinks_for(Some(&[]), &all).is_empty());

    let mut a = alerter(all);
    let errors = a.fire(rpo_alert(t0()), &["pager".into()], t0());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .contains("alert sink \"pager\" is not declared"),
        "{}",
        errors[0]
    );
}
