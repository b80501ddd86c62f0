//! The mirror: the shared contract suite on 2 and 3 sites, degraded writes, failover,
//! compare and repair.

use std::sync::{Arc, Mutex};

use haven_store::{
    mirror_stack, parse_mirror_sites, suite, DisagreementKind, DynBackend, ErrorClass, FileKind,
    FlakyBackend, MemoryBackend, MinSites, MirrorBackend, MirrorEvent, ReadBackend, RetryPolicy,
    StackOptions, WriteBackend, MIRRORED_KINDS,
};

fn memory_sites(n: usize) -> Vec<(String, DynBackend)> {
    (0..n)
        .map(|i| {
            let b: DynBackend = Arc::new(MemoryBackend::new());
            (format!("site{i}"), b)
        })
        .collect()
}

fn flaky_sites(n: usize) -> (Vec<Arc<FlakyBackend>>, Vec<(String, DynBackend)>) {
    let raw: Vec<Arc<FlakyBackend>> = (0..n).map(|_| Arc::new(FlakyBackend::new())).collect();
    let sites = raw
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("site{i}"), b.clone() as DynBackend))
        .collect();
    (raw, sites)
}

/// Every site holds the same files with the same bytes.
fn assert_identical(sites: &[Arc<FlakyBackend>]) {
    for kind in MIRRORED_KINDS {
        let first = sites[0].list(kind).unwrap();
        for s in &sites[1..] {
            assert_eq!(s.list(kind).unwrap(), first, "{kind:?} listings differ");
            for f in &first {
                assert_eq!(
                    s.read(kind, &f.name).unwrap(),
                    sites[0].read(kind, &f.name).unwrap(),
                    "{kind:?} {} differs",
                    f.name
                );
            }
        }
    }
}

#[test]
fn mirror_of_two_sites_meets_the_contract() {
    suite::run_all(&MirrorBackend::new(memory_sites(2), MinSites::All).unwrap());
}

#[test]
fn mirror_of_three_sites_meets_the_contract() {
    suite::run_all(&MirrorBackend::new(memory_sites(3), MinSites::AtLeast(2)).unwrap());
}

#[test]
fn mirror_of_composed_sites_meets_the_contract() {
    let options = StackOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
        },
        connections: 2,
    };
    suite::run_all(&mirror_stack(memory_sites(3), MinSites::All, &options).unwrap());
}

#[test]
fn down_site_with_min_sites_all_fails_writes_naming_it() {
    let (raw, sites) = flaky_sites(3);
    let m = MirrorBackend::new(sites, MinSites::All).unwrap();
    m.create().unwrap();
    raw[1].set_down(true);
    let err = m.write(FileKind::Pack, "aa01", b"pack").unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    let msg = err.to_string();
    assert!(msg.contains("failed sites: site1 ("), "{msg}");
    assert!(!msg.contains("site0:") && !msg.contains("site2:"), "{msg}");
    // Reads still fail over to the sites that are up.
    raw[1].set_down(false);
    raw[0].set_down(true);
    assert_eq!(m.read(FileKind::Pack, "aa01").unwrap(), b"pack");
}

#[test]
fn degraded_writes_then_compare_and_repair() {
    let (raw, sites) = flaky_sites(3);
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    let m = MirrorBackend::new(sites, MinSites::AtLeast(1))
        .unwrap()
        .with_warning_hook(move |e| w.lock().unwrap().push(e.clone()));
    m.create().unwrap();
    m.write(FileKind::Config, "", b"config").unwrap();
    m.write(FileKind::Pack, "aa01", b"before").unwrap();
    assert!(m.compare().in_sync());

    // site1 goes down: writes continue degraded and are recorded.
    raw[1].set_down(true);
    m.write(FileKind::Pack, "bb02", b"pack while down").unwrap();
    m.write(FileKind::Index, "i1", b"index").unwrap();
    m.write(FileKind::Snapshot, "s1", b"snapshot").unwrap();
    assert_eq!(m.degraded_sites().get("site1"), Some(&3));
    assert_eq!(
        warnings.lock().unwrap().len(),
        3,
        "the hook saw each degraded write"
    );
    assert!(matches!(
        &m.events()[0],
        MirrorEvent::Degraded { operation: "write", missed, .. } if missed[0].0 == "site1"
    ));
    // Reads are served, listings are the union.
    assert_eq!(m.read(FileKind::Pack, "bb02").unwrap(), b"pack while down");
    assert_eq!(m.list(FileKind::Pack).unwrap().len(), 2);
    let report = m.compare();
    assert_eq!(report.unreachable.len(), 1);
    assert_eq!(report.unreachable[0].0, "site1");

    // site1 returns: compare names exactly what it lacks; reads fail over and record it.
    raw[1].set_down(false);
    let report = m.compare();
    assert!(report.unreachable.is_empty());
    let mut missing: Vec<_> = report
        .disagreements
        .iter()
        .map(|d| (d.site.as_str(), d.kind, d.name.as_str(), d.problem.clone()))
        .collect();
    missing.sort();
    assert_eq!(
        missing,
        vec![
            ("site1", FileKind::Pack, "bb02", DisagreementKind::Missing),
            ("site1", FileKind::Index, "i1", DisagreementKind::Missing),
            ("site1", FileKind::Snapshot, "s1", DisagreementKind::Missing),
        ]
    );
    m.take_events();
    let reordered = MirrorBackend::new(
        vec![
            ("site1".to_string(), raw[1].clone() as DynBackend),
            ("site0".to_string(), raw[0].clone() as DynBackend),
        ],
        MinSites::All,
    )
    .unwrap();
    assert_eq!(reordered.read(FileKind::Index, "i1").unwrap(), b"index");
    assert!(matches!(
        &reordered.events()[0],
        MirrorEvent::Divergence { missing_on, found_on, .. }
            if missing_on == &vec!["site1".to_string()] && found_on == "site0"
    ));

    // Repair copies exactly the three files, verifies them, and the sites are identical.
    let repair = m.repair();
    assert!(repair.is_complete(), "{:?}", repair.problems);
    assert_eq!(repair.copied_to("site1"), 3);
    assert_eq!(repair.copied.len(), 3);
    assert!(m.compare().in_sync());
    assert_identical(&raw);
    // A second repair has nothing to do.
    assert!(m.repair().copied.is_empty());
}

#[test]
fn repair_creates_a_site_that_missed_init() {
    let (raw, sites) = flaky_sites(2);
    let m = MirrorBackend::new(sites, MinSites::AtLeast(1)).unwrap();
    raw[1].set_down(true);
    m.create().unwrap();
    m.write(FileKind::Marker, "", b"marker").unwrap();
    m.write(FileKind::Key, "k1", b"key").unwrap();
    raw[1].set_down(false);
    let repair = m.repair();
    assert!(repair.is_complete(), "{:?}", repair.problems);
    assert_eq!(repair.copied_to("site1"), 2);
    assert_identical(&raw);
}

#[test]
fn size_conflicts_are_reported_not_repaired() {
    let (raw, sites) = flaky_sites(2);
    let m = MirrorBackend::new(sites, MinSites::All).unwrap();
    m.create().unwrap();
    m.write(FileKind::Pack, "cc03", b"good").unwrap();
    raw[1]
        .inner()
        .tamper(FileKind::Pack, "cc03", b"truncat".to_vec());
    let report = m.compare();
    assert_eq!(report.disagreements.len(), 1);
    assert_eq!(
        report.disagreements[0].problem,
        DisagreementKind::Size {
            here: 7,
            elsewhere: 4
        }
    );
    let repair = m.repair();
    assert!(repair.copied.is_empty());
    assert_eq!(repair.problems.len(), 1, "{:?}", repair.problems);
    m.list(FileKind::Pack).unwrap();
    assert!(m
        .events()
        .iter()
        .any(|e| matches!(e, MirrorEvent::SizeMismatch { .. })));
}

#[test]
fn mirror_locations_parse() {
    let sites =
        parse_mirror_sites("siteA=s3:http://a.example:3900/b/x,siteB=s3:http://b.example:3900/b/x")
            .unwrap();
    assert_eq!(
        sites,
        vec![
            (
                "siteA".to_string(),
                "s3:http://a.example:3900/b/x".to_string()
            ),
            (
                "siteB".to_string(),
                "s3:http://b.example:3900/b/x".to_string()
            ),
        ]
    );
    assert!(parse_mirror_sites("a=/x,a=/y").is_err());
    assert!(parse_mirror_sites("a=/x,/y").is_err());
    assert!(parse_mirror_sites("a=/x").is_err());
}

#[test]
fn a_site_that_failed_is_skipped_for_a_while_instead_of_costing_every_write() {
    let (raw, sites) = flaky_sites(2);
    let mirror = MirrorBackend::new(sites, MinSites::AtLeast(1)).unwrap();
    mirror.create().unwrap();
    raw[1].set_down(true);
    let before = raw[1].calls();
    for i in 0..20 {
        mirror
            .write(FileKind::Pack, &format!("{i:064x}"), b"data")
            .expect("degraded writes succeed");
    }
    assert_eq!(
        raw[1].calls() - before,
        1,
        "after its first failure the down site is not asked again within the hold period"
    );
    assert_eq!(mirror.degraded_sites().get("site1"), Some(&20));
    // Reads do not wait on it either: the answering site is tried first.
    assert_eq!(
        mirror.read(FileKind::Pack, &format!("{:064x}", 3)).unwrap(),
        b"data"
    );
    assert_eq!(raw[1].calls() - before, 1);
    // An explicit repair looks at every site again.
    raw[1].set_down(false);
    let report = mirror.repair();
    assert!(report.is_complete(), "{report:?}");
    assert_identical(&raw);
}
