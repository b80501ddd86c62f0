//! Sample trees for the suite: seeded randomness, tree generation and mutation,
//! copying, and byte-for-byte comparison of two trees.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
/// "(N difference(s)):" and the first 20, one per line, for panic messages.
pub fn describe_differences(diffs: &[String]) -> String {
    let first: Vec<&str> = diffs.iter().take(20).map(String::as_str).collect();
    format!("({} difference(s)):\n{}", diffs.len(), first.join("\n"))
}

pub fn assert_same_tree(expected: &Path, actual: &Path) {
    if let Err(diffs) = compare_trees(expected, actual) {
        panic!(
            "{} differs from {} {}",
            actual.display(),
            expected.display(),
            describe_differences(&diffs)
        );
    }
}
