//! `postgres`: one PostgreSQL database, backed up logically with `pg_dump` and restored
//! with `pg_restore`, with a fingerprint read from the dump itself.
//!
//! Approach: the PostgreSQL client tools run as subprocesses, so URLs, `PGPASSWORD`,
//! `~/.pgpass` and unix sockets behave exactly as with libpq anywhere else. A password
//! in the URL is passed to them as `PGPASSWORD`, never on a command line.
//!
//! Backup data flow:
//! ```text
//! psql: SELECT 1 (a wrong address or password is named before anything streams)
//! pg_dump -Fc -Z0 ──custom-format stream──> tee ──> sink (the repository)
//!                                            └──copy──> archive reader (another thread):
//!                                               per table: rows, sum(hash(row text))
//! ```
//! The dump is uncompressed (`-Z0`) because the repository compresses and deduplicates
//! across days. The fingerprint (`archive`) is computed from the rows pg_dump writes,
//! so it describes exactly the dumped snapshot and costs the server nothing: each table
//! whose data is dumped becomes the fact `table <schema>.<name>` = `rows=N sum=S`, where
//! S is the sum of a 64-bit hash of each row's COPY text (independent of row order), and
//! large objects one more fact. Validation after a restore ([`StreamComponent::fingerprint`])
//! reads a `pg_dump --data-only` of the target the same way. pg_dump pins date, interval
//! and float output; the time zone (`PGTZ=UTC`) and bytea and money output (`PGOPTIONS`)
//! are pinned here, so a restored copy on a server with other defaults gives the same
//! sums.
//!
//! Restore into the database named in `self`'s URL: created (from `template0`) when
//! missing, refused when it holds tables, views or sequences unless `force` (then dropped
//! with `WITH (FORCE)` and recreated). With `jobs` > 1 the stream is written to a file in
//! `work` (before anything is dropped) and restored with `pg_restore -j`; a dump written
//! to a pipe has no data offsets in its table of contents, so they are set in the file
//! (`archive`) and each worker seeks to its table's data instead of reading through the
//! file for it. With `jobs` = 1 the stream goes straight into `pg_restore`'s stdin, so
//! `work` needs no room for it, but a forced target is dropped first. Any
//! error stops `pg_restore` (`--exit-on-error`) and fails the restore. Owners and privileges
//! are not restored unless `keep-owners` (roles are not part of a database dump, so on
//! another server they may not exist); objects then belong to the restoring user.
//!
//! Limits: the fingerprint covers table rows and large objects, not the schema
//! (indexes, functions, views' definitions) or sequence positions; all of these are in the
//! dump and restored. Row text forms, and thus the sums, are only comparable between
//! servers of the same major version; an `options` parameter in the URL replaces the
//! pinned `PGOPTIONS`. The fingerprint reads archive versions 1.12 to 1.16 (pg_dump up to
//! 18); a newer pg_dump fails the backup with a message saying so. Validation reads the
//! whole restored database once more (its `pg_dump`). Roles and other cluster-wide
//! objects are not backed up (that is `pg_dumpall --globals-only`). The restore target
//! must be reachable with a role that may create and drop databases. A failed restore
//! leaves the partly restored database in place (for inspection; the next restore into
//! it needs `force`).
//!
//! Files: this one (the component), `archive` (the fingerprint of a custom-format
//! archive), `conninfo` (connection strings and SQL quoting), `session` (driving psql,
//! reading the tools' output and errors).

mod archive;
mod conninfo;
pub mod physical;
mod session;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::process::{Limits, Running, Span, Tool};
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
};
pub(crate) use conninfo::{encode_userinfo, quote_ident};
use conninfo::{quote_literal, ConnInfo};
use session::{classify, drain, Session};

/// Wait for a client tool; a timeout is reported as such, a failed exit becomes an error
/// naming `what` with the end of its stderr (classified: unreachable server, refused
/// credentials, ...).
fn finish_child(mut child: Running, what: &str, conn: &ConnInfo) -> Result<()> {
    let exit = child.wait()?;
    if let Some(e) = exit.timeout_error() {
        return Err(e);
    }
    if exit.success() {
        return Ok(());
    }
    Err(classify(what, conn, exit.detail()))
}

/// How long each client tool may run when the config gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What to do when a PostgreSQL client tool is missing.
pub(crate) const NOT_INSTALLED_HINT: &str =
    "install the PostgreSQL client tools (Debian: apt-get install postgresql-client), \
     or set `bin-dir` to the directory holding them (e.g. /usr/lib/postgresql/15/bin)";

/// The `[tenants.T.components.C]` keys of `kind = "postgres"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConfig {
    /// The database, as a libpq URL (`postgresql://user[:password]@host:port/dbname`) or
    /// key=value conninfo (`host=... dbname=...`). Without a password in it, libpq's own
    /// sources apply (`PGPASSWORD`, `~/.pgpass`). As a restore target, the database it
    /// names is created when missing.
    pub url: String,
    /// Parallel jobs of `pg_restore` when restoring into this database (default: the
    /// number of CPUs; 1 streams the dump without a temporary file).
    #[serde(default)]
    pub jobs: Option<usize>,
    /// The directory of `psql`, `pg_dump` and `pg_restore` (e.g.
    /// `/usr/lib/postgresql/16/bin`, to match a newer server); default: the PATH.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// When restoring into this database, also restore object owners and privileges
    /// (GRANTs); the roles must already exist here. Default false: objects belong to the
    /// restoring user.
    #[serde(default)]
    pub keep_owners: bool,
    /// How long each client tool (`pg_dump`, `pg_restore`, `psql`) may run before it is
    /// stopped (default [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout: Option<Span>,
    /// `logical` (the default): `pg_dump` of the database in `url`. `physical`: base
    /// backups of the whole cluster plus its archived WAL, restorable to any moment
    /// (`physical::RecoveryTarget`).
    #[serde(default)]
    pub mode: PostgresMode,
    /// How WAL reaches the repository in physical mode: `archive` (the server's
    /// `archive_command` runs `haven wal push`) or `stream` (Haven's receiver on a
    /// replication slot: `haven wal receive`, or `haven serve`).
    #[serde(default)]
    pub wal: WalMode,
    /// `wal = "stream"`: flush what is received at once and report it flushed, so that
    /// the server can count the receiver as a synchronous standby (its application name
    /// is the slot's name; list it in `synchronous_standby_names`).
    #[serde(default)]
    pub synchronous: bool,
    /// `wal = "stream"`: the replication slot (default `haven_<tenant>_<component>`).
    #[serde(default)]
    pub slot: Option<String>,
    /// `wal = "stream"`: the most WAL the slot may hold back on the server (e.g.
    /// `10GB`, the default). Past 80 % an alert is raised; past it the slot is dropped
    /// (the server frees its WAL, the archive gets a gap the next base backup closes)
    /// rather than let it fill the server's disk.
    #[serde(default)]
    pub slot_max_lag: Option<String>,
    /// As a physical restore target: the data directory the restore creates and starts
    /// a server on (listening on the port of `url`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How base backups are taken in physical mode: `auto` (the default: the data
    /// directory's files when Haven can read them on this machine, else
    /// `pg_basebackup`), `files` or `stream` (`pg_basebackup`).
    #[serde(default)]
    pub base_backup: physical::BaseMethod,
}

/// How a PostgreSQL component is backed up.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresMode {
    #[default]
    Logical,
    Physical,
}

/// How WAL reaches the repository in physical mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WalMode {
    /// `archive_command = 'haven wal push ... %p'` on the server.
    #[default]
    Archive,
    /// Haven receives WAL over the replication protocol through a slot.
    Stream,
}

#[derive(Debug, Clone)]
pub struct PostgresComponent {
    pub config: PostgresConfig,
    deadline: Option<Instant>,
}

impl PostgresComponent {
    pub fn new(config: PostgresConfig) -> Self {
        PostgresComponent {
            config,
            deadline: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits::timeout(self.config.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0)).until(self.deadline)
    }

    fn conn(&self) -> Result<ConnInfo> {
        ConnInfo::parse(&self.config.url)
    }

    /// The path of a client tool, checked to exist (so a missing tool is named before
    /// anything starts).
    fn tool(&self, name: &str) -> Result<PathBuf> {
        match &self.config.bin_dir {
            Some(dir) => {
                let path = dir.join(name);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(SourceError::MissingTool {
                        tool: name.into(),
                        hint: format!(
                            "`bin-dir` ({}) has no {name}; point it at the PostgreSQL client tools \
                             (e.g. /usr/lib/postgresql/15/bin), or install postgresql-client and remove it",
                            dir.display()
                        ),
                    })
                }
            }
            // The PATH, then the server's own directory (Debian puts pg_ctl, pg_waldump
            // and pg_verifybackup only there).
            None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain(crate::servers::postgres::find_bin_dir())
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| SourceError::MissingTool {
                    tool: name.into(),
                    hint: NOT_INSTALLED_HINT.into(),
                }),
        }
    }

    /// A client tool with the password (if the URL has one) in its environment, libpq's
    /// own `PG*` variables, and no other secret.
    fn command(&self, tool: &Path, conn: &ConnInfo, what: &str) -> Tool {
        let mut cmd = Tool::new(tool, what, NOT_INSTALLED_HINT);
        cmd.pass_env("PG").limits(self.limits());
        if let Some(password) = &conn.password {
            cmd.env("PGPASSWORD", password);
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "10");
        }
        if std::env::var_os("PGAPPNAME").is_none() {
            cmd.env("PGAPPNAME", "haven");
        }
        cmd.env("PGCLIENTENCODING", "UTF8");
        cmd
    }

    fn session(&self, conn: &ConnInfo) -> Result<Session> {
        let psql = self.tool("psql")?;
        let what = format!("psql on {}", conn.render(false));
        Session::open(self.command(&psql, conn, &what), conn)
    }

    fn jobs(&self) -> usize {
        self.config
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// Look at the restore target without changing it: refused here when it holds data
    /// and `force` was not given.
    fn inspect_target(&self, conn: &ConnInfo, opts: &RestoreOptions) -> Result<Target> {
        let db = conn.dbname().ok_or_else(|| {
            SourceError::Unsupported(format!(
                "the restore target {} names no database; add it to the url (postgresql://host/dbname)",
                conn.render(false)
            ))
        })?;
        let maintenance = conn.with_dbname(if db == "postgres" {
            "template1"
        } else {
            "postgres"
        });
        let mut admin = self.session(&maintenance)?;
        let exists = admin.query(&format!(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_database WHERE datname = {};",
            quote_literal(&db)
        ))? == ["1"];
        admin.close()?;
        let mut occupied = false;
        if exists {
            let mut target = self.session(conn)?;
            let relations = target.query(USER_RELATIONS_SQL)?;
            target.close()?;
            let relations: u64 = relations.first().and_then(|n| n.parse().ok()).unwrap_or(0);
            if relations > 0 && !opts.force {
                return Err(SourceError::TargetNotEmpty {
                    target: conn.render(false),
                    detail: format!(
                        "database {db} holds {relations} relations: tables, views or sequences"
                    ),
                });
            }
            occupied = relations > 0;
        }
        Ok(Target {
            db,
            maintenance,
            exists,
            occupied,
        })
    }

    /// Create the target database, or (forced) drop and recreate an occupied one.
    fn make_target(&self, target: &Target) -> Result<()> {
        if target.exists && !target.occupied {
            return Ok(());
        }
        let mut admin = self.session(&target.maintenance)?;
        if target.occupied {
            admin.query(&format!(
                "DROP DATABASE {} WITH (FORCE);",
                quote_ident(&target.db)
            ))?;
        }
        admin.query(&format!(
            "CREATE DATABASE {} TEMPLATE template0;",
            quote_ident(&target.db)
        ))?;
        admin.close()
    }

    /// `pg_dump` writing an uncompressed custom-format archive of `conn` to stdout. pg_dump
    /// pins the date, interval and float output itself; the time zone and the bytea and
    /// money output are pinned here (`PGTZ`, `PGOPTIONS`), so that a restored copy on a
    /// server with other defaults dumps the same row text, and thus the same fingerprint.
    fn dump_command(&self, pg_dump: &Path, conn: &ConnInfo, what: &str) -> Tool {
        let mut cmd = self.command(pg_dump, conn, what);
        let mut options = std::env::var("PGOPTIONS").unwrap_or_default();
        options.push_str(" -c bytea_output=hex -c lc_monetary=C");
        cmd.env("PGTZ", "UTC")
            .env("PGOPTIONS", options.trim_start())
            .args(["-Fc", "-Z0", "-d", &conn.render(false)]);
        cmd
    }

    fn pg_restore_args(&self, conn: &ConnInfo) -> Vec<String> {
        let mut args = vec!["--exit-on-error".to_string()];
        if !self.config.keep_owners {
            args.extend(["--no-owner".to_string(), "--no-privileges".to_string()]);
        }
        args.extend(["-d".to_string(), conn.render(false)]);
        args
    }
}

impl StreamComponent for PostgresComponent {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        match self.conn() {
            Ok(conn) => conn.render(false),
            Err(_) => "postgres (an invalid url)".into(),
        }
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn stream_name(&self) -> &'static str {
        match self.config.mode {
            PostgresMode::Logical => "dump.pgcustom",
            PostgresMode::Physical => physical::BASE_STREAM,
        }
    }

    fn backup(&self, sink: &mut Sink<'_>, _work: &Path) -> Result<Fingerprint> {
        if self.config.mode == PostgresMode::Physical {
            return self.base_backup(sink);
        }
        let conn = self.conn()?;
        let pg_dump = self.tool("pg_dump")?;
        // A wrong address or password is named (classified) before anything streams.
        let mut session = self.session(&conn)?;
        session.query("SELECT 1;")?;
        session.close()?;
        let what = format!("pg_dump of {}", conn.render(false));
        let mut out = self.dump_command(&pg_dump, &conn, &what).stream()?;
        // The fingerprint reads a copy of the stream, in another thread, as the sink stores it.
        let (tx, rx) = mpsc::sync_channel(64);
        let reader = std::thread::spawn(move || archive::fingerprint(archive::Received::new(rx)));
        let dumped = sink(&mut archive::Tee {
            inner: &mut out,
            tx,
        });
        // The tee is gone, so the reader has seen the end of the stream. pg_dump's own
        // failure (or timeout) explains a failed store.
        let dumped = match dumped {
            Ok(()) => drain(&mut out, &what),
            Err(e) => Err(out.take_failure().unwrap_or(e)),
        };
        let fingerprint = reader
            .join()
            .expect("the fingerprint thread does not panic");
        dumped?;
        fingerprint.map_err(|e| SourceError::failed(format!("reading the {what}"), e))
    }

    fn restore(&self, feed: &mut Feed<'_>, work: &Path, opts: &RestoreOptions) -> Result<()> {
        if self.config.mode == PostgresMode::Physical {
            return Err(SourceError::Unsupported(
                "a physical base backup is restored with its WAL: use `haven tenant restore`"
                    .into(),
            ));
        }
        let conn = self.conn()?;
        let pg_restore = self.tool("pg_restore")?;
        self.tool("psql")?;
        let target = self.inspect_target(&conn, opts)?;
        let jobs = self.jobs();
        let what = format!("pg_restore into {}", conn.render(false));
        if jobs > 1 {
            // The whole stream is on disk before an occupied target is dropped.
            let file = work.join("dump.pgcustom");
            let written = fs::File::create(&file)
                .map_err(|e| SourceError::io(format!("creating {}", file.display()), e))
                .and_then(|f| write_with_offsets(io::BufWriter::new(f), &file, feed))
                .and_then(|()| self.make_target(&target));
            let result = written.and_then(|()| {
                let mut cmd = self.command(&pg_restore, &conn, &what);
                cmd.args(self.pg_restore_args(&conn))
                    .arg("-j")
                    .arg(jobs.to_string())
                    .arg(&file)
                    .work(work);
                finish_child(cmd.spawn()?, &what, &conn)
            });
            let _ = fs::remove_file(&file);
            return result;
        }
        self.make_target(&target)?;
        let mut child = self
            .command(&pg_restore, &conn, &what)
            .args(self.pg_restore_args(&conn))
            .work(work)
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.take_stdin().expect("piped stdin");
        let fed = feed(&mut stdin).and_then(|_| {
            stdin
                .flush()
                .map_err(|e| SourceError::io(format!("feeding {what}"), e))
        });
        drop(stdin);
        // pg_restore's own error explains a broken pipe on our side, so it comes first.
        finish_child(child, &what, &conn)?;
        fed
    }

    fn fingerprint(&self) -> Result<Fingerprint> {
        let conn = self.conn()?;
        let pg_dump = self.tool("pg_dump")?;
        let what = format!("pg_dump of {} (for its fingerprint)", conn.render(false));
        let mut child = self
            .dump_command(&pg_dump, &conn, &what)
            .arg("--data-only")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = child.take_stdout().expect("piped stdout");
        let read = archive::fingerprint(io::BufReader::with_capacity(1 << 16, &mut stdout));
        if read.is_err() {
            // Let pg_dump finish (or fail) rather than block on a full pipe.
            let _ = io::copy(&mut stdout, &mut io::sink());
        }
        drop(stdout);
        // pg_dump's own error (connection, credentials) explains a short archive.
        finish_child(child, &what, &conn)?;
        read.map_err(|e| SourceError::failed(format!("reading the {what}"), e))
    }

    fn probe(&self) -> Result<String> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        let answer = session.query(&format!(
            "SELECT pg_catalog.current_setting('server_version') || ', database ' || pg_catalog.current_database() \
             || ' with ' || ({USER_TABLES_COUNT}) || ' tables';"
        ))?;
        session.close()?;
        Ok(format!("answers: PostgreSQL {}", answer.join(" ")))
    }

    fn scratch(&self, _work: &Path) -> Result<Box<dyn ScratchTarget>> {
        let conn = self.conn()?;
        let name = format!("haven_verify_{}", random_hex());
        let maintenance = conn.with_dbname("postgres");
        let mut admin = self.session(&maintenance)?;
        admin.query(&format!(
            "CREATE DATABASE {} TEMPLATE template0;",
            quote_ident(&name)
        ))?;
        admin.close()?;
        let config = PostgresConfig {
            url: conn.with_dbname(&name).render(true),
            ..self.config.clone()
        };
        Ok(Box::new(PostgresScratch {
            component: PostgresComponent::new(config),
            maintenance,
            name,
        }))
    }
}

/// Write the stream into `file`, then set the data offsets that a dump written to a pipe
/// lacks (read from a copy of the stream, in another thread): with them `pg_restore -j`
/// seeks to each table's data at once; without, each of its workers reads through the
/// file, chunk by chunk, to find it. A stream whose layout cannot be read is left as it
/// is (pg_restore then scans, or names what is wrong with it).
fn write_with_offsets(
    mut w: io::BufWriter<fs::File>,
    file: &Path,
    feed: &mut Feed<'_>,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel(64);
    let reader = std::thread::spawn(move || archive::layout(archive::Received::new(rx)));
    let fed = feed(&mut archive::Tee { inner: &mut w, tx });
    let layout = reader.join().expect("the layout thread does not panic");
    fed?;
    w.flush()
        .map_err(|e| SourceError::io(format!("writing {}", file.display()), e))?;
    drop(w);
    if let Ok(layout) = layout {
        archive::set_offsets(file, &layout).map_err(|e| {
            SourceError::io(format!("setting the data offsets in {}", file.display()), e)
        })?;
    }
    Ok(())
}

/// A restore target as found before the restore.
struct Target {
    db: String,
    /// The database to connect to for creating and dropping `db`.
    maintenance: ConnInfo,
    exists: bool,
    /// Holds tables, views or sequences (only with `force`, else refused).
    occupied: bool,
}

/// A database `haven_verify_<random>` next to the configured one, dropped on drop.
struct PostgresScratch {
    component: PostgresComponent,
    maintenance: ConnInfo,
    name: String,
}

impl ScratchTarget for PostgresScratch {
    fn component(&self) -> &dyn StreamComponent {
        &self.component
    }
}

impl Drop for PostgresScratch {
    fn drop(&mut self) {
        let drop_it = || -> Result<()> {
            let mut admin = self.component.session(&self.maintenance)?;
            admin.query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE);",
                quote_ident(&self.name)
            ))?;
            admin.close()
        };
        if let Err(e) = drop_it() {
            eprintln!(
                "haven: warning: the scratch database {} was not dropped: {e}",
                self.name
            );
        }
    }
}

const USER_TABLES_COUNT: &str = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'";

/// What makes a restore target non-empty: tables, views, sequences, foreign tables.
const USER_RELATIONS_SQL: &str = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname <> 'information_schema' \
     AND n.nspname !~ '^pg_';";

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..8]);
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_are_kebab_case_and_unknown_keys_refused() {
        #[derive(Deserialize)]
        struct Wrap {
            c: PostgresConfig,
        }
        let w: Wrap = serde_json::from_str(
            r#"{"c": {"url": "postgresql://postgres@127.0.0.1:5432/app", "jobs": 4, "bin-dir": "/x", "keep-owners": true}}"#,
        )
        .unwrap();
        assert_eq!(w.c.jobs, Some(4));
        assert_eq!(w.c.bin_dir.as_deref(), Some(Path::new("/x")));
        assert!(serde_json::from_str::<Wrap>(r#"{"c": {"url": "x", "port": 1}}"#).is_err());
    }
}
