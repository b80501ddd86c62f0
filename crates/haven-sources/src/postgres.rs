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

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::process::{self, ChildOutput};
use crate::{
    Feed, Fingerprint, RestoreOptions, Result, ScratchTarget, Sink, SourceError, StreamComponent,
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

/// Session settings that fix the text form of rows (and thus the fingerprint), and keep
/// the server from ending our transaction while pg_dump still runs.
const SETTINGS_SQL: &str = "SET search_path = ''; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET bytea_output = 'hex'; SET extra_float_digits = 1; \
     SET lc_monetary = 'C'; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0;";

/// Generates one query per user table and runs each (`\gexec`): a JSON array of schema,
/// name, row count and the sum of the rows' hashes.
const FINGERPRINT_SQL: &str = "SELECT pg_catalog.format('SELECT pg_catalog.json_build_array(%L, %L, \
     pg_catalog.count(*)::text, COALESCE(pg_catalog.sum(pg_catalog.hashtextextended(t::text, 0)), 0)::text)::text \
     FROM %I.%I AS t', n.nspname, c.relname, n.nspname, c.relname) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
     ORDER BY n.nspname, c.relname\n\\gexec";

const USER_TABLES_COUNT: &str = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'";

/// What makes a restore target non-empty: tables, views, sequences, foreign tables.
const USER_RELATIONS_SQL: &str = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname <> 'information_schema' \
     AND n.nspname !~ '^pg_';";

fn fingerprint_from(listing: &[String]) -> Result<Fingerprint> {
    let mut fp = Fingerprint::default();
    let mut rows = 0u64;
    for line in listing {
        let fields: Vec<String> = serde_json::from_str(line).map_err(|e| {
            SourceError::failed("reading the fingerprint", format!("{e} in {line:?}"))
        })?;
        let [schema, name, count, sum] = fields.as_slice() else {
            return Err(SourceError::failed(
                "reading the fingerprint",
                format!("unexpected line {line:?}"),
            ));
        };
        rows += count.parse::<u64>().unwrap_or(0);
        fp.fact(
            format!("table {schema}.{name}"),
            format!("rows={count} sum={sum}"),
        );
    }
    fp.summary = format!("{} tables, {rows} rows", fp.facts.len());
    Ok(fp)
}

/// Read what the sink left unread: a sink that stops early must not leave pg_dump
/// blocked, nor pass for a complete dump.
fn drain(out: &mut ChildOutput, what: &str) -> Result<()> {
    let rest =
        io::copy(out, &mut io::sink()).map_err(|e| SourceError::failed(what, e.to_string()))?;
    out.finish()?;
    if rest > 0 {
        return Err(SourceError::failed(
            what,
            format!("the dump was not read to its end ({rest} bytes left)"),
        ));
    }
    Ok(())
}

fn collect(mut stderr: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = vec![];
        let _ = stderr.read_to_end(&mut buf);
        buf
    })
}

/// Run a tool to completion; a failure is classified from its stderr.
fn run_classified(cmd: &mut Command, what: &str, conn: &ConnInfo) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| process::spawn_error(cmd, NOT_INSTALLED_HINT, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(classify(
            what,
            conn,
            format!("{} ({})", process::stderr_tail(&out.stderr), out.status),
        ))
    }
}

/// Turn a client tool's error output into the error class a user can act on.
fn classify(what: &str, conn: &ConnInfo, detail: String) -> SourceError {
    let lower = detail.to_lowercase();
    let target = conn.render(false);
    const DENIED: [&str; 5] = [
        "password authentication failed",
        "no pg_hba.conf entry",
        "no password supplied",
        "permission denied for database",
        "authentication failed",
    ];
    const UNREACHABLE: [&str; 7] = [
        "connection refused",
        "could not connect",
        "could not translate host name",
        "timeout expired",
        "no route to host",
        "network is unreachable",
        "no such file or directory",
    ];
    if DENIED.iter().any(|p| lower.contains(p))
        || (lower.contains("role \"") && lower.contains("does not exist"))
    {
        SourceError::AccessDenied {
            target,
            detail: format!(
                "{detail}; check the user and password in the url (or PGPASSWORD, ~/.pgpass) and the server's pg_hba.conf"
            ),
        }
    } else if UNREACHABLE.iter().any(|p| lower.contains(p)) {
        SourceError::Unreachable {
            target,
            detail: format!(
                "{detail}; check that the server runs and that the url's host and port are right"
            ),
        }
    } else if lower.contains("server version mismatch") {
        SourceError::failed(
            what,
            format!("{detail}; set `bin-dir` to client tools at least as new as the server"),
        )
    } else {
        SourceError::failed(what, detail)
    }
}

/// The line psql prints after each query, marking the end of its output.
const DONE: &str = "__haven_done__";

/// A psql process driven line by line: each query is followed by `\echo` of a marker, so
/// its output ends at the marker; psql stops at the first error (`ON_ERROR_STOP`).
struct Session {
    child: Child,
    pipes: Pipes,
    stderr: Option<JoinHandle<Vec<u8>>>,
    conn: ConnInfo,
    ended: bool,
}

struct Pipes {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Pipes {
    /// The output lines of `sql`, or `None` when psql ended first (an error, a lost
    /// connection).
    fn query(&mut self, sql: &str) -> Option<Vec<String>> {
        let input = format!("{sql}\n\\echo {DONE}\n");
        if self
            .stdin
            .write_all(input.as_bytes())
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            return None;
        }
        let mut lines = vec![];
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line == DONE {
                return Some(lines);
            }
            lines.push(line.to_string());
        }
    }
}

impl Session {
    fn open(mut cmd: Command, conn: &ConnInfo) -> Result<Session> {
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conn.render(false),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| process::spawn_error(&cmd, NOT_INSTALLED_HINT, e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Ok(Session {
            child,
            pipes: Pipes { stdin, stdout },
            stderr: Some(stderr),
            conn: conn.clone(),
            ended: false,
        })
    }

    fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.pipes.query(sql).ok_or_else(|| self.failure())
    }

    /// Why psql ended: its exit status and the end of its stderr, classified.
    fn failure(&mut self) -> SourceError {
        let status = self.child.wait();
        self.ended = true;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        classify(
            &format!("psql on {}", self.conn.render(false)),
            &self.conn,
            format!("{} ({status})", process::stderr_tail(&stderr)),
        )
    }

    fn close(mut self) -> Result<()> {
        let _ = self.pipes.stdin.write_all(b"\\q\n");
        let _ = self.pipes.stdin.flush();
        let status = self
            .child
            .wait()
            .map_err(|e| SourceError::io("waiting for psql", e))?;
        if status.success() {
            self.ended = true;
            Ok(())
        } else {
            Err(self.failure())
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A PostgreSQL identifier in double quotes.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal (standard_conforming_strings, the default since 9.1).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encode everything but RFC 3986's unreserved characters (user, password and
/// database name in a URL).
pub(crate) fn encode_userinfo(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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

/// A libpq connection string split into the parts we change (the database name) and the
/// one that must not appear on a command line (the password).
#[derive(Debug, Clone, PartialEq)]
struct ConnInfo {
    form: Form,
    password: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// `postgresql://[user[:password]@][hosts][/dbname][?params]`; user, hosts and params
    /// kept as written (still percent-encoded), the database name decoded.
    Url {
        scheme: String,
        user: Option<String>,
        hosts: String,
        dbname: Option<String>,
        params: Vec<(String, String)>,
    },
    /// `key=value key='quoted value'`, values unquoted.
    Pairs(Vec<(String, String)>),
}

impl ConnInfo {
    fn parse(url: &str) -> Result<ConnInfo> {
        let url = url.trim();
        let invalid = |why: &str| {
            SourceError::Unsupported(format!(
                "the postgres url is not valid ({why}); write postgresql://user@host:port/dbname or host=... dbname=..."
            ))
        };
        for scheme in ["postgresql://", "postgres://"] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (authority, path) = main.split_once('/').unwrap_or((main, ""));
            let (userinfo, hosts) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (user, mut password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, "")))
            {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| u.to_string()),
                    (!p.is_empty()).then(|| decode_percent(p)),
                ),
                None => (None, None),
            };
            let mut dbname = (!path.is_empty()).then(|| decode_percent(path));
            let mut params = vec![];
            for param in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = param
                    .split_once('=')
                    .ok_or_else(|| invalid(&format!("parameter {param:?} has no value")))?;
                match k {
                    "password" => password = Some(decode_percent(v)),
                    "dbname" => dbname = Some(decode_percent(v)),
                    _ => params.push((k.to_string(), v.to_string())),
                }
            }
            return Ok(ConnInfo {
                form: Form::Url {
                    scheme: scheme.to_string(),
                    user,
                    hosts: hosts.to_string(),
                    dbname,
                    params,
                },
                password,
            });
        }
        let pairs = parse_pairs(url).map_err(|why| invalid(&why))?;
        let password = pairs
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.clone());
        Ok(ConnInfo {
            form: Form::Pairs(pairs.into_iter().filter(|(k, _)| k != "password").collect()),
            password,
        })
    }

    fn dbname(&self) -> Option<String> {
        match &self.form {
            Form::Url { dbname, .. } => dbname.clone(),
            Form::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k == "dbname")
                .map(|(_, v)| v.clone()),
        }
    }

    fn with_dbname(&self, db: &str) -> ConnInfo {
        let mut out = self.clone();
        match &mut out.form {
            Form::Url { dbname, .. } => *dbname = Some(db.to_string()),
            Form::Pairs(pairs) => {
                pairs.retain(|(k, _)| k != "dbname");
                pairs.push(("dbname".into(), db.to_string()));
            }
        }
        out
    }

    /// The connection string, with the password only when asked for.
    fn render(&self, with_password: bool) -> String {
        let password = self.password.as_deref().filter(|_| with_password);
        match &self.form {
            Form::Url {
                scheme,
                user,
                hosts,
                dbname,
                params,
            } => {
                let mut s = scheme.clone();
                match (user, password) {
                    (Some(u), Some(p)) => s.push_str(&format!("{u}:{}@", encode_userinfo(p))),
                    (Some(u), None) => s.push_str(&format!("{u}@")),
                    (None, Some(p)) => s.push_str(&format!(":{}@", encode_userinfo(p))),
                    (None, None) => {}
                }
                s.push_str(hosts);
                if let Some(db) = dbname {
                    s.push('/');
                    s.push_str(&encode_userinfo(db));
                }
                let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !params.is_empty() {
                    s.push('?');
                    s.push_str(&params.join("&"));
                }
                s
            }
            Form::Pairs(pairs) => {
                let mut all: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if let Some(p) = password {
                    all.push(("password", p));
                }
                all.iter()
                    .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

/// Parse libpq's `key=value` conninfo (values optionally single-quoted, `\` escapes).
fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return if out.is_empty() {
                Err("it is empty".into())
            } else {
                Ok(out)
            };
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("{key:?} is not followed by ="));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of {key} lacks its closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_its_password_off_the_rendered_string_and_changes_database() {
        let c =
            ConnInfo::parse("postgresql://app:s%40cret%2F@db.example:6432/my%20db?sslmode=require")
                .unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret/"));
        assert_eq!(c.dbname().as_deref(), Some("my db"));
        assert_eq!(
            c.render(false),
            "postgresql://app@db.example:6432/my%20db?sslmode=require"
        );
        assert_eq!(
            c.with_dbname("postgres").render(true),
            "postgresql://app:s%40cret%2F@db.example:6432/postgres?sslmode=require"
        );
        let q = ConnInfo::parse("postgres://u@h/x?password=pw&dbname=y").unwrap();
        assert_eq!(
            (q.password.as_deref(), q.dbname().as_deref()),
            (Some("pw"), Some("y"))
        );
        assert_eq!(q.render(false), "postgres://u@h/y");
        let bare = ConnInfo::parse("postgresql://").unwrap();
        assert_eq!(bare.dbname(), None);
        assert_eq!(bare.with_dbname("a").render(false), "postgresql:///a");
    }

    #[test]
    fn key_value_conninfo_is_parsed_and_rendered_without_the_password() {
        let c = ConnInfo::parse("host=/run/pg port = 5433 dbname='a b' password='p w\\'x' user=me")
            .unwrap();
        assert_eq!(c.password.as_deref(), Some("p w'x"));
        assert_eq!(c.dbname().as_deref(), Some("a b"));
        assert_eq!(
            c.render(false),
            "host='/run/pg' port='5433' dbname='a b' user='me'"
        );
        assert_eq!(
            ConnInfo::parse(&c.with_dbname("z").render(true)).unwrap(),
            c.with_dbname("z")
        );
        assert!(ConnInfo::parse("mydb").is_err());
        assert!(ConnInfo::parse("dbname='open").is_err());
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(decode_percent("%41b%zz%é%"), "Ab%zz%é%");
    }

    #[test]
    fn tool_errors_are_classified() {
        let conn = ConnInfo::parse("postgresql://u:pw@127.0.0.1:1/db").unwrap();
        let refused = classify(
            "psql",
            &conn,
            "psql: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused"
                .into(),
        );
        assert!(
            matches!(refused, SourceError::Unreachable { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("127.0.0.1:1"), "{refused}");
        assert!(!refused.to_string().contains("pw"), "{refused}");
        let denied = classify(
            "psql",
            &conn,
            "FATAL:  password authentication failed for user \"u\"".into(),
        );
        assert!(
            matches!(denied, SourceError::AccessDenied { .. }),
            "{denied}"
        );
        let role = classify(
            "psql",
            &conn,
            "FATAL:  role \"nobody\" does not exist".into(),
        );
        assert!(matches!(role, SourceError::AccessDenied { .. }), "{role}");
        let other = classify(
            "pg_restore",
            &conn,
            "ERROR:  relation \"x\" already exists".into(),
        );
        assert!(matches!(other, SourceError::Failed { .. }), "{other}");
    }

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
