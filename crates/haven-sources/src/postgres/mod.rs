//! `postgres`: one PostgreSQL database, backed up logically with `pg_dump` and restored
//! with `pg_restore`, with a fingerprint taken in the very snapshot the dump reads.
//!
//! Approach: the PostgreSQL client tools run as subprocesses, so URLs, `PGPASSWORD`,
//! `~/.pgpass` and unix sockets behave exactly as with libpq anywhere else. A password
//! in the URL is passed to them as `PGPASSWORD`, never on a command line.
//!
//! Backup data flow:
//! ```text
//! psql session: BEGIN REPEATABLE READ READ ONLY; pg_export_snapshot() ──id──┐
//!   (same transaction, another thread) per table: count(*), sum(hash(row)) │
//! pg_dump -Fc -Z0 --snapshot=id ──custom-format stream──> sink ◄───────────┘
//! psql session: COMMIT once pg_dump has finished
//! ```
//! The dump is uncompressed (`-Z0`) because the repository compresses and deduplicates
//! across days. Each user table (every schema but the system ones) becomes the fact
//! `table <schema>.<name>` = `rows=N sum=S`, where S is the sum of a 64-bit hash of each
//! row's text form: independent of row order, one sequential scan per table, no large
//! strings. Session settings that change a row's text (time zone, date, interval, bytea
//! and float output, search path) are pinned, so a restored copy on another server with
//! other defaults gives the same sums.
//!
//! Restore into the database named in `self`'s URL: created (from `template0`) when
//! missing, refused when it holds tables, views or sequences unless `force` (then dropped
//! with `WITH (FORCE)` and recreated). With `jobs` > 1 the stream is written to a file in
//! `work` (before anything is dropped) and restored with `pg_restore -j` (a dump written
//! to a pipe has no data offsets in its table of contents, which `pg_restore -j` handles
//! by scanning the file); with `jobs` = 1 it is streamed straight into `pg_restore`'s
//! stdin, so `work` needs no room for it, but a forced target is dropped first. Any
//! error stops `pg_restore` (`--exit-on-error`) and fails the restore. Owners and privileges
//! are not restored unless `keep-owners` (roles are not part of a database dump, so on
//! another server they may not exist); objects then belong to the restoring user.
//!
//! Limits: the fingerprint covers table rows only, not the schema (indexes, functions,
//! views' definitions), sequence positions (sequences are not transactional, so no
//! snapshot can pin them) or large objects; all of these are in the dump and restored.
//! Row text forms, and thus the sums, are only comparable between servers of the same
//! major version. Roles and other cluster-wide objects are not backed up (that is
//! `pg_dumpall --globals-only`). The restore target must be reachable with a role that may
//! create and drop databases. A failed restore leaves the partly restored database in
//! place (for inspection; the next restore into it needs `force`). Servers must be
//! PostgreSQL 11 or newer (`hashtextextended`).
//!
//! Files: this one (the component), `conninfo` (connection strings and SQL quoting),
//! `session` (driving psql, the fingerprint query, reading the tools' errors).

mod conninfo;
mod session;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::process::{self, ChildOutput};
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
};
pub(crate) use conninfo::{encode_userinfo, quote_ident};
use conninfo::{quote_literal, ConnInfo};
use session::{
    classify, collect, drain, fingerprint_from, run_classified, Session, FINGERPRINT_SQL,
    SETTINGS_SQL,
};

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
}

#[derive(Debug, Clone)]
pub struct PostgresComponent {
    pub config: PostgresConfig,
}

impl PostgresComponent {
    pub fn new(config: PostgresConfig) -> Self {
        PostgresComponent { config }
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
            None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| SourceError::MissingTool {
                    tool: name.into(),
                    hint: NOT_INSTALLED_HINT.into(),
                }),
        }
    }

    /// A client tool with the password (if the URL has one) in its environment.
    fn command(&self, tool: &Path, conn: &ConnInfo) -> Command {
        let mut cmd = Command::new(tool);
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
        Session::open(self.command(&psql, conn), conn)
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

    fn stream_name(&self) -> &'static str {
        "dump.pgcustom"
    }

    fn backup(&self, sink: &mut Sink<'_>, _work: &Path) -> Result<Fingerprint> {
        let conn = self.conn()?;
        let pg_dump = self.tool("pg_dump")?;
        let mut session = self.session(&conn)?;
        session.query(SETTINGS_SQL)?;
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;")?;
        let snapshot = match session
            .query("SELECT pg_catalog.pg_export_snapshot();")?
            .as_slice()
        {
            [id] => id.clone(),
            other => {
                return Err(SourceError::failed(
                    "exporting a snapshot",
                    format!("unexpected answer {other:?}"),
                ))
            }
        };
        let mut cmd = self.command(&pg_dump, &conn);
        cmd.args([
            "-Fc",
            "-Z0",
            "--snapshot",
            &snapshot,
            "-d",
            &conn.render(false),
        ])
        .stdin(Stdio::null());
        let what = format!("pg_dump of {}", conn.render(false));
        let mut out = ChildOutput::spawn(&mut cmd, &what, NOT_INSTALLED_HINT)?;

        // The fingerprint runs in the exporting transaction while pg_dump streams.
        let (dumped, listing) = std::thread::scope(|scope| {
            let pipes = &mut session.pipes;
            let fingerprint = scope.spawn(move || pipes.query(FINGERPRINT_SQL));
            let dumped = sink(&mut out).and_then(|()| drain(&mut out, &what));
            if dumped.is_err() {
                let _ = session.child.kill();
            }
            (
                dumped,
                fingerprint
                    .join()
                    .expect("the fingerprint thread does not panic"),
            )
        });
        dumped?;
        let listing = listing.ok_or_else(|| session.failure())?;
        session.query("COMMIT;")?;
        session.close()?;
        fingerprint_from(&listing)
    }

    fn restore(&self, feed: &mut Feed<'_>, work: &Path, opts: &RestoreOptions) -> Result<()> {
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
                .and_then(|f| {
                    let mut w = io::BufWriter::new(f);
                    feed(&mut w)?;
                    w.flush()
                        .map_err(|e| SourceError::io(format!("writing {}", file.display()), e))
                })
                .and_then(|()| self.make_target(&target));
            let result = written.and_then(|()| {
                let mut cmd = self.command(&pg_restore, &conn);
                cmd.args(self.pg_restore_args(&conn))
                    .arg("-j")
                    .arg(jobs.to_string())
                    .arg(&file);
                run_classified(&mut cmd, &what, &conn)
            });
            let _ = fs::remove_file(&file);
            return result;
        }
        self.make_target(&target)?;
        let mut cmd = self.command(&pg_restore, &conn);
        cmd.args(self.pg_restore_args(&conn))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| process::spawn_error(&cmd, NOT_INSTALLED_HINT, e))?;
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let fed = feed(&mut stdin).and_then(|_| {
            stdin
                .flush()
                .map_err(|e| SourceError::io(format!("feeding {what}"), e))
        });
        drop(stdin);
        let status = child
            .wait()
            .map_err(|e| SourceError::io(format!("waiting for {what}"), e))?;
        let stderr = stderr.join().unwrap_or_default();
        // pg_restore's own error explains a broken pipe on our side, so it comes first.
        if !status.success() {
            return Err(classify(
                &what,
                &conn,
                format!("{} ({status})", process::stderr_tail(&stderr)),
            ));
        }
        fed
    }

    fn fingerprint(&self) -> Result<Fingerprint> {
        let conn = self.conn()?;
        let mut session = self.session(&conn)?;
        session.query(SETTINGS_SQL)?;
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;")?;
        let listing = session.query(FINGERPRINT_SQL)?;
        session.query("COMMIT;")?;
        session.close()?;
        fingerprint_from(&listing)
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
