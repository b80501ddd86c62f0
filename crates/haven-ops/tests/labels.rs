//! Labelled recovery points against a real repository: a labelled point survives a
//! retention that would remove it, and is removed once unlabelled or once its label has
//! expired; the daemon's retention honours labels; labels that would mislead (a name
//! already on another point, a failed point, a malformed name) are refused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use haven_ops::backup::{backup_tenant, backup_tenant_labelled, Observer};
use haven_ops::daemon::clock::ManualClock;
use haven_ops::daemon::view::JobKind;
use haven_ops::daemon::{Daemon, DaemonOptions};
use haven_ops::label::{label_point, unlabel, NewLabel};
use haven_ops::point::{list_points, ListedPoint, PointChoice, PointStatus};
use haven_ops::retention::{apply_retention, apply_retention_at};
use haven_ops::Config;

const WAIT: Duration = Duration::from_secs(30);

/// Poll `cond` until it holds (short real-time steps), at most a minute.
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: Config,
}

impl Setup {
    /// Tenant `acme`: one files component; retention keeps only the newest point.
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("password"), "pw").unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.txt"), "v1").unwrap();
        let path = root.join("haven.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[daemon]
state-dir = "state"

[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
retention = {{ keep-last = 1 }}
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
"#,
                repo = root.join("repo").display(),
                data = data.display(),
            ),
        )
        .unwrap();
        Setup {
            _tmp: tmp,
            config: Config::load(&path).unwrap(),
            root,
        }
    }

    fn backup(&self) -> String {
        let p = backup_tenant(&self.config, "acme", WAIT, &Observer::quiet()).unwrap();
        assert_eq!(p.status, PointStatus::Complete);
        p.id
    }

    fn points(&self) -> Vec<ListedPoint> {
        let t = self.config.tenant("acme").unwrap();
        let (repo, _) = haven_ops::open_repository(self.config.repository_of(t), false).unwrap();
        let view = haven_repo::read::ReadView::open(repo).unwrap();
        list_points(&view, "acme").unwrap().0
    }

    fn ids(&self) -> Vec<String> {
        self.points().into_iter().map(|p| p.point.id).collect()
    }

    fn retention(&self) -> haven_ops::retention::RetentionReport {
        apply_retention(&self.config, "acme", WAIT, true, &Observer::quiet()).unwrap()
    }

    fn label(&self, point: &str, name: &str, expires_in: Option<Duration>) -> Result<(), String> {
        label_point(
            &self.config,
            "acme",
            &PointChoice::parse(point),
            &NewLabel {
                name: name.into(),
                expires_in,
            },
            WAIT,
            &Observer::quiet(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

#[test]
fn a_labelled_point_survives_retention_until_it_is_unlabelled() {
    let s = Setup::new();
    let (p1, p2, p3) = (s.backup(), s.backup(), s.backup());
    s.label(&p1, "pre-upgrade-2.4", None).unwrap();

    let report = s.retention();
    assert_eq!(report.removed, vec![p2.clone()], "{report:?}");
    assert_eq!(
        report.kept_by_label,
        vec![(p1.clone(), "pre-upgrade-2.4".to_string())]
    );
    assert_eq!(s.ids(), vec![p1.clone(), p3.clone()]);
    let points = s.points();
    assert_eq!(points[0].labels[0].name, "pre-upgrade-2.4");
    assert!(points[1].labels.is_empty());
    // The label resolves to its point.
    let chosen = haven_ops::point::choose_point(
        &points,
        "acme",
        &PointChoice::parse("label:pre-upgrade-2.4"),
    )
    .unwrap();
    assert_eq!(chosen.id, p1);

    // A second retention still keeps it.
    assert!(s.retention().removed.is_empty());
    assert_eq!(s.ids(), vec![p1.clone(), p3.clone()]);

    let removed = unlabel(
        &s.config,
        "acme",
        "pre-upgrade-2.4",
        WAIT,
        &Observer::quiet(),
    )
    .unwrap();
    assert_eq!(removed.point, p1);
    let report = s.retention();
    assert_eq!(report.removed, vec![p1.clone()], "{report:?}");
    assert_eq!(s.ids(), vec![p3]);
    let e = haven_ops::point::choose_point(
        &s.points(),
        "acme",
        &PointChoice::parse("label:pre-upgrade-2.4"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no label \"pre-upgrade-2.4\""), "{e}");
    let e = unlabel(
        &s.config,
        "acme",
        "pre-upgrade-2.4",
        WAIT,
        &Observer::quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("has no label") && e.contains("haven tenant points acme"),
        "{e}"
    );
}

#[test]
fn an_expired_label_no_longer_protects_its_point() {
    let s = Setup::new();
    let labelled = backup_tenant_labelled(
        &s.config,
        "acme",
        WAIT,
        &Observer::quiet(),
        &NewLabel {
            name: "for-an-hour".into(),
            expires_in: Some(Duration::from_secs(3600)),
        },
    )
    .unwrap();
    let p2 = s.backup();
    let expires = s.points()[0].labels[0].expires.expect("an expiry");
    assert!(expires > Utc::now() + chrono::Duration::minutes(59));
    let retention_at =
        |now| apply_retention_at(&s.config, "acme", WAIT, true, now, &Observer::quiet()).unwrap();
    // Before the expiry: kept by its label.
    let report = retention_at(expires - chrono::Duration::seconds(1));
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.kept_by_label.len(), 1, "{report:?}");
    // After it: the label is removed, then the point like any other.
    let report = retention_at(expires + chrono::Duration::seconds(1));
    assert_eq!(report.removed, vec![labelled.id.clone()], "{report:?}");
    assert_eq!(
        report.labels_expired,
        vec![(labelled.id, "for-an-hour".to_string())]
    );
    assert_eq!(s.ids(), vec![p2.clone()]);

    // An expired label no longer chooses its point for a restore, and says why.
    s.label(&p2, "brief", Some(Duration::from_secs(1))).unwrap();
    let expires = s.points()[0].labels[0].expires.expect("an expiry");
    wait_for("the label to expire", || Utc::now() > expires);
    let e = haven_ops::point::choose_point(&s.points(), "acme", &PointChoice::parse("label:brief"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expired") && e.contains(&p2), "{e}");
}

#[test]
fn the_daemons_retention_honours_labels() {
    let s = Setup::new();
    let (p1, p2, p3) = (s.backup(), s.backup(), s.backup());
    s.label(&p2, "keep-me", None).unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let daemon = Daemon::start(
        s.config.clone(),
        DaemonOptions {
            clock,
            lock_wait: WAIT,
            dr_runner: None,
        },
    )
    .unwrap();
    let view = daemon.view();
    let job = view.trigger("acme", JobKind::Retention).unwrap();
    wait_for("the retention job", || {
        let st = view.job(job).unwrap().summary.status;
        st != "queued" && st != "running"
    });
    assert_eq!(view.job(job).unwrap().summary.status, "succeeded");
    assert_eq!(s.ids(), vec![p2, p3]);
    assert!(!s.ids().contains(&p1));
    drop(daemon);
    assert!(s.root.join("state").exists());
}

#[test]
fn labels_that_would_mislead_are_refused() {
    let s = Setup::new();
    let (p1, p2) = (s.backup(), s.backup());
    s.label(&p1, "v1", Some(Duration::from_secs(3600))).unwrap();
    // The same name on another point: refused, naming the point that has it.
    let e = s.label(&p2, "v1", None).unwrap_err();
    assert!(
        e.contains(&p1) && e.contains("haven tenant unlabel acme v1"),
        "{e}"
    );
    // ... and before a labelled backup, which then makes no point.
    let e = backup_tenant_labelled(
        &s.config,
        "acme",
        WAIT,
        &Observer::quiet(),
        &NewLabel {
            name: "v1".into(),
            expires_in: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&p1) && e.contains("no backup was made"), "{e}");
    assert_eq!(s.ids(), vec![p1.clone(), p2.clone()]);
    // The same name on the same point: a new expiry, still one label.
    s.label(&p1, "v1", None).unwrap();
    let points = s.points();
    assert_eq!(points[0].labels.len(), 1);
    assert_eq!(points[0].labels[0].expires, None);
    let t = s.config.tenant("acme").unwrap();
    let (repo, _) = haven_ops::open_repository(s.config.repository_of(t), false).unwrap();
    let label_snapshots = repo
        .snapshots()
        .unwrap()
        .0
        .iter()
        .filter(|e| {
            e.snapshot
                .tags
                .iter()
                .any(|t| t == haven_ops::label::LABEL_TAG)
        })
        .count();
    assert_eq!(label_snapshots, 1, "the relabel replaced the old label");
    // Malformed names and unknown points.
    let e = s.label(&p2, "no spaces", None).unwrap_err();
    assert!(e.contains("not a label name"), "{e}");
    let e = s.label("ffffffffffff", "x", None).unwrap_err();
    assert!(e.contains("no recovery point"), "{e}");
    // A failed point cannot be labelled.
    std::fs::remove_dir_all(s.root.join("data")).unwrap();
    let failed = backup_tenant(&s.config, "acme", WAIT, &Observer::quiet()).unwrap();
    assert_eq!(failed.status, PointStatus::Failed);
    let e = s.label(&failed.id, "broken", None).unwrap_err();
    assert!(
        e.contains("failed") && e.contains("cannot be restored"),
        "{e}"
    );
}
