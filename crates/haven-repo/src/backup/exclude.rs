//! Which entries a file backup leaves out: restic's exclude options, compiled into the
//! engine's [`Exclude`] predicate, which the walker asks before it stats deeper or reads
//! a folder (an excluded folder costs nothing below it).
//!
//! Main type: [`ExcludeRules`] (built from the options, then [`ExcludeRules::into_exclude`]).
//!
//! Pattern rules (restic's, from its `filter` package, as documented for `--exclude`):
//! - a pattern is matched against the entry's absolute path, component by component;
//!   `*`, `?`, `[a-z]`, `[!x]` match within one component, `\` escapes, `**` matches any
//!   number of components (also none);
//! - a pattern that does not start with `/` may match at any depth (it is read as
//!   `**/pattern`): `*.tmp` leaves out every `.tmp` file, `cache` every entry named
//!   `cache` (and, for a folder, all below it);
//! - patterns are tried in order and the last one that matches decides; a pattern
//!   starting with `!` puts back what an earlier one left out (only below folders that
//!   are themselves kept, since an excluded folder is never read);
//! - `--iexclude` patterns match without regard to case (ASCII and Unicode lowercase);
//! - in `--exclude-file`, empty lines and lines starting with `#` are skipped, and
//!   `$VAR` / `${VAR}` are replaced by the environment's values.
//!
//! Folder rules: `--exclude-caches` leaves out the contents of every folder holding a
//! `CACHEDIR.TAG` that starts with the standard signature (the tag itself is kept);
//! `--exclude-if-present NAME[:HEADER]` the contents of every folder holding `NAME`
//! (whose first bytes are `HEADER`, when given; `NAME` itself is kept);
//! `--one-file-system` the contents of folders mounted from another file system than
//! the one holding the backed-up path (the mount point itself is kept, empty);
//! `--exclude-larger-than SIZE` files larger than SIZE.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Exclude;

/// The signature a `CACHEDIR.TAG` starts with (bford.info/cachedir).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The exclude options of one backup.
#[derive(Debug, Default)]
pub struct ExcludeRules {
    patterns: Vec<Pattern>,
    /// Folders whose contents go when they hold this file (name, header).
    if_present: Vec<(String, Option<Vec<u8>>)>,
    /// Devices of the backed-up paths (`--one-file-system`).
    devices: Option<HashSet<u64>>,
    /// The backed-up paths themselves: never left out for their parent's file system.
    roots: Vec<PathBuf>,
    larger_than: Option<u64>,
    /// Per folder: whether its contents are left out (a marker file in it, or another
    /// file system).
    folders: Mutex<HashMap<PathBuf, bool>>,
}

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    negated: bool,
    ignore_case: bool,
}

impl ExcludeRules {
    /// Add a `--exclude` (or, with `ignore_case`, `--iexclude`) pattern.
    pub fn pattern(&mut self, text: &str, ignore_case: bool) -> Result<(), String> {
        let (negated, text) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if text.is_empty() {
            return Err("an empty exclude pattern matches nothing; remove it".into());
        }
        let anchored = text.starts_with('/');
        let mut parts: Vec<String> = if anchored { vec![] } else { vec!["**".into()] };
        parts.extend(text.split('/').filter(|p| !p.is_empty()).map(|p| {
            if ignore_case {
                p.to_lowercase()
            } else {
                p.to_string()
            }
        }));
        for p in &parts {
            check_glob(p).map_err(|e| format!("exclude pattern {text:?}: {e}"))?;
        }
        self.patterns.push(Pattern {
            parts,
            negated,
            ignore_case,
        });
        Ok(())
    }

    /// Add the patterns of an `--exclude-file` (environment variables expanded).
    pub fn pattern_file(&mut self, file: &Path, ignore_case: bool) -> Result<(), String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading the exclude file {}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.pattern(&expand_env(line), ignore_case)
                .map_err(|e| format!("{} line {}: {e}", file.display(), n + 1))?;
        }
        Ok(())
    }

    /// `--exclude-caches`.
    pub fn caches(&mut self) {
        self.if_present
            .push(("CACHEDIR.TAG".into(), Some(CACHEDIR_SIGNATURE.to_vec())));
    }

    /// `--exclude-if-present NAME[:HEADER]`.
    pub fn if_present(&mut self, spec: &str) -> Result<(), String> {
        let (name, header) = match spec.split_once(':') {
            Some((n, h)) => (n, Some(h.as_bytes().to_vec())),
            None => (spec, None),
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "--exclude-if-present {spec:?}: name a file (no folder), optionally with :HEADER"
            ));
        }
        self.if_present.push((name.to_string(), header));
        Ok(())
    }

    /// `--one-file-system`: stay on the file systems of `roots`.
    pub fn one_file_system(&mut self, roots: &[PathBuf]) {
        let devices = roots
            .iter()
            .filter_map(|r| std::fs::metadata(r).ok())
            .map(|m| m.dev())
            .collect();
        self.devices = Some(devices);
        self.roots = roots.to_vec();
    }

    /// `--exclude-larger-than`.
    pub fn larger_than(&mut self, bytes: u64) {
        self.larger_than = Some(bytes);
    }

    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.if_present.is_empty()
            && self.devices.is_none()
            && self.larger_than.is_none()
    }

    /// The engine's predicate.
    pub fn into_exclude(self) -> Exclude {
        let rules = Arc::new(self);
        Exclude(Arc::new(move |path, meta| rules.excludes(path, meta)))
    }

    /// Whether `path` (absolute, with metadata `meta`) is left out.
    pub fn excludes(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        if let Some(limit) = self.larger_than {
            if meta.is_file() && meta.len() > limit {
                return true;
            }
        }
        if self.excluded_by_patterns(path) {
            return true;
        }
        match path.parent() {
            _ if self.roots.iter().any(|r| r == path) => false,
            Some(parent) if !self.if_present.is_empty() || self.devices.is_some() => {
                let marker = path.file_name().and_then(|n| n.to_str());
                let is_marker = self
                    .if_present
                    .iter()
                    .any(|(name, _)| Some(name.as_str()) == marker);
                self.folder_emptied(parent) && !(is_marker && self.holds_marker(parent))
            }
            _ => false,
        }
    }

    /// Whether the patterns (only) select `path`: `haven find` uses the same rules.
    pub fn matches(&self, path: &Path) -> bool {
        self.excluded_by_patterns(path)
    }

    fn excluded_by_patterns(&self, path: &Path) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let mut excluded = false;
        for p in &self.patterns {
            let subject = if p.ignore_case { &lower } else { &parts };
            if match_parts(&p.parts, subject) {
                excluded = !p.negated;
            }
        }
        excluded
    }

    /// Whether the contents of folder `dir` are left out (cached per folder).
    fn folder_emptied(&self, dir: &Path) -> bool {
        if let Some(known) = self.folders.lock().expect("exclude cache").get(dir) {
            return *known;
        }
        let other_fs = self.devices.as_ref().is_some_and(|devices| {
            std::fs::symlink_metadata(dir).is_ok_and(|m| !devices.contains(&m.dev()))
        });
        let emptied = other_fs || self.holds_marker(dir);
        self.folders
            .lock()
            .expect("exclude cache")
            .insert(dir.to_path_buf(), emptied);
        emptied
    }

    fn holds_marker(&self, dir: &Path) -> bool {
        self.if_present.iter().any(|(name, header)| {
            let file = dir.join(name);
            match header {
                None => std::fs::symlink_metadata(&file).is_ok(),
                Some(want) => {
                    let mut got = vec![0u8; want.len()];
                    std::fs::File::open(&file)
                        .and_then(|mut f| f.read_exact(&mut got))
                        .is_ok()
                        && got == *want
                }
            }
        })
    }
}

/// Whether pattern components `pat` match path components `path` in full.
fn match_parts(pat: &[String], path: &[String]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((head, tail)) => {
                glob(first.as_bytes(), head.as_bytes()) && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

/// Whether `pattern` is a well-formed glob (brackets closed, no trailing `\`).
fn check_glob(pattern: &str) -> Result<(), String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 >= b.len() => return Err("ends with a lone \\".into()),
            b'\\' => i += 2,
            b'[' => match class_end(b, i) {
                Some(end) => i = end + 1,
                None => return Err("a [ without its ]".into()),
            },
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index of the `]` closing the class opened at `open`.
fn class_end(p: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if i < p.len() && (p[i] == b'!' || p[i] == b'^') {
        i += 1;
    }
    if i < p.len() && p[i] == b']' {
        i += 1;
    }
    while i < p.len() {
        match p[i] {
            b']' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// One component against one glob: `*`, `?`, classes, escapes (Go's filepath.Match).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some(end) = class_end(p, pi) {
                        if class_matches(&p[pi + 1..end], s[si]) {
                            pi = end + 1;
                            si += 1;
                            continue;
                        }
                    }
                }
                b'\\' if pi + 1 < p.len() && p[pi + 1] == s[si] => {
                    pi += 2;
                    si += 1;
                    continue;
                }
                b'\\' if pi + 1 < p.len() => {}
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negated, class) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < class.len() {
        let lo = if class[i] == b'\\' && i + 1 < class.len() {
            i += 1;
            class[i]
        } else {
            class[i]
        };
        if i + 2 < class.len() && class[i + 1] == b'-' {
            let hi = class[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    hit != negated
}

/// `$VAR` and `${VAR}` replaced by the environment's values (empty when unset).
fn expand_env(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            chars.by_ref().take_while(|&c| c != '}').collect()
        } else {
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    n.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            n
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(&name).unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> ExcludeRules {
        let mut r = ExcludeRules::default();
        for p in patterns {
            r.pattern(p, false).unwrap();
        }
        r
    }

    #[test]
    fn patterns_follow_restics_rules() {
        let r = rules(&[
            "*.tmp",
            "/srv/app/logs",
            "cache",
            "a/**/z.txt",
            "[0-9]?.bin",
        ]);
        for out in [
            "/srv/x.tmp",
            "/srv/deep/er/y.tmp",
            "/srv/app/logs",
            "/home/u/cache",
            "/srv/a/z.txt",
            "/srv/a/b/c/z.txt",
            "/srv/42.bin",
        ] {
            assert!(r.excluded_by_patterns(Path::new(out)), "{out}");
        }
        for kept in [
            "/srv/x.tmpl",
            "/other/app/logs",
            "/srv/app/logs2",
            "/home/u/cached",
            "/srv/a/b/y.txt",
            "/srv/x2.bin",
        ] {
            assert!(!r.excluded_by_patterns(Path::new(kept)), "{kept}");
        }
    }

    #[test]
    fn a_negated_pattern_puts_back_and_iexclude_ignores_case() {
        let mut r = rules(&["*.log", "!keep.log"]);
        assert!(r.excluded_by_patterns(Path::new("/v/a.log")));
        assert!(!r.excluded_by_patterns(Path::new("/v/keep.log")));
        r.pattern("*.DAT", true).unwrap();
        assert!(r.excluded_by_patterns(Path::new("/v/x.dat")));
        assert!(r.excluded_by_patterns(Path::new("/v/X.Dat")));
        assert!(!rules(&["*.DAT"]).excluded_by_patterns(Path::new("/v/x.dat")));
    }

    #[test]
    fn malformed_patterns_are_refused_and_env_is_expanded() {
        let mut r = ExcludeRules::default();
        assert!(r.pattern("[abc", false).unwrap_err().contains("]"));
        assert!(r.pattern("", false).is_err());
        std::env::set_var("HAVEN_EXCLUDE_TEST_DIR", "/data");
        assert_eq!(
            expand_env("${HAVEN_EXCLUDE_TEST_DIR}/x/$HAVEN_EXCLUDE_TEST_DIR"),
            "/data/x//data"
        );
        assert_eq!(expand_env("cost$"), "cost$");
    }

    #[test]
    fn globs_match_like_filepath_match() {
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"[!a]x", b"bx"));
        assert!(!glob(b"[!a]x", b"ax"));
        assert!(glob(b"\\*", b"*"));
        assert!(!glob(b"\\*", b"a"));
        assert!(glob(b"[a-c][x-z]", b"by"));
    }
}
