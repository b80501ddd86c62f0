//! Regression tests for the programs a tenant operation runs (issue 10): work folders are
//! fresh, private and under the configured work directory; hooks and `command`
//! components see none of Haven's secrets and their command lines are stored redacted;
//! a hung command or hook is stopped with its whole process group, by its own timeout
//! or by the job's deadline.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use haven_ops::backup::{backup_tenant, Observer};
use haven_ops::point::{ComponentStatus, PointChoice, PointStatus};
use haven_ops::{restore_tenant, Config, RestoreRequest};

struct Setup {
    _tmp: tempfile::TempDir,
}

impl Setup {
    /// A local repository and tenant `acme` whose components are `components` (TOML).
    fn new(top: &str, components: &str) -> (Setup, Config) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("password"), "pw").unwrap();
        let text = format!(
            r#"{top}
[repositories.main]
url = "{repo}"
password-file = "password"

[tenants.acme]
repository = "main"
{components}
"#,
            repo = root.join("repo").display(),
        );
        let path = root.join("haven.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        (Setup { _tmp: tmp }, config)
    }
}

/// An observer that keeps every line.
fn recording() -> (Observer, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(vec![]));
    let l = lines.clone();
    (
        Observer::new(move |line| l.lock().unwrap().push(line.to_string())),
        lines,
    )
}

/// What a command recorded about the folder it ran in: path, `TMPDIR`, mode.
fn seen(file: &Path) -> (PathBuf, PathBuf, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next().unwrap());
    let tmpdir = PathBuf::from(lines.next().unwrap());
    let mode = lines.next().unwrap().trim().to_string();
    (dir, tmpdir, mode)
}

#[test]
fn work_folders_are_fresh_private_and_under_the_configured_work_dir() {
    let old_tmp = tempfile::tempdir().unwrap();
    // Where the old code put its folders (std::env::temp_dir()).
    std::env::set_var("TMPDIR", old_tmp.path());
    let record = |file: &str| {
        format!(r#"printf '%s\n%s\n' \"$PWD\" \"$TMPDIR\" > {file}; stat -c %a . >> {file}"#)
    };
    let probe = tempfile::tempdir().unwrap();
    let backup_seen = probe.path().join("backup-seen");
    let restore_seen = probe.path().join("restore-seen");
    let (s, config) = Setup::new(
        &format!("work-dir = \"{}\"", probe.path().join("work").display()),
        &format!(
            "[tenants.acme.components.db]\nkind = \"command\"\nbackup = \"{}; echo the-dump\"\nrestore = \"cat > /dev/null; {}\"\n",
            record(&backup_seen.display().to_string()),
            record(&restore_seen.display().to_string()),
        ),
    );
    let _ = &s;
    let work = probe.path().join("work");
    let point =
        backup_tenant(&config, "acme", Duration::from_secs(30), &Observer::quiet()).unwrap();
    assert_eq!(point.status, PointStatus::Complete, "{point:?}");

    // Another local user knows the point id (it is in the repository's listing) and
    // plants the restore's folder, with a dump of their choosing, at the old name.
    let planted = old_tmp
        .path()
        .join(format!("haven-{}-db-restore", point.id));
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(planted.join("dump"), "the attacker's dump").unwrap();

    let report = restore_tenant(
        &config,
        &RestoreRequest {
            tenant: "acme".into(),
            point: PointChoice::Latest,
            components: vec![],
            into: None,
            force: true,
            lock_wait: Duration::from_secs(30),
            parallelism: None,
            recovery: Default::default(),
        },
        &Observer::quiet(),
    )
    .unwrap();
    assert!(
        report.components.iter().all(|c| c.error.is_none()),
        "{report:?}"
    );

    // The planted folder was neither used nor touched.
    assert_eq!(
        std::fs::read_to_string(planted.join("dump")).unwrap(),
        "the attacker's dump"
    );
    let mut used = vec![];
    for file in [&backup_seen, &restore_seen] {
        let (dir, tmpdir, mode) = seen(file);
        assert_eq!(
            dir.parent(),
            Some(work.as_path()),
            "{dir:?} is under the work dir"
        );
        assert_eq!(tmpdir, dir, "TMPDIR is the private folder too");
        assert_eq!(mode, "700", "{dir:?} is private");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(&point.id),
            "{name} is not derived from the point"
        );
        assert!(name.len() >= 20, "{name} has a random part");
        assert!(!dir.exists(), "{dir:?} is removed after use");
        used.push(dir);
    }
    assert_ne!(used[0], used[1]);
    // Nothing of Haven's was made in the old place either.
    let haven_folders: Vec<_> = std::fs::read_dir(old_tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("haven-"))
        .map(|e| e.path())
        .collect();
    assert_eq!(haven_folders, vec![planted]);
}

const SECRETS: [(&str, &str); 4] = [
    ("HAVEN_PASSWORD", "repo-passphrase-6d1f"),
    ("HAVEN_API_TOKEN", "api-token-9c2e"),
    ("AWS_SECRET_ACCESS_KEY", "s3-secret-key-4b7a"),
    ("AWS_SESSION_TOKEN", "s3-session-0e3d"),
];

#[test]
fn hooks_and_commands_see_no_secrets_and_command_lines_are_stored_redacted() {
    for (k, v) in SECRETS {
        std::env::set_var(k, v);
    }
    let probe = tempfile::tempdir().unwrap();
    let data = probe.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let hook_env = probe.path().join("hook-env");
    let cmd_env = probe.path().join("cmd-env");
    let (_s, config) = Setup::new(
        "",
        &format!(
            r#"[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
pre = "env > {hook_env}"
[tenants.acme.components.db]
kind = "command"
backup = "env > {cmd_env}; echo --password=hunter2 -p hunter3 postgresql://app:hunter4@db/app > /dev/null; echo dump"
[tenants.acme.components.broken]
kind = "command"
backup = "echo mysqldump --password=hunter5 app: access denied >&2; exit 1"
"#,
            data = data.display(),
            hook_env = hook_env.display(),
            cmd_env = cmd_env.display(),
        ),
    );
    let (observer, lines) = recording();
    let point = backup_tenant(&config, "acme", Duration::from_secs(30), &observer).unwrap();
    assert_eq!(
        point.components["db"].status,
        ComponentStatus::Ok,
        "{point:?}"
    );
    assert_eq!(point.components["broken"].status, ComponentStatus::Failed);

    for file in [&hook_env, &cmd_env] {
        let env = std::fs::read_to_string(file).unwrap();
        for (k, v) in SECRETS {
            assert!(!env.contains(v), "{k} reached {file:?}");
        }
        assert!(env.contains("PATH="), "the rest of the environment is kept");
    }

    // The recovery point (stored in the repository, served by the API) and the log.
    let stored = serde_json::to_string(&point).unwrap();
    let log = lines.lock().unwrap().join("\n");
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
        assert!(!stored.contains(secret), "{secret} in the point: {stored}");
        assert!(!log.contains(secret), "{secret} in the log: {log}");
    }
    assert!(
        point.components["db"].source.contains("--password=***"),
        "{stored}"
    );
    assert!(
        point.components["broken"]
            .error
            .as_deref()
            .unwrap()
            .contains("--password=*** app: access denied"),
        "{stored}"
    );
}

#[path = "common/webhook.rs"]
mod webhook;

#[path = "../../haven-sources/tests/support/marked_processes.rs"]
mod marked_processes;
use marked_processes::{processes_marked, Reap};

#[track_caller]
fn assert_no_survivors(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_marked(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes survive: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the backup on another thread; it must end within a minute.
fn backup_within_a_minute(config: Config, observer: Observer) -> haven_ops::point::RecoveryPoint {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(backup_tenant(
            &config,
            "acme",
            Duration::from_secs(30),
            &observer,
        ));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a hung tool must not hold the backup (and the lock) for ever")
        .unwrap()
}

#[test]
fn a_hung_command_and_a_hung_hook_are_stopped_with_their_process_groups() {
    let mark = format!("MARK=hung-{}", std::process::id());
    let _reap = Reap(mark.clone());
    let probe = tempfile::tempdir().unwrap();
    let data = probe.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_s, config) = Setup::new(
        "",
        &format!(
            r#"[tenants.acme.components.db]
kind = "command"
backup = "export {mark}; sh -c 'sleep 1000 & sleep 1000'"
timeout = "2s"
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]
pre = "export {mark}; sh -c 'sleep 1000 & sleep 1000'"
timeout = "1s"
"#,
            data = data.display(),
        ),
    );
    let started = Instant::now();
    let point = backup_within_a_minute(config, Observer::quiet());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(point.status, PointStatus::Failed);
    let db = point.components["db"].error.as_deref().unwrap();
    assert!(db.contains("did not finish within 2s"), "{db}");
    let files = point.components["files"].error.as_deref().unwrap();
    assert!(
        files.contains("pre-hook") && files.contains("within 1s"),
        "{files}"
    );
    assert_no_survivors(&mark);
}

#[test]
fn the_jobs_deadline_stops_a_command_without_its_own_timeout() {
    let mark = format!("MARK=deadline-{}", std::process::id());
    let _reap = Reap(mark.clone());
    let (_s, config) = Setup::new(
        "",
        &format!(
            "[tenants.acme.components.db]\nkind = \"command\"\nbackup = \"export {mark}; sh -c 'sleep 1000 & sleep 1000'\"\n"
        ),
    );
    let mut observer = Observer::quiet();
    observer.deadline = Some(Instant::now() + Duration::from_secs(2));
    let point = backup_within_a_minute(config, observer);
    let db = point.components["db"].error.as_deref().unwrap();
    assert!(db.contains("job-timeout"), "{db}");
    assert_no_survivors(&mark);
}

mod daemon {

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use chrono::{TimeZone, Utc};
    use haven_ops::daemon::clock::ManualClock;
    use haven_ops::daemon::view::{DaemonView, JobKind};
    use haven_ops::daemon::{Daemon, DaemonOptions};

    use super::{assert_no_survivors, Setup};

    use super::webhook::Receiver;

    #[track_caller]
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn start(config: haven_ops::Config) -> Daemon {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap(),
        ));
        Daemon::start(
            config,
            DaemonOptions {
                clock,
                lock_wait: Duration::from_secs(30),
                dr_runner: None,
            },
        )
        .unwrap()
    }

    fn run(view: &Arc<dyn DaemonView>, kind: JobKind) -> haven_ops::daemon::view::JobSummary {
        let id = view.trigger("acme", kind).unwrap();
        wait_for("the job", || {
            let s = view.job(id).unwrap().summary.status;
            s != "queued" && s != "running"
        });
        view.job(id).unwrap().summary
    }

    #[test]
    fn a_failed_retention_run_is_alerted_and_resolved_by_the_next_good_one() {
        let hook = Receiver::start();
        let url = &hook.url;
        let data = tempfile::tempdir().unwrap();
        let (_s, config) = Setup::new(
            &format!("[daemon]\nstate-dir = \"state\"\n\n[alerts.ops]\nkind = \"webhook\"\nurl = \"{url}\"\n"),
            &format!(
                "[tenants.acme.components.files]\nkind = \"files\"\npaths = [\"{}\"]\n",
                data.path().display()
            ),
        );
        let daemon = start(config);
        let view = daemon.view();
        // No repository yet: retention cannot open it.
        let job = run(&view, JobKind::Retention);
        assert_eq!(job.status, "failed", "{job:?}");
        let alerted = |state: &str| {
            hook.received()
                .iter()
                .any(|b| b["kind"] == "retention-failed" && b["state"] == state)
        };
        wait_for("the retention alert", || alerted("firing"));
        assert_eq!(run(&view, JobKind::Backup).status, "succeeded");
        assert_eq!(run(&view, JobKind::Retention).status, "succeeded");
        wait_for("the resolution", || alerted("resolved"));
        daemon.stop(Duration::from_secs(10));
    }

    #[test]
    fn a_daemon_job_is_stopped_at_its_job_timeout() {
        let mark = format!("MARK=job-{}", std::process::id());
        let _reap = super::Reap(mark.clone());
        let (_s, config) = Setup::new(
            "[daemon]\nstate-dir = \"state\"\njob-timeout = \"2s\"\n",
            &format!(
                "retries = {{ attempts = 1, backoff = \"1s\" }}\n[tenants.acme.components.db]\nkind = \"command\"\nbackup = \"export {mark}; sh -c 'sleep 1000 & sleep 1000'\"\n"
            ),
        );
        let daemon = start(config);
        let view = daemon.view();
        let started = Instant::now();
        let job = run(&view, JobKind::Backup);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(job.status, "failed", "{job:?}");
        assert!(
            job.error.as_deref().unwrap_or("").contains("job-timeout"),
            "{job:?}"
        );
        assert_no_survivors(&mark);
        daemon.stop(Duration::from_secs(10));
    }
}
