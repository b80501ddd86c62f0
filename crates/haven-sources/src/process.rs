//! Running the systems' own tools (`pg_dump`, `redis-server`, `etcdctl`, `sh -c ...`) with
//! errors a user can act on: a missing program becomes [`SourceError::MissingTool`], a
//! failing one [`SourceError::Failed`] carrying the last lines it wrote to stderr.
//!
//! [`ChildOutput`] is a dump tool's stdout as a reader that fails at the end of the stream
//! when the tool exited non-zero, so a truncated dump can never be stored as a good one.

use std::io::{self, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Result, SourceError};

/// The last few non-empty lines of a tool's stderr, joined with "; ".
pub fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    let tail = lines[start..].join("; ");
    if tail.is_empty() {
        "(no error output)".to_string()
    } else {
        tail
    }
}

/// The program name of a command, for messages.
fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Map a spawn error: a program that does not exist is a missing tool.
pub fn spawn_error(cmd: &Command, hint: &str, e: io::Error) -> SourceError {
    if e.kind() == io::ErrorKind::NotFound {
        SourceError::MissingTool {
            tool: program(cmd),
            hint: hint.to_string(),
        }
    } else {
        SourceError::io(format!("starting {}", program(cmd)), e)
    }
}

/// Run a command to completion, capturing its output; a non-zero exit is an error naming
/// `what` and the end of its stderr.
pub fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, hint, e))?;
    if !out.status.success() {
        return Err(SourceError::failed(
            what,
            format!("{} ({})", stderr_tail(&out.stderr), out.status),
        ));
    }
    Ok(out)
}

/// A running tool whose stdout is read as a stream. Its stderr is collected in the
/// background; at the end of stdout the child is waited for, and a non-zero exit turns
/// into a read error (so the repository discards the stream).
pub struct ChildOutput {
    what: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
    done: bool,
}

impl ChildOutput {
    /// Spawn `cmd` with stdout piped. `what` names the tool in errors ("pg_dump of ...").
    pub fn spawn(cmd: &mut Command, what: &str, hint: &str) -> Result<ChildOutput> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(cmd, hint, e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut buf = vec![];
            let _ = err.read_to_end(&mut buf);
            buf
        });
        Ok(ChildOutput {
            what: what.to_string(),
            child,
            stdout,
            stderr: Some(stderr),
            done: false,
        })
    }

    /// Wait for the tool (after its stdout was read to the end) and report how it ended.
    pub fn finish(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::io(format!("waiting for {}", self.what), e))?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        self.done = true;
        if status.success() {
            Ok(())
        } else {
            Err(SourceError::failed(
                &self.what,
                format!("{} ({status})", stderr_tail(&stderr)),
            ))
        }
    }
}

impl Read for ChildOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

impl Drop for ChildOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback TCP port that was free a moment ago (for scratch servers).
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| SourceError::io("finding a free loopback port", e))
}

/// Poll `ready` until it returns `Ok(true)` or `timeout` passes: how scratch servers are
/// awaited (a readiness check, never a fixed sleep). The last error, if any, is reported.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        let last = match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e.to_string()),
        };
        if start.elapsed() > timeout {
            return Err(SourceError::failed(
                what,
                format!(
                    "not ready after {:.0} s{}",
                    timeout.as_secs_f64(),
                    last.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named_with_the_hint() {
        let err = run(
            &mut Command::new("haven-no-such-tool"),
            "dumping",
            "install it",
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::MissingTool { .. }), "{err}");
        assert!(err.to_string().contains("haven-no-such-tool"), "{err}");
        assert!(err.to_string().contains("install it"), "{err}");
    }

    #[test]
    fn a_tool_failing_after_output_makes_the_stream_fail_at_its_end() {
        let mut out = ChildOutput::spawn(
            Command::new("sh").args(["-c", "echo partial; echo broken pipe >&2; exit 3"]),
            "the dump",
            "",
        )
        .unwrap();
        let mut buf = vec![];
        let err = out.read_to_end(&mut buf).unwrap_err();
        assert_eq!(buf, b"partial\n");
        assert!(err.to_string().contains("broken pipe"), "{err}");
        assert!(err.to_string().contains("the dump failed"), "{err}");
    }

    #[test]
    fn a_tool_succeeding_reads_to_the_end() {
        let mut out = ChildOutput::spawn(
            Command::new("sh").args(["-c", "printf abc"]),
            "the dump",
            "",
        )
        .unwrap();
        let mut buf = vec![];
        out.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"abc");
    }
}
