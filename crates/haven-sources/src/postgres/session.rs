//! Talking to the server through the client tools: a psql session driven query by
//! query, reading a tool's output to its end, and the classification of the tools'
//! error output into [`SourceError`]s.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Stdio};

use super::conninfo::ConnInfo;
use crate::process::{ChildOutput, Running, Tool};
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
    child: Running,
    pipes: Pipes,
    conn: ConnInfo,
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
    pub(super) fn open(mut cmd: Tool, conn: &ConnInfo) -> Result<Session> {
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
        .stdout(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdin = child.take_stdin().expect("piped stdin");
        let stdout = BufReader::new(child.take_stdout().expect("piped stdout"));
        Ok(Session {
            child,
            pipes: Pipes { stdin, stdout },
            conn: conn.clone(),
        })
    }

    pub(super) fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.pipes.query(sql).ok_or_else(|| self.failure())
    }

    /// Why psql ended: its timeout, or its exit status and the end of its stderr,
    /// classified.
    fn failure(&mut self) -> SourceError {
        match self.child.wait() {
            Err(e) => e,
            Ok(exit) => exit.timeout_error().unwrap_or_else(|| {
                classify(
                    &format!("psql on {}", self.conn.render(false)),
                    &self.conn,
                    exit.detail(),
                )
            }),
        }
    }

    pub(super) fn close(mut self) -> Result<()> {
        let _ = self.pipes.stdin.write_all(b"\\q\n");
        let _ = self.pipes.stdin.flush();
        let exit = self.child.wait()?;
        if let Some(e) = exit.timeout_error() {
            return Err(e);
        }
        if exit.success() {
            Ok(())
        } else {
            Err(classify(
                &format!("psql on {}", self.conn.render(false)),
                &self.conn,
                exit.detail(),
            ))
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
