//! A throwaway PostgreSQL server ([`PostgresServer`]): `initdb` into its own directory,
//! `pg_ctl start` on a free loopback port with its unix socket inside that directory,
//! `pg_ctl stop -m immediate` and removal of the directory on drop. Used by the tests, by
//! the ops layer's tests and by the README demo.
//!
//! Approach: the binaries come from the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! layout), else from the PATH ([`find_bin_dir`]). PostgreSQL refuses to run as root, so
//! when we are root, `initdb` and `pg_ctl` run as the `postgres` system user through
//! `runuser`; the server's directory is then owned by that user, and every ancestor
//! directory that others may not traverse gets the traverse bit (`o+x`, not read) so the
//! server can reach its files.
//!
//! Limits: the server is made for tests, not for data that matters: `fsync`,
//! `full_page_writes` and `synchronous_commit` are off, the superuser is `postgres` and
//! authentication is `trust` unless [`PostgresServer::start_with_password`] is used (then
//! TCP connections need the password; the unix socket stays `trust`). Readiness is
//! `pg_ctl start -w` (which polls the server) and, after a port clash at start, the start
//! is retried on another port.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::postgres::{encode_userinfo, NOT_INSTALLED_HINT};
use crate::process::{self, Tool};
use crate::{Result, SourceError};

/// The superuser of a throwaway server.
pub const SUPERUSER: &str = "postgres";

/// The directory of the PostgreSQL server binaries: the newest
/// `/usr/lib/postgresql/<version>/bin` holding `initdb`, else the PATH directory holding
/// `initdb`. `None` when the server is not installed.
pub fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|dir| dir.join("initdb").is_file())
}

/// A running throwaway PostgreSQL server; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    password: Option<String>,
    /// `runuser` as the `postgres` system user (when we are root).
    run_as: Option<String>,
}

impl PostgresServer {
    /// Start a server whose files live in `dir` (created; removed on drop), `trust`
    /// authentication for everyone connecting from this machine.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::launch(dir, None)
    }

    /// Like [`start`](Self::start), but TCP connections must authenticate as `postgres`
    /// with `password` (scram-sha-256): for tests of wrong credentials.
    pub fn start_with_password(dir: &Path, password: &str) -> Result<Self> {
        Self::launch(dir, Some(password.to_string()))
    }

    fn launch(dir: &Path, password: Option<String>) -> Result<Self> {
        let bin = find_bin_dir().ok_or_else(|| SourceError::MissingTool {
            tool: "initdb".into(),
            hint: "install the PostgreSQL server (Debian: apt-get install postgresql)".into(),
        })?;
        fs::create_dir_all(dir)
            .map_err(|e| SourceError::io(format!("creating {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| SourceError::io(format!("resolving {}", dir.display()), e))?;
        let run_as = if running_as_root() {
            let (uid, gid) = system_user(SUPERUSER)?;
            open_ancestors(&dir)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| {
                SourceError::io(format!("giving {} to the postgres user", dir.display()), e)
            })?;
            Some(SUPERUSER.to_string())
        } else {
            None
        };
        let mut server = PostgresServer {
            data: dir.join("data"),
            dir,
            bin,
            port: 0,
            password,
            run_as,
        };
        server.initdb()?;
        server.start_on_free_port()?;
        Ok(server)
    }

    /// A server-side command, run as the `postgres` user when we are root.
    fn server_command(&self, tool: &str, what: &str) -> Tool {
        run_as(self.run_as.as_deref(), self.bin.join(tool), what)
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_command("initdb", "initdb of a throwaway PostgreSQL server");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale", "--no-sync"])
            .current_dir(&self.dir);
        let pwfile = self.dir.join("pwfile");
        match &self.password {
            Some(password) => {
                write_file(&pwfile, password.as_bytes())?;
                if let Some(user) = &self.run_as {
                    let (uid, gid) = system_user(user)?;
                    std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                        .map_err(|e| SourceError::io("giving the password file to postgres", e))?;
                }
                cmd.args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--pwfile",
                ])
                .arg(&pwfile);
            }
            None => {
                cmd.args(["--auth=trust"]);
            }
        }
        let result = cmd.run();
        let _ = fs::remove_file(&pwfile);
        result?;
        // The unix socket path must fit in sun_path (107 bytes); without room, TCP only.
        let socket_dir = self.dir.join("sock");
        let sockets = if socket_dir.as_os_str().len() + "/.s.PGSQL.65535".len() < 100 {
            self.mkdir_for_server(&socket_dir)?;
            quote_conf(&socket_dir.to_string_lossy())
        } else {
            "''".to_string()
        };
        let conf = format!(
            "\n# haven throwaway server\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {sockets}\n\
             fsync = off\nfull_page_writes = off\nsynchronous_commit = off\nshared_buffers = 32MB\n\
             max_connections = 40\nmax_wal_size = 1GB\n"
        );
        fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| SourceError::io("configuring the throwaway PostgreSQL server", e))
    }

    fn mkdir_for_server(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path)
            .map_err(|e| SourceError::io(format!("creating {}", path.display()), e))?;
        if let Some(user) = &self.run_as {
            let (uid, gid) = system_user(user)?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                SourceError::io(format!("giving {} to postgres", path.display()), e)
            })?;
        }
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let log = self.dir.join("server.log");
        let mut last = None;
        for _ in 0..5 {
            self.port = process::free_port()?;
            let mut cmd = self.server_command("pg_ctl", "starting a throwaway PostgreSQL server");
            cmd.args(["start", "-w", "-s", "-t", "60", "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!("-p {}", self.port))
                .current_dir(&self.dir);
            match cmd.run() {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    if !text.contains("could not bind") && !text.contains("already in use") {
                        let tail = process::stderr_tail(text.as_bytes());
                        self.port = 0;
                        return Err(SourceError::failed(
                            "starting a throwaway PostgreSQL server",
                            format!("{e}; server log: {tail}"),
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        self.port = 0;
        Err(last.expect("at least one attempt"))
    }

    /// Append `conf` to the server's postgresql.conf and restart it (same port): for
    /// settings that need a restart (`archive_mode`, `shared_preload_libraries`).
    pub fn reconfigure(&self, conf: &str) -> Result<()> {
        fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(format!("\n{conf}\n").as_bytes()))
            .map_err(|e| SourceError::io("configuring the throwaway PostgreSQL server", e))?;
        let log = self.dir.join("server.log");
        let mut cmd = self.server_command("pg_ctl", "restarting a throwaway PostgreSQL server");
        cmd.args(["restart", "-w", "-s", "-t", "60", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .current_dir(&self.dir);
        cmd.run().map(|_| ())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The server's directory (data directory, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the PostgreSQL binaries this server runs (client tools included:
    /// psql, pg_dump, pg_restore, pgbench).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The superuser's password, when started with one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URL of database `db` as the superuser (with the password, if any).
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, self.password.as_deref(), db)
    }

    /// The URL of database `db` as `user` with `password`.
    pub fn url_as(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let userinfo = match password {
            Some(p) => format!("{}:{}", encode_userinfo(user), encode_userinfo(p)),
            None => encode_userinfo(user),
        };
        format!(
            "postgresql://{userinfo}@{}:{}/{}",
            self.host(),
            self.port,
            encode_userinfo(db)
        )
    }

    /// Run SQL (one or more statements) in database `db` as the superuser, stopping at
    /// the first error; returns what psql printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let url = self.url_as(SUPERUSER, None, db);
        let mut cmd = Tool::new(
            self.bin.join("psql"),
            format!("psql on database {db} of the throwaway server"),
            NOT_INSTALLED_HINT,
        );
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &url])
            .env("PGCLIENTENCODING", "UTF8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        let mut child = cmd.spawn()?;
        let mut stdin = child.take_stdin().expect("piped stdin");
        let sql = sql.to_string();
        // Written from another thread so a large result cannot block the input.
        let writer = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
        let mut stdout = vec![];
        let read = child
            .take_stdout()
            .expect("piped stdout")
            .read_to_end(&mut stdout);
        let exit = child.wait()?;
        let _ = writer.join();
        exit.into_result()?;
        read.map_err(|e| SourceError::io("reading the output of psql", e))?;
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Create an empty database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};", crate::postgres::quote_ident(name)),
        )
        .map(|_| ())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let mut cmd = self.server_command("pg_ctl", "stopping a throwaway PostgreSQL server");
            cmd.args(["stop", "-w", "-s", "-m", "immediate", "-D"])
                .arg(&self.data)
                .current_dir("/");
            if let Err(e) = cmd.run() {
                eprintln!("haven: warning: {e}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| SourceError::io(format!("writing {}", path.display()), e))
}

/// A value in postgresql.conf quotes.
pub(crate) fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// `program` run as `user` (through `runuser`) when given, else as we are.
pub(crate) fn run_as(user: Option<&str>, program: impl AsRef<std::ffi::OsStr>, what: &str) -> Tool {
    let hint = "install the PostgreSQL server (Debian: apt-get install postgresql)";
    match user {
        Some(user) => {
            let mut cmd = Tool::new("runuser", what, hint);
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Tool::new(program, what, hint),
    }
}

/// The uid and gid a PostgreSQL server must run as: the `postgres` user's when we are
/// root (PostgreSQL refuses root), `None` (ourselves) otherwise.
pub(crate) fn server_user() -> Result<Option<(u32, u32)>> {
    if running_as_root() {
        system_user(SUPERUSER).map(Some)
    } else {
        Ok(None)
    }
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
pub(crate) fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of a system user, from /etc/passwd.
pub(crate) fn system_user(name: &str) -> Result<(u32, u32)> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| SourceError::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .ok_or_else(|| {
            SourceError::Unsupported(format!(
                "PostgreSQL refuses to run as root and there is no `{name}` system user to run it as; \
                 create one (the Debian postgresql package does) or run as another user"
            ))
        })
}

/// Give every ancestor of `dir` the traverse bit for others, so the postgres user can
/// reach its directory (temporary directories are often 0700).
pub(crate) fn open_ancestors(dir: &Path) -> Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)
            .map_err(|e| SourceError::io(format!("reading {}", ancestor.display()), e))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            fs::set_permissions(ancestor, fs::Permissions::from_mode(mode | 0o001)).map_err(
                |e| {
                    SourceError::io(
                        format!("letting postgres traverse {}", ancestor.display()),
                        e,
                    )
                },
            )?;
        }
    }
    Ok(())
}
