//! The daemon against dead sites, real servers on loopback: a tenant's PostgreSQL and
//! Redis are killed (`kill -9`) and one `source-down:TENANT` alert naming both reaches a
//! real webhook receiver within seconds, long before the retries end; after a failover
//! (`failover::adopt`) the daemon stops retrying the dead servers and backs the tenant up
//! from the servers that serve it now, which resolves the alert. Also: retries of
//! different components run side by side; a short RPO is alerted within a minute or so
//! of its breach while a backup runs (the RPO grace scales with the target); `probe-every`
//! finds a dead system between backups; a reload recomputes schedules and refuses a
//! malformed config.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use haven_ops::catalog::Catalog;
use haven_ops::daemon::clock::{Clock, ManualClock, SystemClock};
use haven_ops::daemon::view::{DaemonView, JobKind};
use haven_ops::daemon::{Daemon, DaemonOptions};
use haven_ops::Config;
use haven_sources::servers::postgres::PostgresServer;
use haven_sources::servers::redis::RedisServer;

#[path = "common/webhook.rs"]
mod webhook;
use webhook::Receiver;

/// Poll `cond` (real time, short steps) until it holds or `limit` passes.
#[track_caller]
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}

/// The postmaster's pid, from its data directory.
fn postmaster_pid(pg: &PostgresServer) -> u32 {
    let text = std::fs::read_to_string(pg.dir().join("data/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn start(config: &Path, clock: Arc<dyn Clock>) -> Daemon {
    Daemon::start(
        Config::load(config).unwrap(),
        DaemonOptions {
            clock,
            lock_wait: Duration::from_secs(30),
            dr_runner: None,
        },
    )
    .unwrap()
}

fn finished(view: &Arc<dyn DaemonView>, id: i64) -> bool {
    let s = view.job(id).unwrap().summary.status;
    s != "queued" && s != "running"
}

fn alerts(hook: &Receiver, kind: &str, state: &str) -> Vec<serde_json::Value> {
    hook.received()
        .into_iter()
        .filter(|b| b["kind"] == kind && b["state"] == state)
        .collect()
}

fn write_config(root: &Path, hook: &str, tenants: &str) -> PathBuf {
    std::fs::write(root.join("password"), "pw").unwrap();
    let path = root.join("haven.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[daemon]
state-dir = "state"
concurrency = 2

[alerts.ops]
kind = "webhook"
url = "{hook}"

[repositories.main]
url = "{repo}"
password-file = "password"
{tenants}"#,
            repo = root.join("repo").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_dead_site_is_alerted_in_seconds_and_after_failover_the_new_servers_are_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    let pg = PostgresServer::start(&root.join("pg")).unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000);",
    )
    .unwrap();
    let redis = RedisServer::start(&root.join("redis")).unwrap();
    let pg_dr = PostgresServer::start(&root.join("pg-dr")).unwrap();
    pg_dr.create_database("app").unwrap();
    let redis_dr = RedisServer::start(&root.join("redis-dr")).unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello").unwrap();
    // A backup every 2 s; a failed component waits 5 minutes before its retry, as
    // on the game day: the alert must not wait for it.
    let config = write_config(
        root,
        &hook.url,
        &format!(
            r#"
[tenants.acme]
repository = "main"
schedule = "*/2 * * * * *"
rpo = "1h"
retention = {{ keep-last = 50 }}
retries = {{ attempts = 3, backoff = "5m" }}
[tenants.acme.components.db]
kind = "postgres"
url = "{pg}"
[tenants.acme.components.cache]
kind = "redis"
url = "{redis}"
[tenants.acme.components.files]
kind = "files"
paths = ["{data}"]

[tenants.acme-dr]
repository = "main"
retention = {{ keep-last = 50 }}
[tenants.acme-dr.components.db]
kind = "postgres"
url = "{pg_dr}"
[tenants.acme-dr.components.cache]
kind = "redis"
url = "{redis_dr}"
[tenants.acme-dr.components.files]
kind = "files"
paths = ["{data}"]
"#,
            pg = pg.url("app"),
            redis = redis.url(),
            pg_dr = pg_dr.url("app"),
            redis_dr = redis_dr.url(),
            data = data.display(),
        ),
    );
    let daemon = start(&config, Arc::new(SystemClock));
    let view = daemon.view();
    wait_for("a first complete point", Duration::from_secs(60), || {
        view.points("acme")
            .unwrap()
            .iter()
            .any(|p| p.status == "complete")
    });

    // The site dies.
    kill9(postmaster_pid(&pg));
    kill9(redis.pid());
    let killed = Instant::now();
    wait_for("the source-down alert", Duration::from_secs(60), || {
        !alerts(&hook, "source-down", "firing").is_empty()
    });
    let seconds = killed.elapsed().as_secs_f64();
    eprintln!("kill -9 of the site -> source-down alert delivered: {seconds:.2} s");
    // Anything else the receiver gets in the next moments counts too.
    std::thread::sleep(Duration::from_millis(500));
    let fired = alerts(&hook, "source-down", "firing");
    assert_eq!(fired.len(), 1, "one alert per tenant: {fired:#?}");
    assert_eq!(fired[0]["key"], "source-down:acme");
    let text = fired[0]["text"].as_str().unwrap();
    assert!(
        text.contains("db") && text.contains("cache") && !text.contains("files"),
        "names both dead components and only them: {text}"
    );
    assert!(
        alerts(&hook, "backup-failed", "firing").is_empty(),
        "the alert came before the retries ended"
    );
    let waiting = view
        .jobs(Some("acme"), 20)
        .into_iter()
        .find(|j| j.status == "running")
        .expect("a backup waiting to retry the dead components");
    wait_for(
        "both retries waiting side by side",
        Duration::from_secs(30),
        || {
            let log = view.job(waiting.id).unwrap().log;
            ["db", "cache"].iter().all(|c| {
                log.iter()
                    .any(|l| l.line.starts_with(&format!("{c}: attempt 1 of 3 failed")))
            })
        },
    );

    // A runbook moved acme onto acme-dr's servers (as `haven dr run` records it).
    let catalog = Catalog::open(&root.join("state/catalog.sqlite")).unwrap();
    let repo = haven_ops::location::canonical_location(&root.join("repo").display().to_string());
    catalog
        .bind_repositories([("acme", repo.as_str()), ("acme-dr", repo.as_str())])
        .unwrap();
    haven_ops::failover::adopt(&catalog, "acme", "acme-dr", "run-1", Utc::now()).unwrap();

    // The job waiting on the dead servers gives up at once; the next backup reads the
    // new ones and resolves the alert.
    wait_for("the waiting job to end", Duration::from_secs(30), || {
        finished(&view, waiting.id)
    });
    let log = view.job(waiting.id).unwrap().log;
    assert!(
        log.iter()
            .any(|l| l.line.contains("not retried") && l.line.contains("now served by acme-dr")),
        "{log:#?}"
    );
    let dr_port = format!(":{}/", pg_dr.port());
    wait_for(
        "a complete backup from acme-dr's servers",
        Duration::from_secs(60),
        || {
            view.jobs(Some("acme"), 20).iter().any(|j| {
                j.status == "succeeded"
                    && j.id > waiting.id
                    && view.job(j.id).unwrap().log.iter().any(|l| {
                        l.line.starts_with("db (postgres): backing up") && l.line.contains(&dr_port)
                    })
            })
        },
    );
    wait_for(
        "the source-down resolution",
        Duration::from_secs(30),
        || !alerts(&hook, "source-down", "resolved").is_empty(),
    );
    assert!(
        alerts(&hook, "backup-failed", "firing").is_empty(),
        "a failover is not a failed backup: {:#?}",
        hook.received()
    );
    daemon.stop(Duration::from_secs(10));
    drop(pg);
    drop(redis);
}

#[test]
fn retries_of_different_components_run_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    let broken = root.join("broken");
    std::fs::write(&broken, "").unwrap();
    // Each retry succeeds only once the other's retry has started: one after the other,
    // the first would give up after 20 s and the point would fail.
    let component = |me: &str, other: &str| {
        let started = |c: &str| root.join(format!("{c}.started")).display().to_string();
        format!(
            "[tenants.acme.components.{me}]\nkind = \"command\"\nbackup = \"if [ -e {broken} ]; then echo {me} offline >&2; exit 1; fi; touch {mine}; i=0; while [ ! -e {theirs} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; [ -e {theirs} ] || {{ echo no overlap >&2; exit 1; }}; echo {me}\"\n",
            broken = broken.display(),
            mine = started(me),
            theirs = started(other),
        )
    };
    let config = write_config(
        root,
        &hook.url,
        &format!(
            "[tenants.acme]\nrepository = \"main\"\nretention = {{ keep-last = 5 }}\nretries = {{ attempts = 2, backoff = \"1m\", parallel = 2 }}\n{}{}",
            component("ledger", "queue"),
            component("queue", "ledger")
        ),
    );
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let daemon = start(&config, clock.clone());
    let view = daemon.view();
    let id = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("both first tries to fail", Duration::from_secs(60), || {
        let log = view.job(id).unwrap().log;
        ["ledger", "queue"].iter().all(|c| {
            log.iter()
                .any(|l| l.line.starts_with(&format!("{c}: attempt 1 of 2 failed")))
        })
    });
    std::fs::remove_file(&broken).unwrap();
    clock.advance(chrono::Duration::minutes(1));
    wait_for("the job", Duration::from_secs(60), || finished(&view, id));
    let job = view.job(id).unwrap();
    assert_eq!(job.summary.status, "succeeded", "{:#?}", job.log);
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_short_rpo_is_alerted_within_a_minute_or_two_while_a_backup_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    let gate = root.join("gate");
    std::fs::write(&gate, "").unwrap();
    let config = write_config(
        root,
        &hook.url,
        &format!(
            "[tenants.acme]\nrepository = \"main\"\nrpo = \"2m\"\nretention = {{ keep-last = 5 }}\n[tenants.acme.components.ledger]\nkind = \"command\"\nbackup = \"while [ -e {gate} ]; do sleep 0.05; done; echo ledger\"\n",
            gate = gate.display()
        ),
    );
    // Recovery point times are wall-clock time: the test's clock starts at it.
    let t0 = Utc::now();
    let clock = Arc::new(ManualClock::new(t0));
    let daemon = start(&config, clock.clone());
    let view = daemon.view();
    std::fs::remove_file(&gate).unwrap();
    let first = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("the first backup", Duration::from_secs(60), || {
        finished(&view, first)
    });
    assert_eq!(view.job(first).unwrap().summary.status, "succeeded");
    // The next backup hangs: the breach is held back only for the grace (1 min for 2 min).
    std::fs::write(&gate, "").unwrap();
    let hung = view.trigger("acme", JobKind::Backup).unwrap();
    wait_for("the hung backup to start", Duration::from_secs(60), || {
        view.job(hung).unwrap().summary.status == "running"
    });
    clock.set(t0 + chrono::Duration::seconds(150));
    // Two RPO watch rounds (every 10 s of the daemon's clock) pass without an alert.
    for _ in 0..2 {
        clock.advance(chrono::Duration::seconds(11));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        alerts(&hook, "rpo-breached", "firing").is_empty(),
        "inside the grace: {:#?}",
        hook.received()
    );
    // 3 min 40 s after the last good point, 1 min 40 s into the breach: alerted (the
    // old 10-minute floor would have held it back until 12 min).
    clock.set(t0 + chrono::Duration::seconds(220));
    wait_for("the RPO alert", Duration::from_secs(30), || {
        !alerts(&hook, "rpo-breached", "firing").is_empty()
    });
    assert_eq!(view.job(hung).unwrap().summary.status, "running");
    std::fs::remove_file(&gate).unwrap();
    wait_for("the hung backup", Duration::from_secs(60), || {
        finished(&view, hung)
    });
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_reload_recomputes_changed_schedules_and_a_malformed_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello").unwrap();
    let tenant = |schedule: &str| {
        format!(
            "[tenants.acme]\nrepository = \"main\"\nschedule = \"{schedule}\"\nretention = {{ keep-last = 5 }}\n[tenants.acme.components.files]\nkind = \"files\"\npaths = [\"{}\"]\n",
            data.display()
        )
    };
    let config = write_config(root, &hook.url, &tenant("0 3 * * *"));
    let at = |h, m| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 20, h, m, 0).unwrap();
    let clock = Arc::new(ManualClock::new(at(2, 0)));
    let daemon = start(&config, clock.clone());
    let view = daemon.view();
    assert_eq!(view.tenant("acme").unwrap().next_run, Some(at(3, 0)));

    write_config(root, &hook.url, &tenant("30 2 * * *"));
    let report = daemon.reload().unwrap();
    assert_eq!(report.changed, ["acme"], "{report:?}");
    assert_eq!(view.tenant("acme").unwrap().next_run, Some(at(2, 30)));
    assert_eq!(view.tenant("acme").unwrap().schedule, "30 2 * * *");

    // Refused with file, line and key; the running config stays.
    std::fs::write(&config, "[daemon]\nconcurrency = 0\n").unwrap();
    let error = daemon.reload().unwrap_err().to_string();
    for part in ["haven.toml", "line 1", "daemon.concurrency"] {
        assert!(error.contains(part), "{part}: {error}");
    }
    let refused = view.reload().unwrap_err().to_string();
    assert!(refused.contains("running config stays"), "{refused}");
    assert_eq!(view.tenant("acme").unwrap().next_run, Some(at(2, 30)));
    clock.set(at(2, 30) + chrono::Duration::seconds(1));
    wait_for(
        "the backup at the new slot",
        Duration::from_secs(60),
        || {
            view.jobs(Some("acme"), 5)
                .first()
                .is_some_and(|j| j.status == "succeeded")
        },
    );
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn probe_every_alerts_a_dead_site_between_backups() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = Receiver::start();
    let cache = RedisServer::start(&root.join("cache")).unwrap();
    let sessions = RedisServer::start(&root.join("sessions")).unwrap();
    // A nightly backup: only the probes can see the site die during the day.
    let config = write_config(
        root,
        &hook.url,
        &format!(
            "[tenants.acme]\nrepository = \"main\"\nschedule = \"0 3 * * *\"\nprobe-every = \"1s\"\n[tenants.acme.components.cache]\nkind = \"redis\"\nurl = \"{}\"\n[tenants.acme.components.sessions]\nkind = \"redis\"\nurl = \"{}\"\n",
            cache.url(),
            sessions.url()
        ),
    );
    let daemon = start(&config, Arc::new(SystemClock));
    let view = daemon.view();
    // Healthy systems raise nothing, probe after probe.
    std::thread::sleep(Duration::from_secs(3));
    assert!(hook.received().is_empty(), "{:#?}", hook.received());
    kill9(cache.pid());
    let killed = Instant::now();
    wait_for("the source-down alert", Duration::from_secs(60), || {
        !alerts(&hook, "source-down", "firing").is_empty()
    });
    eprintln!(
        "kill -9 -> source-down from a probe: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let text = alerts(&hook, "source-down", "firing")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("cache") && !text.contains("sessions"),
        "only the dead one: {text}"
    );
    assert!(
        view.jobs(Some("acme"), 10).is_empty(),
        "no backup ran: the probe found it"
    );
    daemon.stop(Duration::from_secs(10));
    drop(sessions);
}
