//! The one choke point for everything Haven runs: the systems' own tools (`pg_dump`,
//! `psql`, `redis-server`, `etcd`, `etcdctl`) and users' scripts (`command` components,
//! hooks, run with `sh -c`). Every child is started by [`Tool`], which gives it:
//!
//! - **a deadline** ([`Limits`]: the component's `timeout`, capped by the job's deadline);
//!   when it passes, the tool's whole process group is killed (`group`) and the run
//!   fails with [`SourceError::TimedOut`];
//! - **its own process group**, killed as a whole on timeout, when its handle
//!   ([`Running`], [`ChildOutput`]) is dropped unfinished, and by [`kill_all`] when Haven
//!   is stopped by a signal — a script's background jobs and grandchildren included;
//! - **a scrubbed environment** ([`secrets`]): a tool gets an allowlist plus what its
//!   caller passes; a script gets Haven's environment minus `HAVEN_*` and `AWS_*`;
//! - **bounded stderr**: the last [`STDERR_KEEP`] bytes are kept for the error message;
//! - optionally **a private work folder** as its working directory and `TMPDIR`
//!   ([`WorkDir`], mode 0700, unpredictable name).
//!
//! Errors a user can act on: a missing program becomes [`SourceError::MissingTool`], a
//! failing one [`SourceError::Failed`] carrying the last lines it wrote to stderr.
//! [`ChildOutput`] is a dump tool's stdout as a reader that fails at the end of the stream
//! when the tool exited non-zero (or timed out), so a truncated dump can never be stored
//! as a good one.

mod group;
pub mod secrets;
mod work;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use group::kill_all;
pub use secrets::{is_secret, redact};
pub use work::WorkDir;

use crate::{Result, SourceError};

/// How much of a tool's stderr is kept (its end): enough for any error message, bounded
/// so a tool printing without end cannot fill Haven's memory.
pub const STDERR_KEEP: usize = 64 << 10;

/// A span of time as written in the config: a number and a unit `s`, `m`, `h` or `d`,
/// combinable (`90s`, `30m`, `1h30m`, `2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(s: &str) -> std::result::Result<Span, String> {
        parse_span(s).map(Span)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        let span = Span::parse(&text).map_err(serde::de::Error::custom)?;
        if span.0.is_zero() {
            return Err(serde::de::Error::custom(
                "a timeout of 0 would stop every run at once: give a positive duration, e.g. 30m",
            ));
        }
        Ok(span)
    }
}

/// Parse `30s`, `5m`, `1h30m`, `2d` into a duration.
pub fn parse_span(s: &str) -> std::result::Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: use a number and a unit s, m, h or d, e.g. 30s, 5m, 24h")
    };
    let (mut total, mut num) = (0u64, String::new());
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || s.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// `300 s` -> `5m`, `5400 s` -> `1h30m`, `0.5 s` -> `0.5s`, zero -> `0s`.
pub fn format_span(d: Duration) -> String {
    let mut secs = d.as_secs();
    if d.is_zero() {
        return "0s".into();
    }
    if secs == 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out += &format!("{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

/// How long a tool may run: the component's timeout, capped by the deadline of the job
/// it runs in (the daemon's `job-timeout`). `Limits::default()` is no limit (servers
/// that run until they are stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub deadline: Option<Instant>,
}

/// Which limit stopped a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Timeout,
    Deadline,
}

impl Limits {
    pub fn timeout(timeout: Duration) -> Limits {
        Limits {
            timeout: Some(timeout),
            deadline: None,
        }
    }

    /// These limits, also ending at `deadline` (the earlier of the two deadlines counts).
    pub fn until(self, deadline: Option<Instant>) -> Limits {
        let deadline = match (self.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Limits { deadline, ..self }
    }

    /// How long something started now may run (unbounded: `None`).
    pub fn remaining(&self) -> Option<Duration> {
        self.budget().map(|(left, _)| left)
    }

    /// How long a tool started now may run, and which limit that is.
    fn budget(&self) -> Option<(Duration, Cut)> {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match (self.timeout, left) {
            (Some(t), Some(l)) if l < t => Some((l, Cut::Deadline)),
            (Some(t), _) => Some((t, Cut::Timeout)),
            (None, Some(l)) => Some((l, Cut::Deadline)),
            (None, None) => None,
        }
    }
}

fn timed_out(what: &str, budget: (Duration, Cut)) -> SourceError {
    let next = match budget.1 {
        Cut::Timeout => {
            "raise the component's `timeout` in the config if it needs longer, or find out why it hangs"
        }
        Cut::Deadline => {
            "the job's deadline passed (`job-timeout` in [daemon]); raise it if the tenant's backups need longer"
        }
    };
    SourceError::TimedOut {
        what: what.to_string(),
        after: format_span(budget.0),
        next: next.to_string(),
    }
}

/// Which inherited variables a child keeps.
#[derive(Debug, Clone)]
enum EnvPolicy {
    /// A system tool: [`secrets::BASE_ENV`] and these prefixes.
    Tool(Vec<String>),
    /// A user's script: everything but Haven's secrets.
    Script,
}

/// A child to be started through the choke point. Build it like a [`Command`]
/// (`arg`, `env`, ...), then [`Tool::run`], [`Tool::stream`] or [`Tool::spawn`] it.
#[derive(Debug)]
pub struct Tool {
    cmd: Command,
    what: String,
    hint: String,
    env: EnvPolicy,
    limits: Limits,
    work: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    /// Put it in a process group of its own (false: it calls `setsid` itself).
    own_group: bool,
    /// Values scrubbed from its stderr in errors (the passwords on a script's line).
    secrets: Vec<String>,
}

impl Tool {
    /// A system tool. `what` names it in errors ("pg_dump of ..."), `hint` says how to
    /// install it when it is missing.
    pub fn new(program: impl AsRef<OsStr>, what: impl Into<String>, hint: &str) -> Tool {
        Tool {
            cmd: Command::new(program),
            what: what.into(),
            hint: hint.to_string(),
            env: EnvPolicy::Tool(vec![]),
            limits: Limits::default(),
            work: None,
            stdin: None,
            stdout: None,
            stderr: None,
            own_group: true,
            secrets: vec![],
        }
    }

    /// The program makes itself a session (and group) leader (`setsid etcd ...`):
    /// `setsid` would fork if it already led a group, so none is made for it.
    pub fn leaves_session(&mut self) -> &mut Tool {
        self.own_group = false;
        self
    }

    /// A user's script, run with `sh -c`. `what` should show it through [`redact`].
    pub fn script(script: &str, what: impl Into<String>, hint: &str) -> Tool {
        let mut tool = Tool::new("sh", what, hint);
        tool.cmd.arg("-c").arg(script);
        tool.env = EnvPolicy::Script;
        tool.secrets = secrets::secret_values(script);
        tool
    }

    /// Also keep the inherited variables starting with `prefix` (e.g. `PG` for libpq's).
    pub fn pass_env(&mut self, prefix: &str) -> &mut Tool {
        if let EnvPolicy::Tool(p) = &mut self.env {
            p.push(prefix.to_string());
        }
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Tool {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Tool {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Tool {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Tool {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Tool {
        self.cmd.current_dir(dir);
        self
    }

    pub fn limits(&mut self, limits: Limits) -> &mut Tool {
        self.limits = limits;
        self
    }

    /// Run in the private folder `dir`: its working directory and `TMPDIR`.
    pub fn work(&mut self, dir: &Path) -> &mut Tool {
        self.work = Some(dir.to_path_buf());
        self
    }

    /// Default: `/dev/null`.
    pub fn stdin(&mut self, s: Stdio) -> &mut Tool {
        self.stdin = Some(s);
        self
    }

    /// Default: `/dev/null` for [`Tool::spawn`]; piped for `run` and `stream`.
    pub fn stdout(&mut self, s: Stdio) -> &mut Tool {
        self.stdout = Some(s);
        self
    }

    /// Default: collected (its end kept, [`STDERR_KEEP`]) for the error message.
    pub fn stderr(&mut self, s: Stdio) -> &mut Tool {
        self.stderr = Some(s);
        self
    }

    /// The name in errors.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The program name (for messages).
    pub fn program(&self) -> String {
        self.cmd.get_program().to_string_lossy().into_owned()
    }

    fn scrub_env(&mut self) {
        let explicit: Vec<(OsString, Option<OsString>)> = self
            .cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(OsStr::to_os_string)))
            .collect();
        self.cmd.env_clear();
        for (key, value) in std::env::vars_os() {
            let keep = match &self.env {
                EnvPolicy::Tool(prefixes) => secrets::tool_keeps(&key, prefixes),
                EnvPolicy::Script => !is_secret(&key),
            };
            if keep {
                self.cmd.env(key, value);
            }
        }
        for (key, value) in explicit {
            match value {
                Some(v) => self.cmd.env(key, v),
                None => self.cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.work {
            self.cmd.current_dir(dir).env("TMPDIR", dir);
        }
    }

    /// Start it. Its stdin and stdout are `/dev/null` unless set; its stderr is collected.
    pub fn spawn(&mut self) -> Result<Running> {
        let budget = self.limits.budget();
        if let Some(b) = budget {
            if b.0.is_zero() {
                return Err(timed_out(&self.what, b));
            }
        }
        self.scrub_env();
        let collect_stderr = self.stderr.is_none();
        if self.own_group {
            self.cmd.process_group(0);
        }
        self.cmd
            .stdin(self.stdin.take().unwrap_or_else(Stdio::null))
            .stdout(self.stdout.take().unwrap_or_else(Stdio::null))
            .stderr(self.stderr.take().unwrap_or_else(Stdio::piped));
        let mut child = self
            .cmd
            .spawn()
            .map_err(|e| spawn_error(&self.cmd, &self.hint, e))?;
        group::register(child.id());
        let stderr = match child.stderr.take() {
            Some(pipe) if collect_stderr => Some(collect(pipe)),
            _ => None,
        };
        let watchdog = budget.map(|(d, _)| group::Watchdog::start(child.id(), d));
        Ok(Running {
            child,
            what: self.what.clone(),
            stderr,
            watchdog,
            budget,
            done: false,
            secrets: std::mem::take(&mut self.secrets),
        })
    }

    /// Run to completion with stdin `/dev/null`, capturing stdout; a non-zero exit is
    /// [`SourceError::Failed`] with the end of its stderr.
    pub fn run(&mut self) -> Result<Output> {
        let (output, exit) = self.run_to_end()?;
        exit.into_result()?;
        Ok(output)
    }

    /// Like [`run`](Self::run), but a non-zero exit is returned, not an error (a
    /// timeout still is one): for tools whose exit status says less than their output.
    pub fn run_any_status(&mut self) -> Result<Output> {
        let (output, exit) = self.run_to_end()?;
        match exit.timeout_error() {
            Some(e) => Err(e),
            None => Ok(output),
        }
    }

    fn run_to_end(&mut self) -> Result<(Output, Exit)> {
        if self.stdout.is_none() {
            self.stdout = Some(Stdio::piped());
        }
        let mut running = self.spawn()?;
        let mut stdout = vec![];
        let read = match running.child.stdout.take() {
            Some(mut out) => out.read_to_end(&mut stdout).map(|_| ()),
            None => Ok(()),
        };
        let exit = running.wait()?;
        read.map_err(|e| SourceError::io(format!("reading the output of {}", self.what), e))?;
        let output = Output {
            status: exit.status,
            stdout,
            stderr: exit.stderr.clone(),
        };
        Ok((output, exit))
    }

    /// Start it with stdout piped, to be read as a stream.
    pub fn stream(&mut self) -> Result<ChildOutput> {
        self.stdout = Some(Stdio::piped());
        let mut running = self.spawn()?;
        let stdout = running.child.stdout.take().expect("piped stdout");
        Ok(ChildOutput {
            running,
            stdout,
            failure: None,
        })
    }
}

/// Read a pipe to its end in another thread, keeping the last [`STDERR_KEEP`] bytes.
fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if kept.len() > STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
        kept
    })
}

/// A started tool. Dropping it unfinished kills its process group.
#[derive(Debug)]
pub struct Running {
    child: Child,
    what: String,
    stderr: Option<JoinHandle<Vec<u8>>>,
    watchdog: Option<group::Watchdog>,
    budget: Option<(Duration, Cut)>,
    done: bool,
    secrets: Vec<String>,
}

/// How a tool ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// The end of its stderr (empty when it went elsewhere).
    pub stderr: Vec<u8>,
    what: String,
    /// Set when its deadline passed and it did not succeed.
    timed_out: Option<(Duration, Cut)>,
    secrets: Vec<String>,
}

impl Exit {
    /// Whether it exited 0 (in time).
    pub fn success(&self) -> bool {
        self.timed_out.is_none() && self.status.success()
    }

    /// The timeout error, when its deadline stopped it.
    pub fn timeout_error(&self) -> Option<SourceError> {
        self.timed_out.map(|b| timed_out(&self.what, b))
    }

    /// The end of its stderr and its status, for an error message.
    pub fn detail(&self) -> String {
        let tail = secrets::scrub(&stderr_tail(&self.stderr), &self.secrets);
        format!("{tail} ({})", self.status)
    }

    /// `Ok` when it succeeded; otherwise the timeout or [`SourceError::Failed`].
    pub fn into_result(self) -> Result<()> {
        if let Some(e) = self.timeout_error() {
            return Err(e);
        }
        if self.status.success() {
            Ok(())
        } else {
            Err(SourceError::failed(&self.what, self.detail()))
        }
    }
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether it has exited (for readiness loops of servers); `wait` still reports it.
    pub fn has_exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| SourceError::io(format!("watching {}", self.what), e))
    }

    /// Wait for it to end. Its stderr is read to the end first, so a grandchild still
    /// holding it open is waited for too (until the deadline kills the group).
    pub fn wait(&mut self) -> Result<Exit> {
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::io(format!("waiting for {}", self.what), e))?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let fired = self.watchdog.as_mut().is_some_and(|w| w.cancel());
        group::unregister(self.child.id());
        self.done = true;
        Ok(Exit {
            status,
            stderr,
            what: self.what.clone(),
            timed_out: if fired && !status.success() {
                self.budget
            } else {
                None
            },
            secrets: self.secrets.clone(),
        })
    }

    /// Wait, and turn a failure or a timeout into an error.
    pub fn finish(&mut self) -> Result<()> {
        self.wait()?.into_result()
    }

    /// Kill its process group now and wait for the leader.
    pub fn stop(&mut self) {
        if self.done {
            return;
        }
        group::kill(self.child.id());
        let _ = self.child.wait();
        if let Some(w) = self.watchdog.as_mut() {
            w.cancel();
        }
        group::unregister(self.child.id());
        self.done = true;
    }

    /// Leave it running after Haven is done with it (a restored etcd member): it is no
    /// longer killed on drop, on timeout or by [`kill_all`]. A thread reaps it if it ends
    /// while Haven runs.
    pub fn detach(mut self) {
        if let Some(w) = self.watchdog.as_mut() {
            w.cancel();
        }
        group::unregister(self.child.id());
        self.done = true;
        std::thread::spawn(move || {
            let _ = self.child.wait();
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running tool whose stdout is read as a stream. Its stderr is collected in the
/// background; at the end of stdout the child is waited for, and a non-zero exit (or a
/// timeout) turns into a read error (so the repository discards the stream). Dropped
/// before the end, it kills the tool's process group.
#[derive(Debug)]
pub struct ChildOutput {
    running: Running,
    stdout: ChildStdout,
    /// How the tool failed, once seen at the end of the stream (kept typed for `finish`).
    failure: Option<SourceError>,
}

impl ChildOutput {
    /// Wait for the tool (after its stdout was read to the end) and report how it ended:
    /// the tool's own failure (or timeout), also when the reader already saw it as a
    /// read error, so callers can put the cause before a consequence.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if self.running.done {
            return Ok(());
        }
        self.running.finish()
    }

    /// The tool's failure, if the end of the stream already showed one: the cause to
    /// report when the reader of the stream failed (a dropped `ChildOutput` kills a tool
    /// still running).
    pub fn take_failure(&mut self) -> Option<SourceError> {
        self.failure.take()
    }
}

impl Read for ChildOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.running.done {
            if let Err(e) = self.running.finish() {
                let message = e.to_string();
                self.failure = Some(e);
                return Err(io::Error::other(message));
            }
        }
        Ok(n)
    }
}

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

/// Map a spawn error: a program that does not exist is a missing tool.
fn spawn_error(cmd: &Command, hint: &str, e: io::Error) -> SourceError {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if e.kind() == io::ErrorKind::NotFound {
        SourceError::MissingTool {
            tool: program,
            hint: hint.to_string(),
        }
    } else {
        SourceError::io(format!("starting {program}"), e)
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
        let err = Tool::new("haven-no-such-tool", "dumping", "install it")
            .run()
            .unwrap_err();
        assert!(matches!(err, SourceError::MissingTool { .. }), "{err}");
        assert!(err.to_string().contains("haven-no-such-tool"), "{err}");
        assert!(err.to_string().contains("install it"), "{err}");
    }

    #[test]
    fn a_tool_failing_after_output_makes_the_stream_fail_at_its_end() {
        let mut out = Tool::script("echo partial; echo broken pipe >&2; exit 3", "the dump", "")
            .stream()
            .unwrap();
        let mut buf = vec![];
        let err = out.read_to_end(&mut buf).unwrap_err();
        assert_eq!(buf, b"partial\n");
        assert!(err.to_string().contains("broken pipe"), "{err}");
        assert!(err.to_string().contains("the dump failed"), "{err}");
    }

    #[test]
    fn a_tool_succeeding_reads_to_the_end() {
        let mut out = Tool::script("printf abc", "the dump", "").stream().unwrap();
        let mut buf = vec![];
        out.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn stderr_is_kept_bounded_to_its_end() {
        let err = Tool::script(
            "head -c 1000000 /dev/zero | tr '\\0' x >&2; echo; echo the-end >&2; exit 1",
            "the noisy tool",
            "",
        )
        .run()
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the-end"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
        assert!(text.len() < 2 * STDERR_KEEP, "{}", text.len());
    }

    #[test]
    fn spans_parse_and_print() {
        assert_eq!(parse_span("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(format_span(Duration::from_secs(5400)), "1h30m");
        assert!(parse_span("10").is_err());
        assert!(parse_span("99999999999999999999d").is_err());
    }

    #[test]
    fn a_past_deadline_refuses_to_start_and_the_earlier_limit_counts() {
        let past = Limits::timeout(Duration::from_secs(3600)).until(Some(Instant::now()));
        let err = Tool::script("true", "the tool", "")
            .limits(past)
            .run()
            .unwrap_err();
        assert!(matches!(err, SourceError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("job-timeout"), "{err}");
    }
}
