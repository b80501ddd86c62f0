//! What a child may see of Haven's secrets: nothing.
//!
//! Environment: a system tool (`pg_dump`, `redis-server`, `etcd`, ...) gets an allowlist
//! ([`BASE_ENV`], the `LC_*` locale and the prefixes its caller names, e.g. `PG` for
//! libpq's own variables) and what the caller sets explicitly. A user's script (`command`
//! components, hooks) inherits Haven's environment minus Haven's own secrets: every
//! `HAVEN_*` variable (passphrases, key and password files, the API token) and every
//! `AWS_*` variable (the S3 keys). [`is_secret`] is the one definition of the latter.
//!
//! Command lines: [`redact`] replaces the password in what a user wrote (`--password=x`,
//! `-p x`, `user:pass@` in URLs, `PGPASSWORD=x` assignments) with `***` before the line
//! reaches a recovery point, a log line, an error or the API.

use std::ffi::OsStr;

/// Variables every tool keeps: where programs are, who runs them, language and time zone.
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// Haven's own secrets (and everything else it reads: all of `HAVEN_*`) and the S3
/// credentials (`AWS_*`): never passed to a child.
pub fn is_secret(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    ["HAVEN_", "AWS_"].iter().any(|p| name.starts_with(p))
}

/// Whether a system tool keeps the inherited variable `name`, given the extra prefixes
/// its caller allows.
pub(crate) fn tool_keeps(name: &OsStr, prefixes: &[String]) -> bool {
    if is_secret(name) {
        return false;
    }
    let text = name.to_string_lossy();
    BASE_ENV.contains(&text.as_ref())
        || text.starts_with("LC_")
        || prefixes.iter().any(|p| text.starts_with(p.as_str()))
}

/// Names of options and variables whose value is a secret.
fn secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "auth",
        "credential",
        "key",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Short options that take a password as their value (`mysql -pX`, `redis-cli -a X`).
const SECRET_SHORT: [&str; 2] = ["-p", "-a"];

const MASK: &str = "***";

/// `n` random bytes from the system, as hex: passwords of the throwaway servers.
pub fn random_token(n: usize) -> crate::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| crate::SourceError::io("reading random bytes from /dev/urandom", e))?;
    Ok(hex::encode(bytes))
}

/// A command line with its secrets replaced by `***`: values of `--password=x`,
/// `--password x`, `-p x`, `-px`, `-a x` (and any long option or `NAME=` assignment whose
/// name mentions a password, secret, token, key or auth), and the password in
/// `scheme://user:password@host` URLs. Over-redacts rather than leaks (`-p 5432` loses
/// its port); quoting and spacing are kept.
pub fn redact(line: &str) -> String {
    redact_collect(line, &mut vec![])
}

/// The values [`redact`] masks in `line` (at least 4 characters long): to be scrubbed
/// from what the command prints too (a tool's error may echo its password).
pub fn secret_values(line: &str) -> Vec<String> {
    let mut found = vec![];
    redact_collect(line, &mut found);
    found.retain(|v| v.chars().count() >= 4);
    found.sort();
    found.dedup();
    found
}

/// `text` with every one of `values` replaced by `***`.
pub fn scrub(text: &str, values: &[String]) -> String {
    let mut text = text.to_string();
    for v in values {
        text = text.replace(v.as_str(), MASK);
    }
    text
}

fn redact_collect(line: &str, found: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut mask_next = false;
    for (space, word) in words(line) {
        out.push_str(space);
        if word.is_empty() {
            continue;
        }
        if mask_next {
            mask_next = false;
            out.push_str(&quoted_mask(word, found));
            continue;
        }
        let bare = word.trim_start_matches(['\'', '"']);
        if let Some((name, _)) = bare.split_once('=') {
            let option = name.starts_with("--") || !name.starts_with('-');
            if option && secret_name(name) && !name.contains("://") {
                let keep = word.len() - bare.len() + name.len() + 1;
                out.push_str(&word[..keep]);
                out.push_str(&quoted_mask(&word[keep..], found));
                continue;
            }
        }
        if bare.starts_with("--") && secret_name(bare) && !bare.contains('=') {
            out.push_str(word);
            mask_next = true;
            continue;
        }
        if SECRET_SHORT.contains(&bare) {
            out.push_str(word);
            mask_next = true;
            continue;
        }
        if let Some(short) = SECRET_SHORT
            .iter()
            .find(|s| bare.len() > 2 && bare.starts_with(**s) && !bare[2..].starts_with('-'))
        {
            let keep = word.len() - bare.len() + short.len();
            out.push_str(&word[..keep]);
            out.push_str(&quoted_mask(&word[keep..], found));
            continue;
        }
        out.push_str(&redact_urls(word, found));
    }
    out
}

/// `***`, keeping the quotes the masked value had; the value goes to `found`.
fn quoted_mask(value: &str, found: &mut Vec<String>) -> String {
    let inner = value.trim_matches(['\'', '"']);
    if !inner.is_empty() {
        found.push(inner.to_string());
    }
    let close: String = value
        .chars()
        .rev()
        .take_while(|c| *c == '\'' || *c == '"')
        .collect();
    let open: String = value
        .chars()
        .take_while(|c| *c == '\'' || *c == '"')
        .collect();
    if value.len() <= open.len() {
        return format!("{open}{MASK}");
    }
    format!("{open}{MASK}{close}")
}

/// The password of every `scheme://user:password@` in `word`.
fn redact_urls(word: &str, found: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(['/', '?', '#', '\'', '"', ' '])
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(a) => {
                let userinfo = &authority[..a];
                match userinfo.split_once(':') {
                    Some((user, password)) => {
                        found.push(password.to_string());
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[a..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Split a shell line into (leading whitespace, word) pairs; quotes keep spaces inside a
/// word and stay part of it. The last pair may have an empty word (trailing space).
fn words(line: &str) -> Vec<(&str, &str)> {
    let mut out = vec![];
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let word_start = i;
        let mut quote = None;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None if b.is_ascii_whitespace() => break,
                None => {}
            }
            i += 1;
        }
        out.push((&line[start..word_start], &line[word_start..i]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_options_urls_and_assignments_are_masked() {
        let cases = [
            (
                "mysqldump --password=hunter2 db",
                "mysqldump --password=*** db",
            ),
            ("mysqldump -phunter2 db", "mysqldump -p*** db"),
            ("redis-cli -a hunter2 --rdb -", "redis-cli -a *** --rdb -"),
            ("tool --password hunter2 x", "tool --password *** x"),
            ("tool -p hunter2", "tool -p ***"),
            (
                "pg_dump postgresql://app:hunter2@db:5432/app",
                "pg_dump postgresql://app:***@db:5432/app",
            ),
            (
                "PGPASSWORD=hunter2 pg_dump -h db",
                "PGPASSWORD=*** pg_dump -h db",
            ),
            (
                "tool --api-token='a b c' next",
                "tool --api-token='***' next",
            ),
            ("curl -s https://u@host/x", "curl -s https://u@host/x"),
            ("cat /var/lib/dump.sql", "cat /var/lib/dump.sql"),
            (
                "sh -c 'sleep 1000 & sleep 1000'",
                "sh -c 'sleep 1000 & sleep 1000'",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn masked_values_are_found_for_scrubbing_output() {
        let line = "mysql -phunter2 --token 'a b c' postgres://u:pw@h/db -p 1";
        assert_eq!(secret_values(line), vec!["a b c", "hunter2"]);
        assert_eq!(
            scrub("error: db hunter2 unknown", &secret_values(line)),
            "error: db *** unknown"
        );
    }

    #[test]
    fn haven_and_s3_variables_are_secrets() {
        for name in ["HAVEN_PASSWORD", "HAVEN_API_TOKEN", "AWS_SECRET_ACCESS_KEY"] {
            assert!(is_secret(OsStr::new(name)), "{name}");
            assert!(!tool_keeps(OsStr::new(name), &["HAVEN".into()]), "{name}");
        }
        assert!(tool_keeps(OsStr::new("PATH"), &[]));
        assert!(tool_keeps(OsStr::new("LC_ALL"), &[]));
        assert!(tool_keeps(OsStr::new("PGSSLMODE"), &["PG".into()]));
        assert!(!tool_keeps(OsStr::new("PGSSLMODE"), &[]));
    }
}
