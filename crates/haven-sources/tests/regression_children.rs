//! Regression tests for the programs Haven runs (issue 10): every child goes through the
//! one choke point (`haven_sources::process`), so a hung tool is stopped with its whole
//! process group, no child sees Haven's secrets, command lines are shown redacted, and
//! the throwaway `redis-server` holding a tenant's data refuses strangers.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use haven_sources::command::{CommandComponent, CommandConfig};
use haven_sources::process::Span;
use haven_sources::servers::redis::RedisServer;
use haven_sources::{SourceError, StreamComponent};

const SECRETS: [(&str, &str); 4] = [
    ("HAVEN_PASSWORD", "repo-passphrase-6d1f"),
    ("HAVEN_API_TOKEN", "api-token-9c2e"),
    ("AWS_SECRET_ACCESS_KEY", "s3-secret-key-4b7a"),
    ("AWS_ACCESS_KEY_ID", "s3-access-key-0e3d"),
];

/// Put the secrets Haven itself may hold into this test process's environment (each
/// test runs in its own process under nextest).
fn hold_secrets() {
    for (k, v) in SECRETS {
        std::env::set_var(k, v);
    }
}

fn command(backup: &str, timeout: Option<&str>) -> CommandComponent {
    CommandComponent::new(CommandConfig {
        backup: backup.into(),
        restore: None,
        fingerprint: None,
        probe: None,
        verify_restore: None,
        verify_fingerprint: None,
        verify_cleanup: None,
        timeout: timeout.map(|t| Span::parse(t).unwrap()),
    })
}

fn backup_to_vec(c: &CommandComponent, work: &Path) -> Result<Vec<u8>, SourceError> {
    let mut stored = vec![];
    c.backup(
        &mut |r| {
            r.read_to_end(&mut stored)
                .map(|_| ())
                .map_err(|e| SourceError::io("storing", e))
        },
        work,
    )?;
    Ok(stored)
}

#[path = "support/marked_processes.rs"]
mod marked_processes;
use marked_processes::{processes_marked, Reap};

#[test]
fn a_hung_command_is_stopped_after_its_timeout_with_its_whole_process_group() {
    let work = tempfile::tempdir().unwrap();
    let marker = format!("HAVEN_TEST_MARK={}", std::process::id());
    let mark = marker.replace("HAVEN_TEST_MARK", "MARK");
    let _reap = Reap(mark.clone());
    // The child and its grandchildren (a background job and a foreground one).
    let c = command(
        &format!("export {mark}; echo started; sh -c 'sleep 1000 & sleep 1000'"),
        Some("2s"),
    );
    let (tx, rx) = mpsc::channel();
    let dir = work.path().to_path_buf();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(backup_to_vec(&c, &dir));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the backup of a hung command must end (its timeout is 2 s)");
    let err = result.unwrap_err();
    assert!(
        matches!(err, SourceError::TimedOut { .. }),
        "a timeout, named as such: {err}"
    );
    assert!(err.to_string().contains("2s"), "{err}");
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Nothing of the group survives: not the shell, not either sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_marked(&mark);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the timed-out command survive: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_command_component_sees_none_of_havens_secrets() {
    hold_secrets();
    std::env::set_var("HAVEN_TEST_KEEP", "x");
    std::env::set_var("SOMETHING_THE_SCRIPT_NEEDS", "kept-7f1c");
    let work = tempfile::tempdir().unwrap();
    let dumped = backup_to_vec(&command("env", None), work.path()).unwrap();
    let env = String::from_utf8_lossy(&dumped);
    for (k, v) in SECRETS {
        assert!(!env.contains(v), "{k} reached the command: {env}");
        assert!(!env.contains(&format!("{k}=")), "{k} reached the command");
    }
    assert!(!env.contains("HAVEN_"), "{env}");
    // The rest of the environment is the script's to use.
    assert!(
        env.contains("SOMETHING_THE_SCRIPT_NEEDS=kept-7f1c"),
        "{env}"
    );
    assert!(env.contains("PATH="), "{env}");
}

#[test]
fn a_throwaway_redis_server_gets_none_of_havens_secrets() {
    hold_secrets();
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(&dir.path().join("r")).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for (k, v) in SECRETS {
        assert!(!environ.contains(v), "{k} reached redis-server");
    }
    assert!(
        !environ.contains("HAVEN_") && !environ.contains("AWS_"),
        "{environ}"
    );
}

#[test]
fn command_lines_with_passwords_are_shown_redacted() {
    let line = "mysqldump --password=hunter2 -p hunter3 -uroot app; curl -s https://bob:hunter4@example.com/x; false";
    let c = command(line, None);
    let shown = c.describe();
    let work = tempfile::tempdir().unwrap();
    let err = backup_to_vec(&c, work.path()).unwrap_err().to_string();
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!err.contains(secret), "{err}");
    }
    assert!(shown.contains("mysqldump --password=***"), "{shown}");
    assert!(shown.contains("https://bob:***@example.com/x"), "{shown}");
    assert!(
        err.contains("mysqldump"),
        "the error still names the command: {err}"
    );
}

/// One RESP command on a raw connection; the reply's first line.
fn raw_call(port: u16, args: &[&str]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    line
}

#[test]
fn a_throwaway_redis_server_refuses_clients_without_its_password_and_config_from_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(&dir.path().join("r")).unwrap();
    let port = server.port();
    // A stranger on the same host, over TCP: refused.
    let reply = raw_call(port, &["GET", "x"]);
    assert!(reply.starts_with("-NOAUTH"), "{reply}");
    let reply = raw_call(port, &["CONFIG", "SET", "dir", "/tmp"]);
    assert!(
        reply.starts_with('-'),
        "CONFIG from a stranger is refused: {reply}"
    );
    // The real redis-cli, without the password.
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "DBSIZE"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("NOAUTH"), "{text}");
    // With the password Haven's own connection works, but CONFIG is gone for everyone.
    let mut conn = server.connect().unwrap();
    conn.call_str(&["SET", "x", "1"]).unwrap();
    let err = conn.call_str(&["CONFIG", "GET", "dir"]).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("unknown command"),
        "{err}"
    );
}
