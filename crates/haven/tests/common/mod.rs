//! Shared helpers for the fault-injection suite: running the real `haven` binary,
//! deterministic sample trees, byte-for-byte tree comparison, restore-and-compare.
//!
//! Everything here is std only (plus `serde_json`, a dependency of the binary crate,
//! to read `--json` output, and `tempfile`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub use serde_json::Value;

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

    /// Parse stdout as JSON (the command must have been run with `--json`).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
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
        let out = self.run(&[
            "restore",
            snapshot,
            "--target",
            target.path().to_str().expect("utf-8 temp path"),
        ]);
        out.ok(&format!("restore {snapshot}"));
        let restored = restored_path(target.path(), source);
        if let Err(diffs) = compare_trees(expected, &restored) {
            panic!(
                "snapshot {snapshot} did not restore byte-identical to {} ({} difference(s)):\n{}",
                expected.display(),
                diffs.len(),
                diffs
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
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
// Randomness

/// SplitMix64: small, fast, good enough for test data and kill timing.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.next_u64() % (hi - lo)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// Incompressible bytes.
    pub fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// Compressible bytes: lines of words from a small vocabulary.
    pub fn text_bytes(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "haven", "backup", "restore", "snapshot", "pack", "index", "blob", "tree", "lorem",
            "ipsum", "dolor", "sit", "amet", "prune", "check", "lock",
        ];
        let mut out = Vec::with_capacity(n + 16);
        let mut words_on_line = 0;
        while out.len() < n {
            let w = WORDS[self.below(WORDS.len())];
            out.extend_from_slice(w.as_bytes());
            words_on_line += 1;
            if words_on_line == 12 {
                words_on_line = 0;
                out.push(b'\n');
            } else {
                out.push(b' ');
            }
        }
        out.truncate(n);
        out
    }

    /// Random or compressible, half and half.
    pub fn mixed_bytes(&mut self, n: usize) -> Vec<u8> {
        if self.chance(50) {
            self.random_bytes(n)
        } else {
            self.text_bytes(n)
        }
    }
}

/// A seed for randomized tests: `HAVEN_TEST_SEED` if set, else from the clock. Printed
/// so a failing run can be repeated.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("HAVEN_TEST_SEED") {
        Ok(s) => s
            .parse()
            .expect("HAVEN_TEST_SEED must be an unsigned integer"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (repeat with HAVEN_TEST_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------------
// Sample trees

/// What `make_tree` creates.
#[derive(Debug, Clone, Copy)]
pub struct TreeSpec {
    /// Ordinary files, spread over nested folders.
    pub files: usize,
    /// Largest ordinary file in bytes (sizes are skewed towards small).
    pub max_file: usize,
    /// One file of this many pseudo-random bytes (0: none).
    pub big_random: usize,
    /// One file of this many compressible bytes (0: none).
    pub big_text: usize,
    /// Add the special entries: symlink, hard link pair, empty file, sparse file,
    /// an executable and a read-only file.
    pub specials: bool,
    /// Size of the sparse file (holes but for three small pieces of data).
    pub sparse_size: u64,
}

impl TreeSpec {
    /// A few hundred files, about 5 MiB of data, and every special entry.
    pub const SAMPLE: TreeSpec = TreeSpec {
        files: 300,
        max_file: 64 << 10,
        big_random: 2 << 20,
        big_text: 3 << 19,
        specials: true,
        sparse_size: 32 << 20,
    };

    /// Small trees for many-round tests.
    pub const SMALL: TreeSpec = TreeSpec {
        files: 40,
        max_file: 16 << 10,
        big_random: 0,
        big_text: 0,
        specials: true,
        sparse_size: 1 << 20,
    };
}

/// Write a file with `content`, a given mode and a given mtime.
pub fn write_file(path: &Path, content: &[u8], mode: u32, mtime: SystemTime) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("creating a folder");
    }
    // Replace (not truncate) so hard-linked copies elsewhere are never changed.
    let _ = fs::remove_file(path);
    let mut f = fs::File::create(path).expect("creating a file");
    f.write_all(content).expect("writing a file");
    f.set_permissions(fs::Permissions::from_mode(mode))
        .expect("chmod");
    f.set_times(fs::FileTimes::new().set_modified(mtime))
        .expect("setting mtime");
}

/// A deterministic mtime: 2020-01-01 plus `n` seconds and some nanoseconds.
pub fn fixed_mtime(n: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_577_836_800 + n, ((n * 7919) % 1_000_000_000) as u32)
}

/// Create a deterministic tree below `root` from `seed`. Returns the relative paths
/// of the ordinary files it wrote (candidates for later changes).
pub fn make_tree(root: &Path, seed: u64, spec: TreeSpec) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).expect("creating the tree root");
    let dirs: Vec<PathBuf> = {
        let mut d = vec![PathBuf::new()];
        for i in 0..12 {
            let parent = d[rng.below(d.len())].clone();
            d.push(parent.join(format!("dir{i:02}")));
        }
        d
    };
    let mut files = vec![];
    for i in 0..spec.files {
        let dir = &dirs[rng.below(dirs.len())];
        let rel = dir.join(format!("file{i:04}.{}", ["txt", "bin", "dat"][i % 3]));
        // Skewed sizes: mostly small, a few up to max_file.
        let size = match rng.below(10) {
            0..=5 => rng.below(2048.min(spec.max_file) + 1),
            6..=8 => rng.below((spec.max_file / 4).max(1) + 1),
            _ => rng.below(spec.max_file + 1),
        };
        let content = rng.mixed_bytes(size);
        write_file(&root.join(&rel), &content, 0o644, fixed_mtime(i as u64));
        files.push(rel);
    }
    if spec.big_random > 0 {
        let c = rng.random_bytes(spec.big_random);
        write_file(
            &root.join("big/random.bin"),
            &c,
            0o644,
            fixed_mtime(100_001),
        );
        files.push("big/random.bin".into());
    }
    if spec.big_text > 0 {
        let c = rng.text_bytes(spec.big_text);
        write_file(&root.join("big/text.log"), &c, 0o640, fixed_mtime(100_002));
        files.push("big/text.log".into());
    }
    if spec.specials {
        let sp = root.join("special");
        fs::create_dir_all(&sp).expect("mkdir special");
        write_file(&sp.join("empty"), b"", 0o644, fixed_mtime(200_001));
        let exe = rng.text_bytes(300);
        write_file(&sp.join("run.sh"), &exe, 0o755, fixed_mtime(200_002));
        let ro = rng.random_bytes(1000);
        write_file(&sp.join("readonly"), &ro, 0o444, fixed_mtime(200_003));
        let linked = rng.mixed_bytes(5000);
        write_file(&sp.join("hard-a"), &linked, 0o600, fixed_mtime(200_004));
        fs::hard_link(sp.join("hard-a"), sp.join("hard-b")).expect("hard link");
        std::os::unix::fs::symlink("../dir00/nowhere-or-somewhere", sp.join("link-rel"))
            .expect("symlink");
        std::os::unix::fs::symlink("hard-a", sp.join("link-to-file")).expect("symlink");
        make_sparse(&sp.join("sparse.img"), &mut rng, spec.sparse_size);
        fs::set_permissions(&sp, fs::Permissions::from_mode(0o750)).expect("chmod dir");
    }
    files
}

/// A sparse file of `size` bytes with a little data at the start, in the middle and
/// at the end, holes elsewhere.
pub fn make_sparse(path: &Path, rng: &mut Rng, size: u64) {
    let mut f = fs::File::create(path).expect("creating a sparse file");
    f.write_all(&rng.random_bytes(3000)).expect("write");
    f.seek(SeekFrom::Start(size / 2)).expect("seek");
    f.write_all(&rng.text_bytes(5000)).expect("write");
    f.seek(SeekFrom::Start(size - 100)).expect("seek");
    f.write_all(&rng.random_bytes(100)).expect("write");
    f.set_len(size).expect("set_len");
    f.set_times(fs::FileTimes::new().set_modified(fixed_mtime(300_000)))
        .expect("mtime");
}

/// Change `n` files of `files` (new content of a different size and a new mtime) and
/// add one new file; returns the relative paths touched. `round` makes mtimes unique.
pub fn mutate_tree(root: &Path, files: &mut Vec<PathBuf>, rng: &mut Rng, n: usize, round: u64) {
    for k in 0..n {
        let rel = files[rng.below(files.len())].clone();
        let path = root.join(&rel);
        let old = fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as usize;
        let mut size = rng.range(1, 24 << 10) as usize;
        if size == old {
            size += 1;
        }
        let content = rng.mixed_bytes(size);
        write_file(
            &path,
            &content,
            0o644,
            fixed_mtime(1_000_000 + round * 100 + k as u64),
        );
    }
    let rel = PathBuf::from(format!("dir00/new-{round:04}.dat"));
    let size = rng.range(1, 48 << 10) as usize;
    let content = rng.mixed_bytes(size);
    write_file(
        &root.join(&rel),
        &content,
        0o644,
        fixed_mtime(2_000_000 + round),
    );
    files.push(rel);
}

/// Copy a tree keeping what `compare_trees` looks at: content (holes stay holes),
/// file types, modes, symlink targets, file mtimes and hard links.
pub fn copy_tree(src: &Path, dst: &Path) {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = vec![];
    copy_rec(src, dst, &mut links, &mut dirs);
    // Folder modes last (a read-only folder could not be filled).
    for (d, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod dir");
    }
}

fn copy_rec(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, u32)>,
) {
    let m = fs::symlink_metadata(src).expect("stat while copying");
    let ft = m.file_type();
    if ft.is_dir() {
        fs::create_dir_all(dst).expect("mkdir while copying");
        dirs.push((dst.to_path_buf(), m.mode() & 0o7777));
        let mut names: Vec<_> = fs::read_dir(src)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            copy_rec(&src.join(&n), &dst.join(&n), links, dirs);
        }
    } else if ft.is_symlink() {
        let t = fs::read_link(src).expect("readlink");
        std::os::unix::fs::symlink(t, dst).expect("symlink while copying");
    } else if ft.is_file() {
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, dst).expect("hard link while copying");
                return;
            }
            links.insert((m.dev(), m.ino()), dst.to_path_buf());
        }
        let mut input = fs::File::open(src).expect("open while copying");
        let mut out = fs::File::create(dst).expect("create while copying");
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = input.read(&mut buf).expect("read while copying");
            if n == 0 {
                break;
            }
            if buf[..n].iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(n as i64)).expect("seek");
            } else {
                out.write_all(&buf[..n]).expect("write while copying");
            }
        }
        out.set_len(m.len()).expect("set_len while copying");
        out.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
            .expect("chmod while copying");
        out.set_times(fs::FileTimes::new().set_modified(m.modified().expect("mtime")))
            .expect("mtime while copying");
    } else {
        panic!("copy_tree: unsupported file type at {}", src.display());
    }
}

// ---------------------------------------------------------------------------------
// Comparing trees

/// Every path below `root` (not `root` itself), sorted; symlinks are not followed.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.expect("readdir entry");
            let p = e.path();
            if e.file_type().expect("file type").is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn relative_set(root: &Path) -> BTreeSet<PathBuf> {
    walk(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).expect("below root").to_path_buf())
        .collect()
}

fn kind(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "folder"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 256 << 10], vec![0u8; 256 << 10]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Compare two trees: the same paths, and for each the same type, mode, symlink
/// target, and for files the same bytes and mtime (to the nanosecond); files that are
/// hard links of each other in `expected` must be hard links of each other in `actual`.
/// Returns every difference found.
pub fn compare_trees(expected: &Path, actual: &Path) -> Result<(), Vec<String>> {
    let mut diffs = vec![];
    match fs::symlink_metadata(actual) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(vec![format!("{} is not a folder", actual.display())]),
        Err(e) => return Err(vec![format!("{}: {e}", actual.display())]),
    }
    let (e_set, a_set) = (relative_set(expected), relative_set(actual));
    for missing in e_set.difference(&a_set) {
        diffs.push(format!("missing: {}", missing.display()));
    }
    for extra in a_set.difference(&e_set) {
        diffs.push(format!("unexpected: {}", extra.display()));
    }
    let mut groups: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for rel in e_set.intersection(&a_set) {
        let (ep, ap) = (expected.join(rel), actual.join(rel));
        let (em, am) = (
            fs::symlink_metadata(&ep).expect("stat expected"),
            fs::symlink_metadata(&ap).expect("stat actual"),
        );
        let r = rel.display();
        if kind(em.file_type()) != kind(am.file_type()) {
            diffs.push(format!(
                "{r}: {} instead of {}",
                kind(am.file_type()),
                kind(em.file_type())
            ));
            continue;
        }
        if em.file_type().is_symlink() {
            let (et, at) = (fs::read_link(&ep), fs::read_link(&ap));
            if et.as_ref().ok() != at.as_ref().ok() {
                diffs.push(format!("{r}: symlink target {at:?} instead of {et:?}"));
            }
            continue;
        }
        if em.mode() & 0o7777 != am.mode() & 0o7777 {
            diffs.push(format!(
                "{r}: mode {:o} instead of {:o}",
                am.mode() & 0o7777,
                em.mode() & 0o7777
            ));
        }
        if em.is_file() {
            if em.len() != am.len() {
                diffs.push(format!("{r}: size {} instead of {}", am.len(), em.len()));
            } else {
                match same_content(&ep, &ap) {
                    Ok(true) => {}
                    Ok(false) => diffs.push(format!("{r}: content differs")),
                    Err(e) => diffs.push(format!("{r}: reading failed: {e}")),
                }
            }
            if (em.mtime(), em.mtime_nsec()) != (am.mtime(), am.mtime_nsec()) {
                diffs.push(format!(
                    "{r}: mtime {}.{:09} instead of {}.{:09}",
                    am.mtime(),
                    am.mtime_nsec(),
                    em.mtime(),
                    em.mtime_nsec()
                ));
            }
            if em.nlink() > 1 {
                groups
                    .entry((em.dev(), em.ino()))
                    .or_default()
                    .push(rel.clone());
            }
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let inodes: BTreeSet<(u64, u64)> = members
            .iter()
            .map(|rel| {
                let m = fs::symlink_metadata(actual.join(rel)).expect("stat actual");
                (m.dev(), m.ino())
            })
            .collect();
        if inodes.len() != 1 {
            diffs.push(format!("hard links not restored as one file: {members:?}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs)
    }
}

#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    if let Err(diffs) = compare_trees(expected, actual) {
        panic!(
            "{} differs from {} ({} difference(s)):\n{}",
            actual.display(),
            expected.display(),
            diffs.len(),
            diffs
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
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
