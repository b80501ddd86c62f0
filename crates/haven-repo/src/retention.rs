//! Retention: which snapshots a `--keep-*` policy keeps.
//!
//! Semantics follow restic's, which users know: snapshots are grouped (by host and
//! paths by default), each group sorted newest first; `keep-last N` keeps the N
//! newest; `keep-hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each
//! of the N most recent hours/days/ISO weeks/months/years that have snapshots;
//! `keep-within D` keeps everything newer than D before the group's newest snapshot;
//! `keep-tag T` keeps snapshots carrying tag T. A snapshot is kept if any rule keeps it.
//! Unlike restic, a policy whose rules can keep nothing (`keep-last 0`) is refused
//! ([`KeepPolicy::validate`]): removing every snapshot takes an explicit `--keep-none`.

use chrono::{DateTime, Datelike, Duration, Utc};

use crate::error::RepoError;
use crate::snapshot::SnapshotEntry;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Duration>,
    pub tags: Vec<String>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// True when rules are given but none can keep a snapshot (`--keep-last 0`,
    /// `--keep-within 0d`, ...): applied, the policy removes every snapshot.
    pub fn keeps_nothing(&self) -> bool {
        let counts = [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ];
        !self.is_empty()
            && self.tags.is_empty()
            && counts.iter().all(|n| n.unwrap_or(0) == 0)
            && self.within.is_none_or(|d| d <= Duration::zero())
    }

    /// Check a forget request before anything is removed: removing every snapshot
    /// takes the explicit `keep_none` (`forget --keep-none`), never a policy that
    /// happens to keep nothing, and `keep_none` takes no rule beside it.
    pub fn validate(&self, keep_none: bool) -> Result<(), RepoError> {
        if keep_none && !self.is_empty() {
            return Err(RepoError::InvalidInput(
                "--keep-none removes every snapshot; it cannot be combined with --keep-* rules"
                    .into(),
            ));
        }
        if self.keeps_nothing() {
            return Err(RepoError::InvalidInput(
                "this policy keeps no snapshot (every --keep-* rule is 0) and would remove all of them; if that is what you want, pass --keep-none instead".into(),
            ));
        }
        Ok(())
    }
}

/// How snapshots are grouped before the policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(format!(
                        "unknown grouping {other:?}; use host, paths and/or tags, comma-separated"
                    ))
                }
            }
        }
        Ok(g)
    }
}

/// Parse a duration such as `36h`, `15d`, `2w`, `6m` (months), `1y`, or `1y6m2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: use a number and a unit h, d, w, m (months) or y, e.g. 15d or 1y6m")
    };
    let mut total = Duration::zero();
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += match c {
            'h' => Duration::hours(n),
            'd' => Duration::days(n),
            'w' => Duration::weeks(n),
            'm' => Duration::days(30 * n),
            'y' => Duration::days(365 * n),
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// One group's decision.
#[derive(Debug, Clone)]
pub struct GroupDecision {
    pub key: String,
    /// Kept snapshots with the rules that kept them.
    pub keep: Vec<(SnapshotEntry, Vec<&'static str>)>,
    pub remove: Vec<SnapshotEntry>,
}

fn group_key(s: &SnapshotEntry, by: GroupBy) -> String {
    let mut parts = vec![];
    if by.host {
        parts.push(format!("host {}", s.snapshot.hostname));
    }
    if by.paths {
        parts.push(format!("paths {}", s.snapshot.paths.join(",")));
    }
    if by.tags {
        let mut t = s.snapshot.tags.clone();
        t.sort();
        parts.push(format!("tags {}", t.join(",")));
    }
    parts.join(", ")
}

type Bucket = fn(&DateTime<Utc>) -> i64;

fn buckets() -> [(&'static str, Bucket); 5] {
    [
        ("hourly", |t| t.timestamp().div_euclid(3600)),
        ("daily", |t| t.num_days_from_ce() as i64),
        ("weekly", |t| {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }),
        ("monthly", |t| t.year() as i64 * 100 + t.month() as i64),
        ("yearly", |t| t.year() as i64),
    ]
}

/// Apply the policy to snapshots (any order); returns one decision per group.
pub fn apply(
    snapshots: Vec<SnapshotEntry>,
    policy: &KeepPolicy,
    by: GroupBy,
) -> Vec<GroupDecision> {
    let mut groups: std::collections::BTreeMap<String, Vec<SnapshotEntry>> = Default::default();
    for s in snapshots {
        groups.entry(group_key(&s, by)).or_default().push(s);
    }
    let counts = [
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ];
    groups
        .into_iter()
        .map(|(key, mut list)| {
            list.sort_by(|a, b| b.snapshot.time.cmp(&a.snapshot.time).then(b.id.cmp(&a.id)));
            let newest = list
                .first()
                .map(|s| s.snapshot.time)
                .unwrap_or_else(Utc::now);
            let mut remaining: Vec<Option<u32>> = counts.to_vec();
            let mut last_bucket: Vec<Option<i64>> = vec![None; 5];
            let mut decision = GroupDecision {
                key,
                keep: vec![],
                remove: vec![],
            };
            for (i, s) in list.into_iter().enumerate() {
                let mut reasons = vec![];
                if policy.last.is_some_and(|n| (i as u32) < n) {
                    reasons.push("last");
                }
                for (k, (name, bucket)) in buckets().iter().enumerate() {
                    if let Some(n) = remaining[k].as_mut() {
                        let b = bucket(&s.snapshot.time);
                        if *n > 0 && last_bucket[k] != Some(b) {
                            *n -= 1;
                            last_bucket[k] = Some(b);
                            reasons.push(name);
                        }
                    }
                }
                if policy.within.is_some_and(|d| s.snapshot.time > newest - d) {
                    reasons.push("within");
                }
                if policy.tags.iter().any(|t| s.snapshot.tags.contains(t)) {
                    reasons.push("tag");
                }
                if reasons.is_empty() {
                    decision.remove.push(s);
                } else {
                    decision.keep.push((s, reasons));
                }
            }
            decision
        })
        .collect()
}

#[cfg(test)]
mod tests;
