use anyhow::Result;
use haven_repo::keys::KdfParams;

use crate::cli::{Global, NewSecretArgs};

fn kdf(a: &NewSecretArgs) -> KdfParams {
    KdfParams {
        memory_kib: a.kdf_memory_mib << 10,
        iterations: a.kdf_iterations,
        parallelism: 1,
    }
}

pub fn list(g: &Global) -> Result<i32> {
    let repo = super::open(g, super::Read)?;
    let keys = repo.list_keys()?;
    if g.json {
        crate::output::json(&keys);
        return Ok(0);
    }
    println!(
        "  {:<10} {:<11} {:<20} {:<16} user",
        "id", "kind", "created (UTC)", "host"
    );
    for k in keys {
        let created = chrono::DateTime::from_timestamp(k.meta.created_unix, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{} {:<10} {:<11} {:<20} {:<16} {}",
            if k.current { "*" } else { " " },
            k.id.short(),
            k.kind,
            created,
            k.meta.host,
            k.meta.user
        );
    }
    Ok(0)
}

pub fn add(g: &Global, a: NewSecretArgs) -> Result<i32> {
    let repo = super::open(g, super::Write)?;
    let _lock = super::lock(g, &repo, super::Write, "key add")?;
    let secret =
        crate::secret::new_secret(a.new_password_file.as_deref(), a.new_key_file.as_deref())?;
    let id = repo.add_key(&secret, kdf(&a))?;
    super::report(
        g,
        format!("added key slot {}", id.short()),
        serde_json::json!({"added": id}),
    );
    Ok(0)
}

pub fn remove(g: &Global, id: &str) -> Result<i32> {
    let repo = super::open(g, super::Write)?;
    let _lock = super::lock(g, &repo, super::Write, "key remove")?;
    let removed = repo.remove_key(id)?;
    super::report(
        g,
        format!("removed key slot {}", removed.short()),
        serde_json::json!({"removed": removed}),
    );
    Ok(0)
}

pub fn passwd(g: &Global, a: NewSecretArgs) -> Result<i32> {
    let mut repo = super::open(g, super::Write)?;
    let _lock = super::lock(g, &repo, super::Write, "key passwd")?;
    let secret =
        crate::secret::new_secret(a.new_password_file.as_deref(), a.new_key_file.as_deref())?;
    let id = repo.change_password(&secret, kdf(&a))?;
    super::report(
        g,
        format!("replaced the key slot in use with {}", id.short()),
        serde_json::json!({"new_slot": id}),
    );
    Ok(0)
}
