//! Fingerprints: integrity facts about a component's data, recorded at backup time and
//! compared after a restore. A fingerprint is a sorted map of named facts ("table
//! public.accounts" -> "rows=100000 sum=..."), so every kind reports differences the same
//! way and the recovery point stores them as plain JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// One line saying what the fingerprint covers, e.g. "4 tables, 1000040 rows".
    pub summary: String,
    /// The facts compared after a restore.
    pub facts: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn new(summary: impl Into<String>) -> Self {
        Fingerprint {
            summary: summary.into(),
            facts: BTreeMap::new(),
        }
    }

    pub fn fact(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.facts.insert(name.into(), value.into());
        self
    }

    /// How `actual` differs from `self` (the recorded fingerprint), one line per fact;
    /// empty when they match. At most `limit` lines plus a count of the rest.
    pub fn differences(&self, actual: &Fingerprint, limit: usize) -> Vec<String> {
        let mut out = vec![];
        for (name, want) in &self.facts {
            match actual.facts.get(name) {
                None => out.push(format!("{name}: missing (expected {want})")),
                Some(got) if got != want => out.push(format!("{name}: {got} (expected {want})")),
                Some(_) => {}
            }
        }
        for (name, got) in &actual.facts {
            if !self.facts.contains_key(name) {
                out.push(format!("{name}: {got} (not in the backup)"));
            }
        }
        if out.len() > limit {
            let rest = out.len() - limit;
            out.truncate(limit);
            out.push(format!("... and {rest} more differences"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_changed_missing_and_extra_facts() {
        let mut want = Fingerprint::new("x");
        want.fact("a", "1").fact("b", "2").fact("c", "3");
        let mut got = Fingerprint::new("x");
        got.fact("a", "1").fact("b", "5").fact("d", "4");
        assert!(want.differences(&want.clone(), 10).is_empty());
        assert_eq!(
            want.differences(&got, 10),
            vec![
                "b: 5 (expected 2)".to_string(),
                "c: missing (expected 3)".to_string(),
                "d: 4 (not in the backup)".to_string(),
            ]
        );
        assert_eq!(want.differences(&got, 1).len(), 2);
    }
}
