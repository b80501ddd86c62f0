//! A throwaway `redis-server`: its own directory, a free loopback port, no persistence,
//! a password, killed and removed on drop.
//!
//! Used to load a backed-up RDB (for the backup's fingerprint and as the source of a
//! restore), as the scratch target of `tenant verify`, and by tests and the demo.
//!
//! ```text
//! RedisServer::start(dir)              empty server
//! RedisServer::start_with_password(..) with `requirepass`
//! RedisServer::start_with_rdb(dir, f)  loads the RDB file f (linked or copied into dir)
//! RedisServer::start_with(dir, &opts)  any of the above, plus extra config lines
//! ```
//! The server gets a config file `dir/redis.conf` (mode 0600, so the password appears
//! neither in `ps` nor to other users): `bind 127.0.0.1`, `save ""`, `appendonly no`,
//! `daemonize no`, `databases 256` (so an RDB using databases beyond the default 16
//! loads), `requirepass` with the given password or else a random one (it holds a
//! tenant's whole dataset: another local user must not read it), and `CONFIG` renamed
//! away, so not even a client with the password can change `dir` or `dbfilename` and
//! make the server write files elsewhere. Its log goes to `dir/redis.log`; a
//! server that exits while starting is reported with the end of that log. Readiness is
//! polled with `PING` (a server still loading its RDB answers `LOADING` and is waited
//! for). `dir` must belong to the server alone: it is deleted on drop.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::process::{self, secrets::random_token, wait_until, Running, Tool};
use crate::redis::resp::{Connection, RedisUrl, Reply};
use crate::{Result, SourceError};

/// What `apt-get` package provides `redis-server`.
pub const INSTALL_HINT: &str = "install redis-server (Debian/Ubuntu: apt-get install redis-server)";

/// The number of databases a throwaway server has.
pub const DATABASES: u32 = 256;

/// How to start a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerOptions {
    /// `requirepass`: clients must `AUTH` with it (it is also in [`RedisServer::url`]).
    /// Default: a random one.
    pub password: Option<String>,
    /// An RDB file to load at start; it is hard-linked (or copied) into the directory and
    /// left unchanged.
    pub rdb: Option<PathBuf>,
    /// Extra config lines, e.g. `("repl-diskless-sync", "yes")`; values are quoted.
    pub config: Vec<(String, String)>,
    /// The program to run; `redis-server` from the PATH when `None`.
    pub program: Option<PathBuf>,
}

/// A running throwaway `redis-server`; dropping it kills it and deletes its directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Running,
    dir: PathBuf,
    port: u16,
    password: String,
}

impl RedisServer {
    /// An empty server with its data in `dir` (created; deleted on drop), with a random
    /// password (in [`RedisServer::url`]).
    pub fn start(dir: &Path) -> Result<RedisServer> {
        Self::start_with(dir, &RedisServerOptions::default())
    }

    /// An empty server that requires `password`.
    pub fn start_with_password(dir: &Path, password: &str) -> Result<RedisServer> {
        Self::start_with(
            dir,
            &RedisServerOptions {
                password: Some(password.to_string()),
                ..Default::default()
            },
        )
    }

    /// A server serving the data of the RDB file `rdb`, once it has loaded it. Keys whose
    /// expiry time has passed are not loaded (as Redis does for any RDB).
    pub fn start_with_rdb(dir: &Path, rdb: &Path) -> Result<RedisServer> {
        Self::start_with(
            dir,
            &RedisServerOptions {
                rdb: Some(rdb.to_path_buf()),
                ..Default::default()
            },
        )
    }

    pub fn start_with(dir: &Path, opts: &RedisServerOptions) -> Result<RedisServer> {
        fs::create_dir_all(dir)
            .map_err(|e| SourceError::io(format!("creating {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| SourceError::io(format!("resolving {}", dir.display()), e))?;
        let mut rdb_size = 0;
        if let Some(rdb) = &opts.rdb {
            let dest = dir.join("dump.rdb");
            let _ = fs::remove_file(&dest);
            if fs::hard_link(rdb, &dest).is_err() {
                fs::copy(rdb, &dest).map_err(|e| {
                    SourceError::io(
                        format!("copying {} into {}", rdb.display(), dir.display()),
                        e,
                    )
                })?;
            }
            rdb_size = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        }
        // Loading runs at some hundreds of MB/s; leave ample room for a slow disk.
        let timeout = Duration::from_secs(30 + rdb_size / (20 << 20));
        let password = match &opts.password {
            Some(p) => p.clone(),
            None => random_token(24)?,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = process::free_port()?;
            match Self::spawn(&dir, port, &password, opts, timeout) {
                Ok(server) => return Ok(server),
                // Another process took the port between free_port and the bind: try another.
                Err(Spawn::PortTaken) if attempt < 5 => continue,
                Err(Spawn::PortTaken) => {
                    return Err(SourceError::failed(
                        "starting redis-server",
                        "no free loopback port found after 5 attempts",
                    ))
                }
                Err(Spawn::Failed(e)) => return Err(e),
            }
        }
    }

    fn spawn(
        dir: &Path,
        port: u16,
        password: &str,
        opts: &RedisServerOptions,
        timeout: Duration,
    ) -> Result<RedisServer, Spawn> {
        let mut conf = vec![
            ("port".to_string(), port.to_string()),
            ("bind".into(), "127.0.0.1".into()),
            ("dir".into(), dir.to_string_lossy().into_owned()),
            ("dbfilename".into(), "dump.rdb".into()),
            ("save".into(), String::new()),
            ("appendonly".into(), "no".into()),
            ("daemonize".into(), "no".into()),
            ("databases".into(), DATABASES.to_string()),
            ("logfile".into(), String::new()),
            ("requirepass".into(), password.to_string()),
        ];
        conf.extend(opts.config.iter().cloned());
        let mut text: String = conf
            .iter()
            .map(|(k, v)| format!("{k} {}\n", quote(v)))
            .collect();
        text.push_str("rename-command CONFIG \"\"\n");
        let conf_path = dir.join("redis.conf");
        let log_path = dir.join("redis.log");
        let io = |what: &str, e| {
            Spawn::Failed(SourceError::io(format!("{what} in {}", dir.display()), e))
        };
        write_private(&conf_path, text.as_bytes()).map_err(|e| io("writing redis.conf", e))?;
        let log = fs::File::create(&log_path).map_err(|e| io("creating redis.log", e))?;
        let log2 = log.try_clone().map_err(|e| io("opening redis.log", e))?;
        let program = opts
            .program
            .clone()
            .unwrap_or_else(|| "redis-server".into());
        let child = Tool::new(&program, "redis-server", INSTALL_HINT)
            .arg(&conf_path)
            .current_dir(dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(Spawn::Failed)?;
        let mut server = RedisServer {
            child,
            dir: dir.to_path_buf(),
            port,
            password: password.to_string(),
        };
        let url = server.redis_url();
        let mut exited = None;
        let what = format!("{} on 127.0.0.1:{port}", program.display());
        let waited = wait_until(&what, timeout, || {
            if let Ok(Some(status)) = server.child.has_exited() {
                exited = Some(status);
                return Ok(true);
            }
            let mut conn = match Connection::connect(&url) {
                Ok(conn) => conn,
                Err(SourceError::Unreachable { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            match conn.call_str(&["PING"]) {
                Ok(Reply::Status(s)) if s == "PONG" => Ok(true),
                Ok(_) => Ok(false),
                Err(e) if e.to_string().contains("LOADING") => Ok(false),
                Err(e) => Err(e),
            }
        });
        if let Some(status) = exited {
            let log = fs::read(&log_path).unwrap_or_default();
            if String::from_utf8_lossy(&log).contains("Address already in use") {
                return Err(Spawn::PortTaken);
            }
            // Drop removes the directory; keep the log's end in the error.
            return Err(Spawn::Failed(SourceError::failed(
                what,
                format!("exited while starting ({status}): {}", log_summary(&log)),
            )));
        }
        waited.map_err(Spawn::Failed)?;
        Ok(server)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://:password@127.0.0.1:<port>`, password included: for a component config.
    pub fn url(&self) -> String {
        self.redis_url().to_url()
    }

    pub fn redis_url(&self) -> RedisUrl {
        RedisUrl {
            host: "127.0.0.1".into(),
            port: self.port,
            username: None,
            password: Some(self.password.clone()),
        }
    }

    /// The password clients must give.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A new connection to it, logged in.
    pub fn connect(&self) -> Result<Connection> {
        Connection::connect(&self.redis_url())
    }

    /// Its directory (data, `redis.conf`, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

enum Spawn {
    PortTaken,
    Failed(SourceError),
}

/// The lines of a redis-server log that say why it stopped: its warnings (`#` level) minus
/// the start-up banner, and the RDB checker's finding.
fn log_summary(log: &[u8]) -> String {
    const NOISE: [&str; 5] = [
        "oO0OoO0OoO0Oo",
        "Redis version=",
        "Configuration loaded",
        "Server initialized",
        "WARNING",
    ];
    let text = String::from_utf8_lossy(log);
    let mut found = vec![];
    let mut after_check = false;
    for line in text.lines().map(str::trim) {
        if after_check {
            found.push(line);
            after_check = false;
        } else if line.contains("RDB ERROR DETECTED") {
            after_check = true;
        } else if let Some((_, message)) = line.split_once(" # ") {
            if !NOISE.iter().any(|n| message.starts_with(n)) {
                found.push(message);
            }
        }
    }
    if found.is_empty() {
        return process::stderr_tail(log);
    }
    found[found.len().saturating_sub(3)..].join("; ")
}

/// Write a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// A config value in double quotes, escaped as redis.conf's parser expects.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for b in value.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_quoted_for_redis_conf() {
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a \"b\"\\c\n"), "\"a \\\"b\\\"\\\\c\\x0a\"");
    }

    #[test]
    fn the_log_summary_keeps_the_reason_and_drops_the_banner() {
        let log = b"1:C 21 Nov 2026 20:34:30.520 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo
1:M 21 Nov 2026 20:34:30.521 # Server initialized
1:M 21 Nov 2026 20:34:30.521 # WARNING Memory overcommit must be enabled!
1:M 21 Nov 2026 20:34:30.521 * Loading RDB produced by version 7.0.15
1:M 21 Nov 2026 20:34:30.521 # Short read or OOM loading DB. Unrecoverable error, aborting now.
[offset 0] Checking RDB file tr.rdb
--- RDB ERROR DETECTED ---
[offset 164] Unexpected EOF reading RDB file
[info] 0 keys read
";
        assert_eq!(
            log_summary(log),
            "Short read or OOM loading DB. Unrecoverable error, aborting now.; [offset 164] Unexpected EOF reading RDB file"
        );
        assert_eq!(log_summary(b"just this\n"), "just this");
    }

    #[test]
    fn a_missing_redis_server_is_a_missing_tool() {
        let dir = tempfile::tempdir().unwrap();
        let err = RedisServer::start_with(
            &dir.path().join("r"),
            &RedisServerOptions {
                program: Some("haven-no-such-redis-server".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::MissingTool { .. }), "{err}");
        assert!(err.to_string().contains("install redis-server"), "{err}");
    }
}
