//! What one tenant operation (a backup, restore, verify) gives the programs it runs:
//! the work directory its private work folders are made under, and the deadline of the
//! job it is part of. Every component is built through [`RunEnv::component`] (so its
//! tools stop at that deadline besides their own `timeout`), every work folder through
//! [`RunEnv::work`], every hook through [`RunEnv::hook`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use haven_sources::process::{redact, Limits, Tool, WorkDir};
use haven_sources::StreamComponent;

use crate::backup::{stream_component, Observer};
use crate::config::{ComponentConfig, Config, FilesConfig};
use crate::OpsError;

/// How long a files component's pre- or post-hook may run without a `timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);

/// The work directory and deadline of one operation.
#[derive(Debug, Clone)]
pub(crate) struct RunEnv {
    work_base: PathBuf,
    pub(crate) deadline: Option<Instant>,
}

impl RunEnv {
    pub fn new(config: &Config, observer: &Observer) -> RunEnv {
        RunEnv {
            work_base: config.work_base(),
            deadline: observer.deadline,
        }
    }

    /// The stream component behind a config entry, stopping at the job's deadline.
    pub fn component(&self, c: &ComponentConfig) -> Option<Box<dyn StreamComponent>> {
        let mut component = stream_component(c)?;
        component.set_deadline(self.deadline);
        Some(component)
    }

    /// A fresh private (0700, unpredictable name) work folder for `label`.
    pub fn work(&self, label: &str) -> Result<WorkDir, OpsError> {
        Ok(WorkDir::create(&self.work_base, label)?)
    }

    /// A hook of a files component: `sh -c script` without Haven's secrets, stopped
    /// (with everything it started) after the component's `timeout`.
    pub fn hook(&self, which: &str, script: &str, cfg: &FilesConfig) -> Tool {
        let mut tool = Tool::script(script, format!("the {which}-hook `{}`", redact(script)), "");
        let timeout = cfg.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |s| s.0);
        let limits = Limits::timeout(timeout);
        // A post-hook undoes what the pre-hook did (a freeze): it runs after a deadline too.
        tool.limits(if which == "post" {
            limits
        } else {
            limits.until(self.deadline)
        });
        tool
    }
}
