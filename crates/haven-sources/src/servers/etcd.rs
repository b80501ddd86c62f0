//! A throwaway etcd: one member with its own data directory and free loopback client and
//! peer ports, awaited by polling `/health`, killed and removed on drop
//! ([`EtcdServer::start`]). Used by tests and the demo.
//!
//! Also how Haven runs the members it restores: launched detached in their own session
//! (a Ctrl-C of Haven or its exit does not stop them), logging to `<data-dir>.log`, their
//! process id in `<data-dir>.pid`. [`EtcdServer::adopt`] takes charge of such a member so
//! that it is stopped and removed on drop, as tests and the demo need.
//!
//! A process is only ever signalled after `/proc/<pid>/cmdline` shows it is an etcd
//! started with that data directory, so a stale pid file cannot stop anything else.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

use crate::etcd::{find_tool, EtcdClient};
use crate::process::{self, free_port, Running, Tool};
use crate::{Result, SourceError};

/// The cluster token of members Haven brings up (restored or throwaway).
pub(crate) const CLUSTER_TOKEN: &str = "haven";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running single-member etcd that is stopped, and whose data directory, log and pid
/// file are removed, when this value is dropped.
pub struct EtcdServer {
    client: EtcdClient,
    data_dir: PathBuf,
    process: Process,
}

enum Process {
    /// Started here: killed and waited for.
    Child(Running),
    /// Adopted: stopped by pid.
    Pid(u32),
}

impl EtcdServer {
    /// Start a member with its data in `dir/etcd-<client port>`, on free loopback ports.
    /// Returns once it is healthy. Tries other ports if the chosen ones were taken
    /// meanwhile.
    pub fn start(dir: &Path) -> Result<EtcdServer> {
        let etcd = find_tool(None, "etcd", "install etcd-server")?;
        let dir = std::path::absolute(dir)
            .map_err(|e| SourceError::io(format!("resolving {}", dir.display()), e))?;
        let mut last = None;
        for _ in 0..3 {
            let client_port = free_port()?;
            let peer_port = loop {
                let port = free_port()?;
                if port != client_port {
                    break port;
                }
            };
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let data_dir = dir.join(format!("etcd-{client_port}"));
            let member = Member {
                etcd: &etcd,
                name: "haven-test",
                data_dir: &data_dir,
                client_url: &client_url,
                peer_url: &peer_url,
            };
            match launch(&member, false, START_TIMEOUT) {
                Ok(child) => {
                    return Ok(EtcdServer {
                        client: EtcdClient::new(&client_url)?,
                        data_dir,
                        process: Process::Child(child),
                    })
                }
                Err(e @ SourceError::MissingTool { .. }) => return Err(e),
                Err(e) => {
                    let _ = remove_files(&data_dir);
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts"))
    }

    /// Take charge of the member that `EtcdComponent::restore` started in `data_dir`,
    /// serving on `endpoint`: dropping the returned value stops it and removes its files.
    pub fn adopt(data_dir: &Path, endpoint: &str) -> Result<EtcdServer> {
        let data_dir = std::path::absolute(data_dir)
            .map_err(|e| SourceError::io(format!("resolving {}", data_dir.display()), e))?;
        let pid = running_pid(&data_dir).ok_or_else(|| {
            SourceError::failed(
                format!("adopting the etcd member of {}", data_dir.display()),
                format!(
                    "{} names no running etcd member",
                    pid_path(&data_dir).display()
                ),
            )
        })?;
        Ok(EtcdServer {
            client: EtcdClient::new(endpoint)?,
            data_dir,
            process: Process::Pid(pid),
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        self.client.url()
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(child) => child.id(),
            Process::Pid(pid) => *pid,
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Child(child) => child.stop(),
            Process::Pid(pid) => {
                if let Err(e) = stop(*pid, &self.data_dir) {
                    eprintln!("haven: warning: {e}");
                }
            }
        }
        if let Err(e) = remove_files(&self.data_dir) {
            eprintln!("haven: warning: {e}");
        }
    }
}

fn with_suffix(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut path = data_dir.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// Where a member Haven started logs: `<data-dir>.log`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    with_suffix(data_dir, ".log")
}

/// Where the process id of a member Haven started is kept: `<data-dir>.pid`.
pub fn pid_path(data_dir: &Path) -> PathBuf {
    with_suffix(data_dir, ".pid")
}

/// A member to start (`data_dir` absolute).
pub(crate) struct Member<'a> {
    pub etcd: &'a Path,
    pub name: &'a str,
    pub data_dir: &'a Path,
    pub client_url: &'a str,
    pub peer_url: &'a str,
}

impl Member<'_> {
    fn args(&self) -> Vec<OsString> {
        let cluster = format!("{}={}", self.name, self.peer_url);
        let mut args: Vec<OsString> = vec!["--data-dir".into(), self.data_dir.into()];
        for (flag, value) in [
            ("--name", self.name),
            ("--listen-client-urls", self.client_url),
            ("--advertise-client-urls", self.client_url),
            ("--listen-peer-urls", self.peer_url),
            ("--initial-advertise-peer-urls", self.peer_url),
            ("--initial-cluster", &cluster),
            ("--initial-cluster-token", CLUSTER_TOKEN),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }
}

/// Start `member` and wait until it is healthy; writes its pid file. `detached`: in a
/// session of its own (via `setsid`), so that it outlives Haven. On failure the process
/// is killed and the error carries the end of its log.
pub(crate) fn launch(member: &Member<'_>, detached: bool, timeout: Duration) -> Result<Running> {
    let log_path = log_path(member.data_dir);
    let io = |what: &str, e| SourceError::io(format!("{what} {}", log_path.display()), e);
    if let Some(parent) = member.data_dir.parent() {
        fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io("opening", e))?;
    let args = member.args();
    let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    writeln!(
        log,
        "haven: starting {} {}",
        member.etcd.display(),
        shown.join(" ")
    )
    .map_err(|e| io("writing", e))?;
    let what = format!("etcd for {}", member.client_url);
    let mut cmd = if detached {
        let mut cmd = Tool::new(
            "setsid",
            what,
            "install util-linux (its setsid starts the member in its own session)",
        );
        cmd.arg(member.etcd).leaves_session();
        cmd
    } else {
        Tool::new(member.etcd, what, "install etcd-server")
    };
    let stdout = log.try_clone().map_err(|e| io("opening", e))?;
    let mut child = cmd
        .args(&args)
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log))
        .spawn()?;
    let client = EtcdClient::new(member.client_url)?;
    let mut exited = None;
    let ready = process::wait_until(&format!("etcd at {}", member.client_url), timeout, || {
        if let Some(status) = child.has_exited()? {
            exited = Some(status);
            return Ok(true);
        }
        client.health()
    });
    let failure = match (ready, exited) {
        (Ok(()), None) => {
            let pid = pid_path(member.data_dir);
            match fs::write(&pid, format!("{}\n", child.id())) {
                Ok(()) => return Ok(child),
                Err(e) => SourceError::io(format!("writing {}", pid.display()), e),
            }
        }
        (_, Some(status)) => {
            let text = fs::read(&log_path).unwrap_or_default();
            SourceError::failed(
                format!("starting etcd for {}", member.client_url),
                format!(
                    "it exited ({status}): {}; see {}",
                    process::stderr_tail(&text),
                    log_path.display()
                ),
            )
        }
        (Err(e), None) => e,
    };
    child.stop();
    Err(failure)
}

/// Let a launched member run on: a thread reaps it when it ends (no zombie while Haven
/// runs); when Haven exits first, the member stays.
pub(crate) fn detach(child: Running) {
    child.detach();
}

/// Whether `pid` is an etcd started with `--data-dir <data_dir>`.
fn runs_member(pid: u32, data_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--data-dir" && w[1] == data_dir.as_os_str().as_bytes())
}

/// The pid of the member Haven started in `data_dir`, if it still runs.
pub(crate) fn running_pid(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(pid_path(data_dir)).ok()?;
    let pid = text.trim().parse().ok()?;
    runs_member(pid, data_dir).then_some(pid)
}

/// Stop the member `pid` of `data_dir` (SIGTERM, then SIGKILL) and wait until it is gone.
pub(crate) fn stop(pid: u32, data_dir: &Path) -> Result<()> {
    let what = format!("stopping etcd (pid {pid}, {})", data_dir.display());
    for signal in [Signal::TERM, Signal::KILL] {
        if !runs_member(pid, data_dir) {
            return Ok(());
        }
        let sent = Pid::from_raw(pid as i32)
            .filter(|_| pid > 1)
            .map_or(Err(rustix::io::Errno::SRCH), |p| kill_process(p, signal));
        if let Err(e) = sent {
            let e = SourceError::io(&what, e.into());
            // It may have ended between the check and the signal.
            return if runs_member(pid, data_dir) {
                Err(e)
            } else {
                Ok(())
            };
        }
        let gone = process::wait_until(&what, STOP_TIMEOUT, || Ok(!runs_member(pid, data_dir)));
        if gone.is_ok() {
            return Ok(());
        }
    }
    Err(SourceError::failed(
        what,
        "it is still running after SIGKILL",
    ))
}

/// Remove a member's data directory, log and pid file (those that exist).
pub(crate) fn remove_files(data_dir: &Path) -> Result<()> {
    let remove = |result: std::io::Result<()>, path: &Path| match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SourceError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    };
    remove(fs::remove_dir_all(data_dir), data_dir)?;
    for path in [log_path(data_dir), pid_path(data_dir)] {
        remove(fs::remove_file(&path), &path)?;
    }
    Ok(())
}
