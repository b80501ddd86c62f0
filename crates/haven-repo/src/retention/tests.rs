use super::*;
use crate::id::{BlobId, SnapshotId};
use crate::snapshot::{Snapshot, Summary};
use chrono::TimeZone;

fn snap(n: u8, time: DateTime<Utc>, tags: &[&str]) -> SnapshotEntry {
    SnapshotEntry {
        id: SnapshotId([n; 32]),
        snapshot: Snapshot {
            time,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/data".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: BlobId::default(),
            parent: None,
            stdin_name: None,
            summary: Summary::default(),
            program_version: String::new(),
        },
    }
}

/// Two snapshots a day (03:00 and 15:00) for 40 days.
fn forty_days() -> Vec<SnapshotEntry> {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
    (0..80)
        .map(|i| snap(i as u8, start + Duration::hours(12 * i), &[]))
        .collect()
}

fn kept(policy: &KeepPolicy) -> Vec<u8> {
    let d = apply(forty_days(), policy, GroupBy::default());
    assert_eq!(d.len(), 1);
    let mut k: Vec<u8> = d[0].keep.iter().map(|(s, _)| s.id.0[0]).collect();
    k.sort();
    k
}

#[test]
fn keep_daily_keeps_the_newest_of_each_of_the_last_n_days() {
    let k = kept(&KeepPolicy {
        daily: Some(15),
        ..Default::default()
    });
    assert_eq!(k.len(), 15);
    // The newest snapshot of each day is the 15:00 one: odd numbers 51..=79.
    assert_eq!(k, (51..=79).step_by(2).collect::<Vec<u8>>());
}

#[test]
fn keep_last_and_within_combine() {
    let k = kept(&KeepPolicy {
        last: Some(3),
        ..Default::default()
    });
    assert_eq!(k, vec![77, 78, 79]);
    let k = kept(&KeepPolicy {
        within: Some(parse_duration("2d").unwrap()),
        ..Default::default()
    });
    assert_eq!(
        k,
        vec![76, 77, 78, 79],
        "strictly newer than two days before the newest"
    );
}

#[test]
fn keep_weekly_and_monthly_use_calendar_buckets() {
    let k = kept(&KeepPolicy {
        monthly: Some(12),
        ..Default::default()
    });
    // January 2026 (newest: Jan 31 15:00 = #61) and February (newest: #79).
    assert_eq!(k, vec![61, 79]);
    let k = kept(&KeepPolicy {
        weekly: Some(2),
        ..Default::default()
    });
    assert_eq!(k.len(), 2);
    assert!(k.contains(&79));
}

#[test]
fn tags_and_groups() {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut list = vec![snap(1, t, &["keep"]), snap(2, t + Duration::hours(1), &[])];
    list[1].snapshot.hostname = "other".into();
    let d = apply(
        list,
        &KeepPolicy {
            tags: vec!["keep".into()],
            ..Default::default()
        },
        GroupBy::default(),
    );
    assert_eq!(d.len(), 2, "two hosts make two groups");
    let removed: Vec<u8> = d
        .iter()
        .flat_map(|g| g.remove.iter().map(|s| s.id.0[0]))
        .collect();
    assert_eq!(removed, vec![2]);
}

#[test]
fn durations_parse_and_bad_ones_explain() {
    assert_eq!(parse_duration("1y6m").unwrap(), Duration::days(365 + 180));
    assert_eq!(parse_duration("36h").unwrap(), Duration::hours(36));
    for bad in ["", "15", "d", "3x", "-1d"] {
        assert!(
            parse_duration(bad).unwrap_err().contains("e.g. 15d"),
            "{bad}"
        );
    }
}
