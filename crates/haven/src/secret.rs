//! Where passphrases and key files come from: --key-file / HAVEN_KEY_FILE,
//! --password-file / HAVEN_PASSWORD_FILE, HAVEN_PASSWORD, else a prompt on the terminal.
//! Secrets are never printed or logged.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use haven_repo::keys::Secret;

use crate::cli::Global;

/// The secret that opens (or, with `confirm`, creates) the repository.
pub fn current(g: &Global, confirm: bool) -> Result<Secret> {
    if let Some(path) = &g.key_file {
        return Ok(Secret::from_key_file(path)?);
    }
    if let Some(path) = &g.password_file {
        return Ok(Secret::from_password_file(path)?);
    }
    if let Some(cmd) = &g.password_command {
        return from_command(cmd);
    }
    if let Ok(pw) = std::env::var("HAVEN_PASSWORD") {
        if !pw.is_empty() {
            return Ok(Secret::Passphrase(pw));
        }
    }
    prompt(
        if confirm {
            "new repository passphrase"
        } else {
            "repository passphrase"
        },
        confirm,
    )
}

/// The passphrase a command prints (`sh -c`, standard input closed; one trailing newline
/// is not part of it). Neither the command (it may hold a token) nor its output is ever
/// shown; its stderr is, on failure.
fn from_command(cmd: &str) -> Result<Secret> {
    let what = "the password command (--password-command / HAVEN_PASSWORD_COMMAND)";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!(
            "{what} failed ({}){}; fix it, or give the passphrase with --password-file",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
        );
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| anyhow::anyhow!("{what} printed bytes that are not UTF-8 text"))?;
    let pw = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if pw.is_empty() {
        bail!("{what} printed nothing; it must print the passphrase on its standard output");
    }
    Ok(Secret::Passphrase(pw.to_string()))
}

fn prompt(what: &str, confirm: bool) -> Result<Secret> {
    if !std::io::stderr().is_terminal() {
        bail!("no passphrase given: set HAVEN_PASSWORD_FILE to a file holding it (or HAVEN_PASSWORD), or run in a terminal to be asked");
    }
    let pw = rpassword::prompt_password(format!("enter {what}: "))
        .context("reading the passphrase from the terminal")?;
    if pw.is_empty() {
        bail!("an empty passphrase is not allowed");
    }
    if confirm
        && rpassword::prompt_password(format!("repeat {what}: "))
            .context("reading the passphrase")?
            != pw
    {
        bail!("the passphrases differ; nothing was changed");
    }
    Ok(Secret::Passphrase(pw))
}

/// A new secret for `key add` / `key passwd`.
pub fn new_secret(password_file: Option<&Path>, key_file: Option<&Path>) -> Result<Secret> {
    if let Some(path) = key_file {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = haven_repo::crypto::random_bytes::<64>().to_vec();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "creating the key file {} (it must not exist yet)",
                    path.display()
                )
            })?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(Secret::KeyFile(bytes));
    }
    if let Some(path) = password_file {
        return Ok(Secret::from_password_file(path)?);
    }
    prompt("new passphrase", true)
}
