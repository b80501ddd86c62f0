//! Talking to the server through the client tools: a psql session driven query by
//! query, reading a tool's output to its end, and the classification of the tools'
//! error output into [`SourceError`]s.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::conninfo::ConnInfo;
use super::NOT_INSTALLED_HINT;
use crate::process::{self, ChildOutput};
use crate::{Result, SourceError};

/// Read what the sink left unread: a sink that stops early must not leave pg_dump
/// blocked, nor pass for a complete dump.
pub(super) fn drain(out: &mut ChildOutput, what: &str) -> Result<()> {
    let rest =
        io::copy(out, &mut io::sink()).map_err(|e| SourceError::failed(what, e.to_string()))?;
    out.finish()?;
    if rest > 0 {
        return Err(SourceError::failed(
            what,
            format!("the dump was not read to its end ({rest} bytes left)"),
        ));
    }
    Ok(())
}

pub(super) fn collect(mut stderr: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = vec![];
        let _ = stderr.read_to_end(&mut buf);
        buf
    })
}

/// Run a tool to completion; a failure is classified from its stderr.
pub(super) fn run_classified(cmd: &mut Command, what: &str, conn: &ConnInfo) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| process::spawn_error(cmd, NOT_INSTALLED_HINT, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(classify(
            what,
            conn,
            format!("{} ({})", process::stderr_tail(&out.stderr), out.status),
        ))
    }
}

/// Turn a client tool's error output into the error class a user can act on.
pub(super) fn classify(what: &str, conn: &ConnInfo, detail: String) -> SourceError {
    let lower = detail.to_lowercase();
    let target = conn.render(false);
    const DENIED: [&str; 5] = [
        "password authentication failed",
        "no pg_hba.conf entry",
        "no password supplied",
        "permission denied for database",
        "authentication failed",
    ];
    const UNREACHABLE: [&str; 7] = [
        "connection refused",
        "could not connect",
        "could not translate host name",
        "timeout expired",
        "no route to host",
        "network is unreachable",
        "no such file or directory",
    ];
    if DENIED.iter().any(|p| lower.contains(p))
        || (lower.contains("role \"") && lower.contains("does not exist"))
    {
        SourceError::AccessDenied {
            target,
            detail: format!(
                "{detail}; check the user and password in the url (or PGPASSWORD, ~/.pgpass) and the server's pg_hba.conf"
            ),
        }
    } else if UNREACHABLE.iter().any(|p| lower.contains(p)) {
        SourceError::Unreachable {
            target,
            detail: format!(
                "{detail}; check that the server runs and that the url's host and port are right"
            ),
        }
    } else if lower.contains("server version mismatch") {
        SourceError::failed(
            what,
            format!("{detail}; set `bin-dir` to client tools at least as new as the server"),
        )
    } else {
        SourceError::failed(what, detail)
    }
}

/// The line psql prints after each query, marking the end of its output.
const DONE: &str = "__haven_done__";

/// A psql process driven line by line: each query is followed by `\echo` of a marker, so
/// its output ends at the marker; psql stops at the first error (`ON_ERROR_STOP`).
pub(super) struct Session {
    child: Child,
    pipes: Pipes,
    stderr: Option<JoinHandle<Vec<u8>>>,
    conn: ConnInfo,
    ended: bool,
}

struct Pipes {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Pipes {
    /// The output lines of `sql`, or `None` when psql ended first (an error, a lost
    /// connection).
    fn query(&mut self, sql: &str) -> Option<Vec<String>> {
        let input = format!("{sql}\n\\echo {DONE}\n");
        if self
            .stdin
            .write_all(input.as_bytes())
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return None;
        }
        let mut lines = vec![];
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line == DONE {
                return Some(lines);
            }
            lines.push(line.to_string());
        }
    }
}

impl Session {
    pub(super) fn open(mut cmd: Command, conn: &ConnInfo) -> Result<Session> {
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conn.render(false),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| process::spawn_error(&cmd, NOT_INSTALLED_HINT, e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Ok(Session {
            child,
            pipes: Pipes { stdin, stdout },
            stderr: Some(stderr),
            conn: conn.clone(),
            ended: false,
        })
    }

    pub(super) fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.pipes.query(sql).ok_or_else(|| self.failure())
    }

    /// Why psql ended: its exit status and the end of its stderr, classified.
    fn failure(&mut self) -> SourceError {
        let status = self.child.wait();
        self.ended = true;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        classify(
            &format!("psql on {}", self.conn.render(false)),
            &self.conn,
            format!("{} ({status})", process::stderr_tail(&stderr)),
        )
    }

    pub(super) fn close(mut self) -> Result<()> {
        let _ = self.pipes.stdin.write_all(b"\\q\n");
        let _ = self.pipes.stdin.flush();
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::io("waiting for psql", e))?;
        if status.success() {
            self.ended = true;
            Ok(())
        } else {
            Err(self.failure())
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_errors_are_classified() {
        let conn = ConnInfo::parse("postgresql://u:pw@127.0.0.1:1/db").unwrap();
        let refused = classify(
            "psql",
            &conn,
            "psql: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused"
                .into(),
        );
        assert!(
            matches!(refused, SourceError::Unreachable { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("127.0.0.1:1"), "{refused}");
        assert!(!refused.to_string().contains("pw"), "{refused}");
        let denied = classify(
            "psql",
            &conn,
            "FATAL:  password authentication failed for user \"u\"".into(),
        );
        assert!(
            matches!(denied, SourceError::AccessDenied { .. }),
            "{denied}"
        );
        let role = classify(
            "psql",
            &conn,
            "FATAL:  role \"nobody\" does not exist".into(),
        );
        assert!(matches!(role, SourceError::AccessDenied { .. }), "{role}");
        let other = classify(
            "pg_restore",
            &conn,
            "ERROR:  relation \"x\" already exists".into(),
        );
        assert!(matches!(other, SourceError::Failed { .. }), "{other}");
    }
}
