//! `command`: any system with a dump command and a restore command. The dump command
//! writes the backup to stdout; the restore command reads it from stdin. Both run with
//! `sh -c`. The optional fingerprint command prints facts, one per line, as
//! `NAME VALUE` (split at the first whitespace); the optional probe command exits 0 when
//! the system is healthy.
//!
//! The fingerprint command runs right after the dump, outside any transaction of the
//! dumped system: for a system that changes meanwhile it can differ. Prefer a dump and a
//! fingerprint that describe the same state (see the README's MariaDB recipe).
//!
//! `tenant verify` restores into a scratch target only when `verify-restore` is set (with
//! `verify-fingerprint` and `verify-cleanup`, the latter always run afterwards).
//!
//! Every command runs through [`crate::process::Tool::script`]: in the run's private work folder
//! (its working directory and `TMPDIR`), without Haven's secrets in its environment,
//! stopped with everything it started after `timeout` (default [`DEFAULT_TIMEOUT`]). The
//! commands are shown (in recovery points, logs, errors) through [`crate::process::redact`].

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::process::{redact, Limits, Span, Tool};
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandConfig {
    /// Writes the dump to stdout.
    pub backup: String,
    /// Reads a dump from stdin and restores it.
    pub restore: Option<String>,
    /// Prints `NAME VALUE` lines describing the data.
    pub fingerprint: Option<String>,
    /// Exits 0 when the system is healthy.
    pub probe: Option<String>,
    /// `tenant verify`: restores a dump from stdin into a scratch target.
    pub verify_restore: Option<String>,
    /// `tenant verify`: the fingerprint command of the scratch target.
    pub verify_fingerprint: Option<String>,
    /// `tenant verify`: removes the scratch target; always runs after a verify.
    pub verify_cleanup: Option<String>,
    /// How long each of these commands may run before it is stopped with everything it
    /// started (default [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout: Option<Span>,
}

/// How long a command may run when the config gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

const HINT: &str = "the command runs with `sh -c`; install what it calls";

#[derive(Debug, Clone)]
pub struct CommandComponent {
    pub config: CommandConfig,
    deadline: Option<Instant>,
}

impl CommandComponent {
    pub fn new(config: CommandConfig) -> Self {
        CommandComponent {
            config,
            deadline: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits::timeout(self.config.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0)).until(self.deadline)
    }

    /// `sh -c script`, named `the <which> command `script`` (redacted) in errors.
    fn shell(&self, which: &str, script: &str, work: Option<&Path>) -> Tool {
        let mut tool = Tool::script(
            script,
            format!("the {which} command `{}`", redact(script)),
            HINT,
        );
        tool.limits(self.limits());
        if let Some(work) = work {
            tool.work(work);
        }
        tool
    }
}

/// Parse the output of a fingerprint command.
pub fn parse_facts(output: &str) -> Fingerprint {
    let mut fp = Fingerprint::default();
    let mut n = 0;
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(a, b)| (a, b.trim()));
        fp.fact(name, value);
        n += 1;
    }
    fp.summary = format!("{n} facts from the fingerprint command");
    fp
}

impl StreamComponent for CommandComponent {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn describe(&self) -> String {
        format!("`{}`", redact(&self.config.backup))
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn stream_name(&self) -> &'static str {
        "dump"
    }

    fn backup(&self, sink: &mut Sink<'_>, work: &Path) -> Result<Fingerprint> {
        let mut out = self
            .shell("backup", &self.config.backup, Some(work))
            .stream()?;
        if let Err(e) = sink(&mut out) {
            // The command's own failure (or timeout) explains a failed store.
            return Err(out.take_failure().unwrap_or(e));
        }
        out.finish()?;
        self.fingerprint()
    }

    fn restore(&self, feed: &mut Feed<'_>, work: &Path, _opts: &RestoreOptions) -> Result<()> {
        let script = self.config.restore.as_deref().ok_or_else(|| {
            SourceError::Unsupported(
                "this command component has no `restore` command; add one to the config".into(),
            )
        })?;
        let mut child = self
            .shell("restore", script, Some(work))
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.take_stdin().expect("piped stdin");
        let fed = feed(&mut stdin);
        let _ = stdin.flush();
        drop(stdin);
        child.finish()?;
        fed.map(|_| ())
    }

    fn fingerprint(&self) -> Result<Fingerprint> {
        let Some(script) = &self.config.fingerprint else {
            return Ok(Fingerprint::new("no fingerprint command configured"));
        };
        let out = self.shell("fingerprint", script, None).run()?;
        Ok(parse_facts(&String::from_utf8_lossy(&out.stdout)))
    }

    fn probe(&self) -> Result<String> {
        let Some(script) = &self.config.probe else {
            return Ok("no probe command configured".into());
        };
        self.shell("probe", script, None).run()?;
        Ok(format!("`{}` exited 0", redact(script)))
    }

    fn scratch(&self, _work: &Path) -> Result<Box<dyn ScratchTarget>> {
        let Some(restore) = &self.config.verify_restore else {
            return Err(SourceError::Unsupported(
                "no `verify-restore` command configured, so verify cannot restore this component into a scratch target".into(),
            ));
        };
        let config = CommandConfig {
            restore: Some(restore.clone()),
            fingerprint: self.config.verify_fingerprint.clone(),
            probe: None,
            ..self.config.clone()
        };
        Ok(Box::new(CommandScratch {
            component: CommandComponent {
                config,
                deadline: self.deadline,
            },
            cleanup: self.config.verify_cleanup.clone(),
        }))
    }
}

struct CommandScratch {
    component: CommandComponent,
    cleanup: Option<String>,
}

impl ScratchTarget for CommandScratch {
    fn component(&self) -> &dyn StreamComponent {
        &self.component
    }
}

impl Drop for CommandScratch {
    fn drop(&mut self) {
        if let Some(script) = &self.cleanup {
            let mut cleanup = self.component.shell("verify-cleanup", script, None);
            // It runs also after the job's deadline passed: it undoes the scratch target.
            cleanup.limits(Limits {
                deadline: None,
                ..self.component.limits()
            });
            if let Err(e) = cleanup.run() {
                eprintln!("haven: warning: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(backup: &str, restore: &str, fingerprint: &str) -> CommandComponent {
        CommandComponent::new(CommandConfig {
            backup: backup.into(),
            restore: Some(restore.into()),
            fingerprint: Some(fingerprint.into()),
            probe: None,
            verify_restore: None,
            verify_fingerprint: None,
            verify_cleanup: None,
            timeout: None,
        })
    }

    #[test]
    fn dump_restore_and_fingerprint_round_trip_through_shell_commands() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::write(&src, "alpha 1\nbeta 2\n").unwrap();
        let c = component(
            &format!("cat {}", src.display()),
            &format!("cat > {}", dst.display()),
            &format!("cat {}", src.display()),
        );
        let mut stored = vec![];
        let fp = c
            .backup(
                &mut |r| {
                    r.read_to_end(&mut stored).unwrap();
                    Ok(())
                },
                dir.path(),
            )
            .unwrap();
        assert_eq!(fp.facts["alpha"], "1");
        c.restore(
            &mut |w| {
                w.write_all(&stored).unwrap();
                Ok(stored.len() as u64)
            },
            dir.path(),
            &RestoreOptions::default(),
        )
        .unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), stored);
    }

    #[test]
    fn a_failing_dump_command_fails_the_backup() {
        let c = component("echo half; exit 1", "cat >/dev/null", "true");
        let err = c
            .backup(
                &mut |r| {
                    let mut buf = vec![];
                    r.read_to_end(&mut buf)
                        .map(|_| ())
                        .map_err(|e| SourceError::io("storing", e))
                },
                Path::new("/tmp"),
            )
            .unwrap_err();
        assert!(err.to_string().contains("echo half"), "{err}");
    }
}
