//! Shared helpers for the fault-injection suite: running the real `haven` binary,
//! restore-and-compare, repository listings, bit flips, kill and wait helpers; sample
//! trees and tree comparison live in `trees.rs`.
//!
//! Everything here is std only (plus `serde_json`, a dependency of the binary crate,
//! to read `--json` output, and `tempfile`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

mod trees;
pub use trees::*;

mod daemon;
#[allow(unused_imports)]
pub use daemon::*;

/// The password every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Fast key derivation for tests (the CLI's minimum memory).
pub const FAST_KDF: [&str; 4] = ["--kdf-memory-mib", "8", "--kdf-iterations", "1"];

pub fn haven_bin() -> &'static str {
    env!("CARGO_BIN_EXE_haven")
}

/// The result of one `haven` run.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code; a process killed by signal N reports 128 + N.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Standard output as bytes (for `restore --stdout`).
    pub stdout_bytes: Vec<u8>,
}

impl Out {
    fn from_output(o: std::process::Output) -> Out {
        Out {
            code: exit_code(o.status),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            stdout_bytes: o.stdout,
        }
    }

    /// Panic unless the run exited 0; returns self for chaining.
    #[track_caller]
    pub fn ok(&self, what: &str) -> &Out {
        assert_eq!(
            self.code, 0,
            "`{what}` failed with exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Parse stdout as JSON (the command must have been run with `--json`): the whole
    /// document, or for JSON-lines output (`backup`, `restore`: status events, then the
    /// summary) the last line.
    #[track_caller]
    pub fn json(&self) -> Value {
        let last = self.stdout.trim_end().lines().last().unwrap_or("");
        serde_json::from_str(&self.stdout)
            .or_else(|e| serde_json::from_str(last).map_err(|_| e))
            .unwrap_or_else(|e| {
                panic!(
                    "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
    }

    /// Assert the run failed with `code` and printed exactly one line on stderr, an
    /// error line (`haven: error: ...`) containing every one of `hints`
    /// (case-insensitive). Returns the line.
    #[track_caller]
    pub fn assert_one_line_error(&self, code: i32, hints: &[&str]) -> String {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr, got {}:\n{}",
            lines.len(),
            self.stderr
        );
        let line = lines[0];
        assert!(
            line.starts_with("haven: error: "),
            "the error line does not start with `haven: error: `: {line}"
        );
        let lower = line.to_lowercase();
        for h in hints {
            assert!(
                lower.contains(&h.to_lowercase()),
                "the error line does not mention {h:?}: {line}"
            );
        }
        line.to_string()
    }
}

impl Out {
    /// Like `assert_one_line_error`, but `haven: warning:` lines may come before the
    /// one error line (e.g. a damaged index file is warned about by every command).
    #[track_caller]
    pub fn assert_error_after_warnings(&self, code: i32, hints: &[&str]) -> String {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("haven: warning: "))
            .collect();
        let only_errors = Out {
            stderr: errors.join("\n"),
            ..self.clone()
        };
        only_errors.assert_one_line_error(code, hints)
    }
}

pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => -1,
    }
}

/// A `haven` command with a clean environment (no HAVEN_* from the caller) plus `env`.
pub fn haven_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(haven_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("HAVEN_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// No single `haven` run in this suite may take longer than this: a hang fails the
/// test with a message instead of stalling the whole run.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Run `haven` with `args` and extra environment; returns code, stdout and stderr.
pub fn haven(args: &[&str], env: &[(&str, &str)]) -> Out {
    run_to_end(haven_command(args, env), None, RUN_LIMIT)
}

/// Run `haven`, feeding `input` on standard input.
pub fn haven_with_stdin(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Out {
    run_to_end(haven_command(args, env), Some(input.to_vec()), RUN_LIMIT)
}

/// Run a command to its end with captured output, failing the test (after killing
/// the process) when it runs longer than `limit`.
#[track_caller]
pub fn run_to_end(mut cmd: Command, input: Option<Vec<u8>>, limit: Duration) -> Out {
    let what = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("starting the haven binary");
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A broken pipe means haven stopped reading (an error); its exit code tells.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let out = collect_within(child, limit, &what);
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    out
}

/// Wait for a spawned child whose stdout and stderr are piped and collect its output;
/// kill it and fail the test when it runs longer than `limit`.
#[track_caller]
pub fn collect_within(mut child: Child, limit: Duration, what: &str) -> Out {
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("polling haven") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {limit:?} (killed); stderr so far:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    Out {
        code: exit_code(status),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_bytes: stdout,
    }
}

/// A repository in a folder, with its passphrase, driven through the CLI.
#[derive(Debug, Clone)]
pub struct Repo {
    pub path: PathBuf,
    pub password: String,
}

impl Repo {
    /// `haven init` at `path` with fast KDF settings and `extra` init options.
    #[track_caller]
    pub fn init(path: &Path, extra: &[&str]) -> Repo {
        let repo = Repo {
            path: path.to_path_buf(),
            password: PASSWORD.to_string(),
        };
        let mut args = vec!["init"];
        args.extend_from_slice(&FAST_KDF);
        args.extend_from_slice(extra);
        repo.run(&args).ok("init");
        repo
    }

    /// A handle on an existing location (no init).
    pub fn at(path: &Path) -> Repo {
        Repo {
            path: path.to_path_buf(),
            password: PASSWORD.to_string(),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HAVEN_REPOSITORY", self.path.display().to_string()),
            ("HAVEN_PASSWORD", self.password.clone()),
        ]
    }

    /// A command for this repository (for spawning and killing).
    pub fn command(&self, args: &[&str]) -> Command {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        haven_command(args, &env)
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Run with extra environment variables (they override the repository's).
    pub fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Out {
        let base = self.env();
        let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        haven(args, &env)
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        let base = self.env();
        let env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        haven_with_stdin(args, &env, input)
    }

    /// `backup --json` of `paths` (plus `extra` options); returns (snapshot id, summary).
    #[track_caller]
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> (String, Value) {
        let out = self.run(&backup_args(paths, extra));
        out.ok("backup");
        let v = out.json();
        let id = v["id"]
            .as_str()
            .expect("backup --json has an id")
            .to_string();
        (id, v["snapshot"]["summary"].clone())
    }

    /// The snapshots, oldest first, as `snapshots --json` prints them.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.run(&["snapshots", "--json"]);
        out.ok("snapshots --json");
        out.json().as_array().expect("a JSON array").clone()
    }

    #[track_caller]
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("snapshot id").to_string())
            .collect()
    }

    /// `check` (with `--read-data` when asked); panics with the output unless it exits 0.
    #[track_caller]
    pub fn check_ok(&self, read_data: bool) {
        let args: &[&str] = if read_data {
            &["check", "--read-data"]
        } else {
            &["check"]
        };
        let out = self.run(args);
        out.ok(&args.join(" "));
        assert!(
            out.stdout.contains("no problems found"),
            "check exited 0 without saying `no problems found`:\n{}",
            out.stdout
        );
    }

    /// Restore `snapshot` into a fresh folder below `scratch` and compare the restored
    /// `source` (the absolute path that was backed up) with `expected`, byte for byte.
    #[track_caller]
    pub fn assert_restores(&self, snapshot: &str, source: &Path, expected: &Path) {
        let target = tempfile::tempdir().expect("tempdir for a restore");
        // Without the local tree cache, so that the restore proves what this
        // repository (one site alone, say) holds.
        let out = self.run_env(
            &[
                "restore",
                snapshot,
                "--target",
                target.path().to_str().expect("utf-8 temp path"),
            ],
            &[("HAVEN_CACHE_DIR", "off")],
        );
        out.ok(&format!("restore {snapshot}"));
        let restored = restored_path(target.path(), source);
        if let Err(diffs) = compare_trees(expected, &restored) {
            panic!(
                "snapshot {snapshot} did not restore byte-identical to {} {}",
                expected.display(),
                describe_differences(&diffs)
            );
        }
        assert_no_restore_leftovers(target.path());
    }
}

pub fn backup_args<'a>(paths: &'a [&'a Path], extra: &'a [&'a str]) -> Vec<&'a str> {
    let mut args = vec!["backup", "--json"];
    args.extend_from_slice(extra);
    for p in paths {
        args.push(p.to_str().expect("utf-8 test paths"));
    }
    args
}

/// Where `haven restore --target T` puts the snapshot path `source`: `T/<source>`.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap_or(source))
}

/// No `.haven-restore-*` temporary file may survive a restore.
#[track_caller]
pub fn assert_no_restore_leftovers(target: &Path) {
    let leftovers: Vec<_> = walk(target)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".haven-restore-"))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "restore left temporary files: {leftovers:?}"
    );
}

// ---------------------------------------------------------------------------------
// Repository folders on disk

/// A full listing of a folder: relative path -> (size, mtime in ns, mode) for every
/// entry (folders included), to prove that a command wrote nothing.
pub fn listing(root: &Path) -> Listing {
    let mut out = BTreeMap::new();
    if let Ok(m) = fs::symlink_metadata(root) {
        out.insert(PathBuf::from("."), (m.len(), mtime_ns(&m), m.mode()));
    }
    for p in walk(root) {
        let m = fs::symlink_metadata(&p).expect("stat");
        out.insert(
            p.strip_prefix(root).expect("below root").to_path_buf(),
            (m.len(), mtime_ns(&m), m.mode()),
        );
    }
    out
}

pub type Listing = BTreeMap<PathBuf, (u64, i128, u32)>;

/// What changed between two listings, one line per path.
pub fn listing_diff(before: &Listing, after: &Listing) -> Vec<String> {
    let mut out = vec![];
    for (p, v) in before {
        match after.get(p) {
            None => out.push(format!("removed: {}", p.display())),
            Some(w) if w != v => out.push(format!(
                "changed: {} (size, mtime ns, mode) {v:?} -> {w:?}",
                p.display()
            )),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("added: {}", p.display()));
    }
    out
}

/// Panic with the differences when a folder's listing changed.
#[track_caller]
pub fn assert_unchanged(before: &Listing, after: &Listing, what: &str) {
    let d = listing_diff(before, after);
    assert!(
        d.is_empty(),
        "{what} changed the folder:\n{}",
        d.into_iter().take(30).collect::<Vec<_>>().join("\n")
    );
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The pack files of a repository (full paths), `.tmp-*` files excluded.
pub fn pack_files(repo: &Path) -> Vec<PathBuf> {
    files_in(&repo.join("data"))
}

/// Index files, snapshot files, lock files... (full paths), `.tmp-*` excluded.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Flip one bit of a file in place.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for bit flip");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 1 << bit;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write byte");
    f.sync_all().expect("sync");
}

// ---------------------------------------------------------------------------------
// Processes

/// Poll `cond` every few milliseconds until it holds; panic with `what` after `limit`.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kill a child with SIGKILL (`kill -9`) and reap it (so its pid and `/proc` entry are
/// gone, which is what makes its lock stale). Returns its exit code (137 when killed).
pub fn kill9(child: &mut Child) -> i32 {
    let _ = child.kill();
    exit_code(child.wait().expect("waiting for a killed child"))
}

/// A spawned child that is killed and reaped if the test panics.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already taken")
    }

    pub fn take(&mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (at most `RUN_LIMIT`) for a child with piped stdout/stderr; collect its output.
#[track_caller]
pub fn collect(child: Child) -> Out {
    collect_within(child, RUN_LIMIT, "a spawned haven")
}
