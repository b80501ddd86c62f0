//! `postgres` in `mode = "physical"`: base backups of the whole cluster, and restores of
//! one to a moment in the WAL that followed it.
//!
//! Backup data flow:
//! ```text
//! psql: wal_segment_size, system identifier, version (and the credentials, named early)
//! pg_basebackup -Ft -X none -c fast -D - ──tar──> tee ──> sink (the repository)
//!                                                  └──copy──> label::read_base_backup
//!                                                     (backup_label + backup_manifest)
//! ```
//! The tar is stored as it comes (`base.tar`): the repository's content-defined chunks
//! deduplicate it against the previous base backup, so a second one stores what changed.
//! Its facts ([`BaseFacts`]) say where WAL replay must start and end for it to be
//! consistent, on which timeline and when; the WAL itself is archived apart (the ops
//! layer's `wal` module) and staged into a folder for the restore.
//!
//! Restore data flow ([`PostgresComponent::restore_physical`]):
//! ```text
//! data-dir (empty, or emptied with force) <── tar -x <── base.tar
//! pg_verifybackup -w <staged WAL>   every file against the manifest, and the WAL the
//!                                   backup needs for consistency, parsed
//! postgresql.auto.conf += restore_command (cp from the staged folder), the target,
//!                         recovery_target_action = promote, port, archive_mode = off
//! recovery.signal; pg_ctl start; wait until no longer in recovery (promoted)
//! report: the LSN and timeline reached, the last transaction replayed (server log)
//! ```
//! Archiving is switched off in the restored server so that a copy cannot push its new
//! timeline into the source's archive; turn it back on pointing at its own component.
//!
//! Limits: the data directory must hold `postgresql.conf` and `pg_hba.conf` (as `initdb`
//! lays it out; Debian keeps them in /etc, and a restore of such a cluster needs them put
//! back); tablespaces other than the default ones are refused by `pg_basebackup -D -`.

pub mod files;
pub mod label;
pub mod lsn;
pub mod stream;
pub mod waldump;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::archive::{Received, Tee};
use super::session::drain;
use super::PostgresComponent;
use crate::process::Tool;
use crate::servers::postgres::{open_ancestors, quote_conf, run_as, server_user, SUPERUSER};
use crate::{Feed, Fingerprint, Result, Sink, SourceError};
pub use files::{BaseMethod, FileBackup, FILES_METHOD};
pub use label::BaseBackupInfo;
pub use lsn::{Lsn, WalFile};

/// The name of the stored stream of a base backup.
pub const BASE_STREAM: &str = "base.tar";

/// Where recovery stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// As backed up: the moment the base backup became consistent (its end).
    #[default]
    Immediate,
    /// The end of the archived WAL.
    Latest,
    /// Just after the last transaction that committed at or before this moment
    /// (`2026-12-04 15:03:07.250+00`, as PostgreSQL's `recovery_target_time`).
    Time(String),
    /// Just after this position.
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point(name)`.
    Name(String),
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Immediate => f.write_str("the end of the base backup"),
            RecoveryTarget::Latest => f.write_str("the end of the archived WAL"),
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// The facts of a base backup as recorded in its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFacts {
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub timeline: u32,
    pub segment_size: u64,
    pub system_identifier: String,
}

impl BaseFacts {
    /// Read the facts back from a recorded fingerprint.
    pub fn from_fingerprint(f: &Fingerprint) -> std::result::Result<BaseFacts, String> {
        let get = |k: &str| {
            f.facts
                .get(k)
                .ok_or_else(|| format!("the base backup's record has no {k}"))
        };
        Ok(BaseFacts {
            start_lsn: get("start-lsn")?.parse()?,
            end_lsn: get("end-lsn")?.parse()?,
            timeline: get("timeline")?
                .parse()
                .map_err(|_| "timeline is not a number")?,
            segment_size: get("wal-segment-size")?
                .parse()
                .map_err(|_| "wal-segment-size is not a number")?,
            system_identifier: get("system-identifier")?.clone(),
        })
    }
}

/// The base backup a physical restore starts from.
pub enum Base<'a> {
    /// A `pg_basebackup` tar stream (`base.tar`), checked against its manifest by
    /// `pg_verifybackup`.
    Tar(&'a mut Feed<'a>),
    /// The data directory's files (a base backup taken as files): `write` puts the
    /// directory's contents into the folder it is given and returns the bytes written
    /// (the repository checks every chunk it reads against its hash); `label` is the
    /// backup's `backup_label`.
    Files {
        write: &'a mut dyn FnMut(&Path) -> Result<u64>,
        label: String,
    },
}

/// What a physical restore reached.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The server's WAL position once promoted.
    pub lsn: Lsn,
    /// The timeline it promoted to.
    pub timeline: u32,
    /// What the server logged about where recovery stopped (or the last transaction
    /// replayed), as its log says it.
    pub stopped: Option<String>,
    /// What was checked, one entry per check.
    pub checked: Vec<String>,
}

impl PostgresComponent {
    /// Take a base backup into `sink` and return its facts as a fingerprint.
    pub(super) fn base_backup(&self, sink: &mut Sink<'_>) -> Result<Fingerprint> {
        let conn = self.conn()?;
        let pg_basebackup = self.tool("pg_basebackup")?;
        let mut session = self.session(&conn)?;
        let row = session.query(
            "SELECT setting, (SELECT system_identifier FROM pg_control_system()), \
             current_setting('server_version_num') FROM pg_settings WHERE name = 'wal_segment_size';",
        )?;
        session.close()?;
        let fields: Vec<&str> = row
            .first()
            .map(|l| l.split('|').collect())
            .unwrap_or_default();
        let [segment_size, system_id, version] = fields[..] else {
            return Err(SourceError::failed(
                format!("reading the settings of {}", conn.render(false)),
                format!("unexpected answer {row:?}"),
            ));
        };
        let what = format!("pg_basebackup of {}", conn.render(false));
        let mut cmd = self.command(&pg_basebackup, &conn, &what);
        cmd.args(["-Ft", "-X", "none", "-c", "fast", "-D", "-", "-d"])
            .arg(conn.render(false));
        let mut out = cmd.stream()?;
        let (tx, rx) = mpsc::sync_channel(64);
        let reader = std::thread::spawn(move || label::read_base_backup(Received::new(rx)));
        let stored = sink(&mut Tee {
            inner: &mut out,
            tx,
        });
        let stored = match stored {
            Ok(()) => drain(&mut out, &what),
            Err(e) => Err(out.take_failure().unwrap_or(e)),
        };
        let info = reader.join().expect("the label reader does not panic");
        stored?;
        let info = info.map_err(|e| SourceError::failed(format!("reading the {what}"), e))?;
        // The backup is consistent at its end LSN, written before pg_basebackup ended:
        // the server's clock now is a moment at or after it (what time targets compare).
        let mut session = self.session(&conn)?;
        let now = session.query(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"');",
        )?;
        session.close()?;
        let end_time = now.first().cloned().unwrap_or_default();
        let mut f = Fingerprint::new(format!(
            "base backup of {} files, WAL {} to {} on timeline {}",
            info.manifest_files, info.start_lsn, info.end_lsn, info.timeline
        ));
        f.fact("start-lsn", info.start_lsn.to_string())
            .fact("end-lsn", info.end_lsn.to_string())
            .fact("timeline", info.timeline.to_string())
            .fact("start-time", info.start_time)
            .fact("end-time", end_time)
            .fact("wal-segment-size", segment_size)
            .fact("system-identifier", system_id)
            .fact("server-version", version)
            .fact("files", info.manifest_files.to_string())
            .fact("bytes", info.data_bytes.to_string());
        Ok(f)
    }

    /// What the archived WAL segment at `path` holds (last commit, restore points).
    pub fn summarize_segment(&self, path: &Path) -> Result<waldump::SegmentSummary> {
        waldump::summarize(&self.tool("pg_waldump")?, path)
    }

    /// Restore a base backup (`base`) into this component's `data-dir`, replay the WAL
    /// staged in `wal_dir` up to `target`, promote, and report where it stopped.
    pub fn restore_physical(
        &self,
        base: Base<'_>,
        facts: &BaseFacts,
        wal_dir: &Path,
        target: &RecoveryTarget,
        force: bool,
    ) -> Result<Recovered> {
        let data = self.config.data_dir.clone().ok_or_else(|| {
            SourceError::Unsupported(format!(
                "{} has no `data-dir`: a physical restore creates a data directory and starts \
                 a server on it; name where (e.g. data-dir = \"/var/lib/postgresql/15/restored\")",
                self.describe_target()
            ))
        })?;
        let port = self.conn()?.port().unwrap_or(5432);
        let server = RestoredServer::prepare(self, data, port, force)?;
        server.give(wal_dir)?;
        let verified = match base {
            Base::Tar(feed) => {
                server.extract(feed)?;
                server.verify(wal_dir)?
            }
            Base::Files { write, label } => {
                server.write_files(write, &label)?;
                server.verify_wal(wal_dir, facts)?
            }
        };
        let mut checked = vec![verified];
        server.configure(wal_dir, target)?;
        server.start()?;
        let mut recovered = server.wait_promoted(target)?;
        checked.append(&mut recovered.checked);
        recovered.checked = checked;
        Ok(recovered)
    }

    /// A scratch target for `tenant verify`: this component's credentials, a server on
    /// a free loopback port, its data directory at `data_dir`.
    pub fn physical_scratch(&self, data_dir: PathBuf) -> Result<PostgresComponent> {
        let port = crate::process::free_port()?;
        let url = self.conn()?.with_host_port("127.0.0.1", port).render(true);
        let mut config = self.config.clone();
        config.url = url;
        config.data_dir = Some(data_dir);
        let mut scratch = PostgresComponent::new(config);
        scratch.deadline = self.deadline;
        Ok(scratch)
    }

    /// Check the restored cluster with `pg_amcheck`: every table's heap and every B-tree
    /// index in every database (a read of the whole cluster, about what the restore
    /// wrote; `--endblock` cannot bound it, since it refuses tables shorter than the
    /// bound). It installs the `amcheck` extension where it is missing, so it is for
    /// throwaway servers (a drill), not a user's restored one. Returns what was checked.
    pub fn amcheck_sample(&self) -> Result<String> {
        let conn = self.conn()?;
        let tool = self.tool("pg_amcheck")?;
        let what = format!("pg_amcheck of {}", conn.render(false));
        let mut cmd = self.command(&tool, &conn, &what);
        cmd.arg("--maintenance-db")
            .arg(conn.render(false))
            .args(["--all", "--install-missing", "--jobs", "2"])
            .stdout(std::process::Stdio::piped());
        let out = cmd.run_any_status()?;
        if !out.status.success() {
            // It reports corruption on stdout (exit 2), failures on stderr (exit 1).
            let found = String::from_utf8_lossy(&out.stdout);
            let found: Vec<&str> = found.lines().take(5).collect();
            return Err(SourceError::failed(
                what,
                format!(
                    "{} {} ({})",
                    found.join("; "),
                    crate::process::stderr_tail(&out.stderr),
                    out.status
                ),
            ));
        }
        Ok(
            "pg_amcheck: every table and B-tree index of every database: no corruption found"
                .into(),
        )
    }

    /// Stop the server a physical restore started on `data-dir` (`pg_ctl stop -m fast`).
    pub fn stop_physical(&self) -> Result<()> {
        let Some(data) = self.config.data_dir.clone() else {
            return Ok(());
        };
        if !data.join("postmaster.pid").exists() {
            return Ok(());
        }
        let user = server_user()?.map(|_| SUPERUSER);
        let what = format!("stopping PostgreSQL on {}", data.display());
        let mut cmd = run_as(user, self.tool("pg_ctl")?, &what);
        cmd.args(["stop", "-w", "-s", "-m", "fast", "-t", "60", "-D"])
            .arg(&data)
            .current_dir("/");
        cmd.run().map(|_| ())
    }

    fn describe_target(&self) -> String {
        self.conn()
            .map(|c| c.render(false))
            .unwrap_or_else(|_| "the target".into())
    }
}

/// A data directory being restored, and the server Haven starts on it.
struct RestoredServer<'a> {
    component: &'a PostgresComponent,
    data: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid when we are root (commands then go through
    /// `runuser`).
    run_as: Option<(u32, u32)>,
}

impl<'a> RestoredServer<'a> {
    /// Check the target and make `data` an empty directory the server may own.
    fn prepare(
        component: &'a PostgresComponent,
        data: PathBuf,
        port: u16,
        force: bool,
    ) -> Result<Self> {
        let run_as = server_user()?;
        let shown = data.display().to_string();
        if data.join("postmaster.pid").exists() {
            return Err(SourceError::TargetNotEmpty {
                target: shown,
                detail: "a server may be running on it (postmaster.pid); stop it first".into(),
            });
        }
        let occupied = fs::read_dir(&data).is_ok_and(|mut entries| entries.next().is_some());
        if occupied {
            if !force {
                return Err(SourceError::TargetNotEmpty {
                    target: shown,
                    detail: "the data directory holds files".into(),
                });
            }
            fs::remove_dir_all(&data)
                .map_err(|e| SourceError::io(format!("emptying {shown}"), e))?;
        }
        fs::create_dir_all(&data).map_err(|e| SourceError::io(format!("creating {shown}"), e))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(|e| SourceError::io(format!("making {shown} private"), e))?;
        if let Some((uid, gid)) = &run_as {
            open_ancestors(&data)?;
            std::os::unix::fs::chown(&data, Some(*uid), Some(*gid))
                .map_err(|e| SourceError::io(format!("giving {shown} to postgres"), e))?;
        }
        Ok(RestoredServer {
            component,
            data,
            port,
            run_as,
        })
    }

    /// A command run as the server's user.
    fn as_server(&self, program: impl AsRef<std::ffi::OsStr>, what: &str) -> Tool {
        run_as(self.run_as.map(|_| SUPERUSER), program, what)
    }

    /// Give the staged WAL folder and its files to the server's user (its
    /// `restore_command` reads them).
    fn give(&self, dir: &Path) -> Result<()> {
        let Some((uid, gid)) = &self.run_as else {
            return Ok(());
        };
        open_ancestors(dir)?;
        let chown = |p: &Path| {
            std::os::unix::fs::chown(p, Some(*uid), Some(*gid))
                .map_err(|e| SourceError::io(format!("giving {} to postgres", p.display()), e))
        };
        chown(dir)?;
        let entries = fs::read_dir(dir)
            .map_err(|e| SourceError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries.flatten() {
            chown(&entry.path())?;
        }
        Ok(())
    }

    fn extract(&self, base: &mut Feed<'_>) -> Result<()> {
        let what = format!("unpacking the base backup into {}", self.data.display());
        let mut cmd = self.as_server("tar", &what);
        cmd.arg("-x").arg("-C").arg(&self.data).arg("-f").arg("-");
        let mut child = cmd.stdin(Stdio::piped()).spawn()?;
        let mut stdin = child.take_stdin().expect("piped stdin");
        let fed = base(&mut stdin)
            .and_then(|_| stdin.flush().map_err(|e| SourceError::io(what.clone(), e)));
        drop(stdin);
        let exit = child.wait()?;
        exit.into_result()?;
        fed.map(|_| ())
    }

    /// Every file against the manifest, and the WAL the backup needs to be consistent.
    fn verify(&self, wal_dir: &Path) -> Result<String> {
        let what = format!("pg_verifybackup of {}", self.data.display());
        let mut cmd = self.as_server(self.component.tool("pg_verifybackup")?, &what);
        cmd.arg("-q")
            .arg("-w")
            .arg(wal_dir)
            .arg(&self.data)
            .limits(self.component.limits());
        cmd.run()?;
        Ok(
            "pg_verifybackup: every file matches the backup manifest and the WAL up to the \
            consistency point parses"
                .into(),
        )
    }

    /// Write a base backup taken as files: its contents into the data directory (through
    /// a staging folder inside it, so that nothing half-written has a real name), the
    /// folders whose contents were left out, and its `backup_label`; owned by the
    /// server's user.
    fn write_files(&self, write: &mut dyn FnMut(&Path) -> Result<u64>, label: &str) -> Result<()> {
        let io = |what: &str, p: &Path, e: std::io::Error| {
            SourceError::io(format!("{what} {}", p.display()), e)
        };
        let staging = self.data.join(".haven-restore");
        fs::create_dir(&staging).map_err(|e| io("creating", &staging, e))?;
        write(&staging)?;
        let entries = fs::read_dir(&staging).map_err(|e| io("listing", &staging, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("listing", &staging, e))?;
            fs::rename(entry.path(), self.data.join(entry.file_name()))
                .map_err(|e| io("moving into place", &entry.path(), e))?;
        }
        fs::remove_dir(&staging).map_err(|e| io("removing", &staging, e))?;
        // pg_wal may have been a link to another disk: here it is a folder.
        let wal = self.data.join("pg_wal");
        if fs::symlink_metadata(&wal).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&wal).map_err(|e| io("replacing", &wal, e))?;
        }
        for dir in files::EMPTIED.iter().chain(&["pg_wal/archive_status"]) {
            let dir = self.data.join(dir);
            if !dir.is_dir() {
                fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io("making private", &dir, e))?;
            }
        }
        let label_file = self.data.join("backup_label");
        fs::write(&label_file, label).map_err(|e| io("writing", &label_file, e))?;
        fs::set_permissions(&label_file, fs::Permissions::from_mode(0o600))
            .map_err(|e| io("making private", &label_file, e))?;
        if let Some((uid, gid)) = self.run_as {
            chown_tree(&self.data, uid, gid)?;
        }
        Ok(())
    }

    /// The WAL from the backup's start to its consistency point parses (`pg_waldump`):
    /// the files themselves were checked against their hashes as they were read.
    fn verify_wal(&self, wal_dir: &Path, facts: &BaseFacts) -> Result<String> {
        let what = format!(
            "pg_waldump of the WAL the base backup needs ({} to {})",
            facts.start_lsn, facts.end_lsn
        );
        let mut cmd = self.as_server(self.component.tool("pg_waldump")?, &what);
        cmd.arg("--quiet")
            .arg("--path")
            .arg(wal_dir)
            .arg("--timeline")
            .arg(facts.timeline.to_string())
            .arg("--start")
            .arg(facts.start_lsn.to_string())
            .arg("--end")
            .arg(facts.end_lsn.to_string())
            .limits(self.component.limits());
        cmd.run()?;
        Ok(format!(
            "every file read back matches its content hash; the WAL from {} to the \
             consistency point {} parses (pg_waldump)",
            facts.start_lsn, facts.end_lsn
        ))
    }

    fn configure(&self, wal_dir: &Path, target: &RecoveryTarget) -> Result<()> {
        for needed in ["postgresql.conf", "pg_hba.conf"] {
            if !self.data.join(needed).is_file() {
                return Err(SourceError::Unsupported(format!(
                    "the base backup has no {needed} (the cluster keeps it outside its data \
                     directory, as Debian does in /etc/postgresql); copy it into {} and start \
                     the server yourself, or back up a cluster that keeps it inside",
                    self.data.display()
                )));
            }
        }
        let wal = wal_dir.to_string_lossy();
        let mut conf = format!(
            "\n# written by haven restore\nrestore_command = {}\nrecovery_target_timeline = 'latest'\n\
             recovery_target_action = 'promote'\narchive_mode = 'off'\nport = {}\n",
            // A hard link where the staging folder shares the data directory's file
            // system (no 16 MB copy per segment); a copy otherwise.
            quote_conf(&format!(
                "ln -f \"{wal}/%f\" \"%p\" 2>/dev/null || cp \"{wal}/%f\" \"%p\""
            )),
            self.port
        );
        let socket = self.data.join(".s.PGSQL.65535");
        let sockets = if socket.as_os_str().len() < 100 {
            quote_conf(&self.data.to_string_lossy())
        } else {
            "''".into()
        };
        conf.push_str(&format!("unix_socket_directories = {sockets}\n"));
        // Listen where the target's URL says the server is (the source's own setting
        // may name an address of another machine).
        if let Some(host) = self.component.conn()?.host() {
            conf.push_str(&format!("listen_addresses = {}\n", quote_conf(&host)));
        }
        match target {
            RecoveryTarget::Immediate => conf.push_str("recovery_target = 'immediate'\n"),
            RecoveryTarget::Latest => {}
            RecoveryTarget::Time(t) => {
                conf.push_str(&format!("recovery_target_time = {}\n", quote_conf(t)))
            }
            RecoveryTarget::Lsn(l) => conf.push_str(&format!("recovery_target_lsn = '{l}'\n")),
            RecoveryTarget::Name(n) => {
                conf.push_str(&format!("recovery_target_name = {}\n", quote_conf(n)))
            }
        }
        let auto = self.data.join("postgresql.auto.conf");
        fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&auto)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| SourceError::io(format!("writing {}", auto.display()), e))?;
        let signal = self.data.join("recovery.signal");
        fs::write(&signal, b"")
            .map_err(|e| SourceError::io(format!("writing {}", signal.display()), e))?;
        if let Some((uid, gid)) = &self.run_as {
            for f in [&auto, &signal] {
                std::os::unix::fs::chown(f, Some(*uid), Some(*gid)).map_err(|e| {
                    SourceError::io(format!("giving {} to postgres", f.display()), e)
                })?;
            }
        }
        Ok(())
    }

    fn log(&self) -> PathBuf {
        self.data.join("haven-restore.log")
    }

    fn start(&self) -> Result<()> {
        let what = format!("starting PostgreSQL on {}", self.data.display());
        let mut cmd = self.as_server(self.component.tool("pg_ctl")?, &what);
        // Not -w: a server in archive recovery accepts no connection until it is
        // consistent; readiness is polled below, with the log read on failure.
        cmd.args(["start", "-s", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.log())
            .current_dir("/")
            .leaves_session();
        cmd.run().map_err(|e| self.with_log(e))?;
        Ok(())
    }

    /// Poll until the server is out of recovery; a server that stops (a target it could
    /// not reach, a missing WAL file) fails with the lines its log gives.
    fn wait_promoted(&self, target: &RecoveryTarget) -> Result<Recovered> {
        // The target's URL names where the restored server listens.
        let conn = self.component.conn()?;
        let deadline = self
            .component
            .limits()
            .remaining()
            .map(|left| Instant::now() + left);
        let mut delay = Duration::from_millis(20);
        loop {
            if let Some(fatal) = self.fatal_in_log() {
                return Err(SourceError::failed(
                    format!("recovery to {target}"),
                    format!("the server stopped: {fatal}"),
                ));
            }
            let answer = self.component.session(&conn).and_then(|mut s| {
                let rows = s.query(
                    "SELECT pg_is_in_recovery(), pg_current_wal_lsn(), \
                     (SELECT timeline_id FROM pg_control_checkpoint());",
                );
                let _ = s.close();
                rows
            });
            if let Ok(rows) = answer {
                let fields: Vec<&str> = rows
                    .first()
                    .map(|l| l.split('|').collect())
                    .unwrap_or_default();
                if let ["f", lsn, tli] = fields[..] {
                    return Ok(Recovered {
                        lsn: lsn.parse().map_err(|e: String| {
                            SourceError::failed("reading the restored server's position", e)
                        })?,
                        timeline: tli.parse().unwrap_or(0),
                        stopped: self.stop_line(),
                        checked: vec![format!(
                            "the server reached {target}, promoted and accepts connections"
                        )],
                    });
                }
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(self.with_log(SourceError::failed(
                    format!("recovery to {target}"),
                    "the server was still in recovery at the deadline; raise the component's \
                     `timeout` (it may still be replaying: its log says how far it got)",
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn fatal_in_log(&self) -> Option<String> {
        let text = self.log_text();
        let fatal: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
            .collect();
        if fatal.is_empty() {
            return None;
        }
        // The server is gone once it logs "database system is shut down".
        let down = text.contains("database system is shut down")
            || !self.data.join("postmaster.pid").exists();
        down.then(|| fatal.join("; "))
    }

    fn stop_line(&self) -> Option<String> {
        let text = self.log_text();
        text.lines()
            .rev()
            .find(|l| {
                l.contains("recovery stopping")
                    || l.contains("last completed transaction was at log time")
                    || l.contains("redo done at")
            })
            .map(|l| {
                l.split_once("LOG:")
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_string()
            })
    }

    fn with_log(&self, e: SourceError) -> SourceError {
        let text = self.log_text();
        if text.is_empty() {
            return e;
        }
        SourceError::failed(
            e.to_string(),
            format!(
                "server log {}: {}",
                self.log().display(),
                crate::process::stderr_tail(text.as_bytes())
            ),
        )
    }
}

/// Give a restored tree to the server's user.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(|e| SourceError::io(format!("giving {} to postgres", p.display()), e))
    };
    chown(dir)?;
    let entries =
        fs::read_dir(dir).map_err(|e| SourceError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SourceError::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&path, uid, gid)?;
        } else {
            chown(&path)?;
        }
    }
    Ok(())
}
