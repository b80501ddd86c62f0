//! `haven tag --add T --remove T | --set T <snapshot...>`: change the tags of snapshots.
//!
//! Snapshot files are never modified (FORMAT.md section 15), so a snapshot whose tags
//! change is written again under a new id and the old file removed (as restic does; the
//! output maps old ids to new ones). Snapshots whose tags would not change are left
//! alone. Tags starting with `haven-` belong to the tenant layer (recovery points, WAL,
//! labels): the snapshots carrying them are referenced by id and are refused, as are
//! such tags in `--add`, `--remove` and `--set`. Every snapshot is resolved and checked
//! before the first one is changed.

use anyhow::{bail, Result};
use haven_repo::snapshot::SnapshotEntry;

use crate::cli::{Global, TagArgs};

/// Tags with this prefix are written and read by the tenant layer only.
const RESERVED_PREFIX: &str = "haven-";

pub fn run(g: &Global, a: TagArgs) -> Result<i32> {
    let set: Vec<String> = a.set.iter().filter(|t| !t.is_empty()).cloned().collect();
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        bail!("nothing to change: give --add TAG, --remove TAG or --set TAG");
    }
    for t in a.add.iter().chain(&a.remove).chain(&set) {
        if t.is_empty() {
            bail!("an empty tag cannot be added or removed; `--set ''` removes every tag");
        }
        if t.starts_with(RESERVED_PREFIX) {
            bail!("tags starting with `{RESERVED_PREFIX}` are kept by haven's tenant layer and cannot be changed by hand: choose another tag");
        }
    }
    let repo = super::open(g, super::Write)?;
    let lock = super::lock(g, &repo, super::Write, "tag")?;
    let mut chosen: Vec<SnapshotEntry> = vec![];
    for spec in &a.snapshots {
        let s = repo.find_snapshot(spec)?;
        if let Some(t) = s
            .snapshot
            .tags
            .iter()
            .find(|t| t.starts_with(RESERVED_PREFIX))
        {
            bail!(
                "snapshot {} belongs to a tenant recovery point or WAL archive (tag {t}) and is referenced by its id; it cannot be retagged (label points with `haven tenant label`)",
                s.id.short()
            );
        }
        if !chosen.iter().any(|c| c.id == s.id) {
            chosen.push(s);
        }
    }
    let mut report = vec![];
    for s in chosen {
        let tags = new_tags(
            &s.snapshot.tags,
            &a.add,
            &a.remove,
            (!a.set.is_empty()).then_some(&set),
        );
        if tags == s.snapshot.tags {
            super::say(g, format!("snapshot {}: tags unchanged", s.id.short()));
            report.push(serde_json::json!({"snapshot": s.id, "new_id": null, "tags": tags}));
            continue;
        }
        let mut snap = s.snapshot.clone();
        snap.tags = tags.clone();
        let id = repo.replace_snapshot(&s.id, &snap)?;
        super::say(
            g,
            format!(
                "snapshot {} is now {}: tags [{}]",
                s.id.short(),
                id.short(),
                tags.join(", ")
            ),
        );
        report.push(serde_json::json!({"snapshot": s.id, "new_id": id, "tags": tags}));
    }
    drop(lock);
    if g.json {
        crate::output::json(&report);
    }
    Ok(0)
}

/// `old` with `remove` taken out and `add` appended (each once, order kept), or `set`.
fn new_tags(
    old: &[String],
    add: &[String],
    remove: &[String],
    set: Option<&Vec<String>>,
) -> Vec<String> {
    let mut tags: Vec<String> = vec![];
    let base = set.map(|s| s.as_slice()).unwrap_or(old);
    for t in base.iter().chain(add) {
        if !remove.contains(t) && !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn add_remove_and_set_keep_order_and_each_tag_once() {
        let old = v(&["nightly", "db"]);
        assert_eq!(
            new_tags(&old, &v(&["release", "db"]), &v(&["nightly"]), None),
            v(&["db", "release"])
        );
        assert_eq!(new_tags(&old, &[], &[], Some(&v(&["a", "a"]))), v(&["a"]));
        assert_eq!(
            new_tags(&old, &[], &[], Some(&vec![])),
            Vec::<String>::new()
        );
        assert_eq!(new_tags(&old, &v(&["nightly"]), &[], None), old);
    }
}
