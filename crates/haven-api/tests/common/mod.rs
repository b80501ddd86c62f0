//! What the HTTP tests share: a fake daemon (a test double of `DaemonView` with fixed
//! tenants: `shop-eu` with a breached RPO, `blog-us` healthy with a backup running), a
//! server started on a free loopback port, and a minimal HTTP/1.1 client over `TcpStream`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use haven_api::{ApiConfig, ApiServer};
use haven_ops::daemon::view::*;

pub const TOKEN: &str = "s3cret-token-for-tests";
pub const BREACHED: &str = "shop-eu";
pub const HEALTHY: &str = "blog-us";
/// The job running for `blog-us` (a backup at 40 %), with a log.
pub const RUNNING_JOB: i64 = 7;
/// An error message with markup in it, which the dashboard must show as text.
pub const HOSTILE_ERROR: &str = "pg_dump: <b id=\"injected\">connection refused</b>";

pub struct FakeView {
    tenants: Vec<TenantStatus>,
    jobs: Vec<JobDetail>,
    /// Every `trigger` call: tenant and kind.
    pub triggers: Mutex<Vec<(String, JobKind)>>,
    /// Every `jobs` call: tenant filter and limit.
    pub job_queries: Mutex<Vec<(Option<String>, usize)>>,
    /// Calls of any method.
    pub calls: AtomicUsize,
    /// When set, `points` answers `Unavailable` (the catalog cannot be read).
    pub catalog_down: AtomicBool,
    readiness: Vec<TenantReadiness>,
    runs: Vec<DrRunDetail>,
    /// Every `start_runbook` call: runbook, mode, point.
    pub runbook_starts: Mutex<Vec<(String, RunbookMode, Option<String>)>>,
}

/// The one runbook of the fake daemon (restores `shop-eu`).
pub const RUNBOOK: &str = "shop-failover";
/// Its last drill (failed, with markup in its error) and an earlier good one.
pub const FAILED_DRILL: &str = "dr-20261205T040000Z-ab12";
pub const GOOD_DRILL: &str = "dr-20261204T040000Z-cd34";

fn drill(id: &str, state: &str, started: DateTime<Utc>, seconds: f64) -> DrRunSummary {
    DrRunSummary {
        id: id.into(),
        runbook: RUNBOOK.into(),
        tenant: BREACHED.into(),
        into: String::new(),
        mode: "drill".into(),
        point: Some("rp-0002".into()),
        state: state.into(),
        started,
        finished: Some(started + Duration::milliseconds((seconds * 1000.0) as i64)),
        seconds: Some(seconds),
        actor: "haven-daemon (drill-schedule)".into(),
        error: (state == "failed").then(|| HOSTILE_ERROR.to_string()),
    }
}

fn drill_summary(r: &DrRunSummary) -> haven_ops::readiness::DrillSummary {
    haven_ops::readiness::DrillSummary {
        run: r.id.clone(),
        runbook: r.runbook.clone(),
        state: r.state.clone(),
        started: r.started,
        finished: r.finished,
        seconds: r.seconds,
        point: r.point.clone(),
        error: r.error.clone(),
    }
}

/// With `breach`, `shop-eu`'s last drill failed and its RTO is above target; without, it
/// is ready.
fn dr_fixtures(now: DateTime<Utc>, breach: bool) -> (Vec<TenantReadiness>, Vec<DrRunDetail>) {
    use haven_ops::readiness::{PointRef, PredictedRto, Proof, ProofKind, RunbookReadiness};
    let failed = drill(FAILED_DRILL, "failed", now - Duration::hours(4), 12.0);
    let good = drill(GOOD_DRILL, "succeeded", now - Duration::hours(28), 1874.0);
    let step = |name: &str, state: &str, seconds: f64| DrStepSummary {
        name: name.into(),
        state: state.into(),
        attempts: 1,
        started: Some(good.started),
        finished: Some(good.started + Duration::seconds(seconds as i64)),
        seconds: Some(seconds),
        outputs: serde_json::json!({"lb_ip": "10.0.2.9"}),
        message: None,
    };
    let runs = vec![
        DrRunDetail {
            run: failed.clone(),
            steps: vec![step("restore", "failed", 12.0)],
            audit: vec![DrAuditLine {
                time: failed.started,
                step: Some("restore".into()),
                event: "step-failed".into(),
                detail: HOSTILE_ERROR.into(),
            }],
        },
        DrRunDetail {
            run: good.clone(),
            steps: vec![
                step("restore", "succeeded", 1800.0),
                step("dns", "succeeded", 74.0),
            ],
            audit: vec![DrAuditLine {
                time: good.started,
                step: None,
                event: "run-started".into(),
                detail: "by haven-daemon (drill-schedule)".into(),
            }],
        },
    ];
    let predicted = PredictedRto::Drill {
        seconds: 1874.0,
        run: GOOD_DRILL.into(),
        runbook: RUNBOOK.into(),
    };
    let mut shop = TenantReadiness {
        tenant: BREACHED.into(),
        newest_point: Some(PointRef {
            id: "rp-0003".into(),
            time: now - Duration::hours(5),
            bytes: 10 << 20,
            components: vec!["db".into(), "cache".into()],
        }),
        newest_verified: Some(Proof {
            point: "rp-0002".into(),
            point_time: now - Duration::hours(30),
            kind: ProofKind::Drill,
            by: GOOD_DRILL.into(),
            time: good.finished.unwrap(),
        }),
        verified_rpo_seconds: Some(30.0 * 3600.0),
        rpo_target_seconds: 3600,
        predicted_rto: Some(predicted.clone()),
        last_drill: Some(drill_summary(&failed)),
        runbooks: vec![RunbookReadiness {
            name: RUNBOOK.into(),
            into: "shop-dr".into(),
            rto_target_seconds: Some(1800),
            predicted_rto: Some(predicted),
            rto_exceeded: true,
            last_drill: Some(drill_summary(&failed)),
            drill_schedule: Some("0 4 * * *".into()),
        }],
        drift: vec![],
        problems: vec![
            format!("the last drill ({FAILED_DRILL}, runbook {RUNBOOK}) failed: {HOSTILE_ERROR}"),
            format!("runbook {RUNBOOK}: predicted RTO 1874 s exceeds its rto of 1800 s"),
        ],
        ready: false,
    };
    if !breach {
        shop.last_drill = Some(drill_summary(&good));
        shop.runbooks[0].last_drill = Some(drill_summary(&good));
        shop.runbooks[0].rto_target_seconds = Some(3600);
        shop.runbooks[0].rto_exceeded = false;
        shop.problems.clear();
        shop.ready = true;
    }
    let blog = TenantReadiness {
        tenant: HEALTHY.into(),
        newest_point: None,
        newest_verified: None,
        verified_rpo_seconds: None,
        rpo_target_seconds: 3600,
        predicted_rto: Some(PredictedRto::RestoreSpeed {
            seconds: 95.0,
            bytes: 1 << 30,
            bytes_per_second: (1u64 << 30) as f64 / 95.0,
            samples: 3,
        }),
        last_drill: None,
        runbooks: vec![],
        drift: vec![],
        problems: vec![],
        ready: true,
    };
    (vec![shop, blog], runs)
}

fn job(id: i64, kind: JobKind, tenant: &str, status: &str, started: DateTime<Utc>) -> JobSummary {
    JobSummary {
        id,
        kind,
        tenant: tenant.into(),
        trigger: "schedule".into(),
        status: status.into(),
        late: false,
        scheduled_for: Some(started),
        started: Some(started),
        finished: (status != "running").then(|| started + Duration::seconds(42)),
        attempts: 1,
        error: (status == "failed").then(|| HOSTILE_ERROR.to_string()),
        point: (status == "succeeded").then(|| format!("rp-{id:04}")),
        progress: JobProgress::default(),
    }
}

fn component(
    name: &str,
    kind: &str,
    last: Option<DateTime<Utc>>,
    target: u64,
    now: DateTime<Utc>,
) -> ComponentStatus {
    let rpo = last.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    ComponentStatus {
        name: name.into(),
        kind: kind.into(),
        last_success: last,
        effective_rpo_seconds: rpo,
        rpo_breached: rpo.is_none_or(|r| r > target as f64),
        last_duration_seconds: last.map(|_| 12.5),
        last_bytes_added: last.map(|_| 1_048_576),
    }
}

impl FakeView {
    /// `shop-eu` breached (last success 5 h ago, target 1 h, a failed backup since) unless
    /// `breach` is false; `blog-us` healthy with a backup running.
    pub fn new(breach: bool) -> Arc<Self> {
        let now = Utc::now();
        let hour = 3600;
        let shop_last = if breach {
            now - Duration::hours(5)
        } else {
            now - Duration::minutes(20)
        };
        let shop_components = vec![
            component("db", "postgres", Some(shop_last), hour, now),
            component("cache", "redis", Some(shop_last), hour, now),
        ];
        let mut shop_backup = job(3, JobKind::Backup, BREACHED, "succeeded", shop_last);
        shop_backup.finished = Some(shop_last);
        let shop_failed = job(
            5,
            JobKind::Backup,
            BREACHED,
            "failed",
            now - Duration::hours(1),
        );
        let shop = TenantStatus {
            name: BREACHED.into(),
            schedule: "0 * * * *".into(),
            next_run: Some(now + Duration::minutes(17)),
            rpo_target_seconds: hour,
            effective_rpo_seconds: shop_components[0].effective_rpo_seconds,
            rpo_breached: breach,
            last_backup: Some(shop_backup.clone()),
            last_verify: Some(VerifySummary {
                time: now - Duration::hours(6),
                point: "rp-0002".into(),
                passed: true,
                restore_seconds: 83.0,
            }),
            recent_failures: if breach {
                vec![FailureSummary {
                    time: now - Duration::hours(1),
                    job: 5,
                    kind: JobKind::Backup,
                    error: HOSTILE_ERROR.into(),
                }]
            } else {
                vec![]
            },
            running: None,
            components: shop_components,
        };

        let blog_last = now - Duration::minutes(10);
        let mut running = job(RUNNING_JOB, JobKind::Backup, HEALTHY, "running", now);
        running.trigger = "manual".into();
        running.progress = JobProgress {
            bytes_done: 400 * 1024 * 1024,
            bytes_total: 1000 * 1024 * 1024,
            component: Some("uploads".into()),
        };
        let blog_components = vec![component("uploads", "files", Some(blog_last), hour, now)];
        let blog = TenantStatus {
            name: HEALTHY.into(),
            schedule: "*/15 * * * *".into(),
            next_run: Some(now + Duration::minutes(5)),
            rpo_target_seconds: hour,
            effective_rpo_seconds: blog_components[0].effective_rpo_seconds,
            rpo_breached: false,
            last_backup: Some(job(6, JobKind::Backup, HEALTHY, "succeeded", blog_last)),
            last_verify: Some(VerifySummary {
                time: now - Duration::hours(2),
                point: "rp-0006".into(),
                passed: false,
                restore_seconds: 14.0,
            }),
            recent_failures: vec![],
            running: Some(running.clone()),
            components: blog_components,
        };

        let mut jobs = vec![
            JobDetail {
                summary: running,
                log: vec![
                    LogLine {
                        time: now,
                        line: "backup of blog-us started".into(),
                    },
                    LogLine {
                        time: now,
                        line: "uploads: 400 MiB of 1000 MiB".into(),
                    },
                ],
            },
            JobDetail {
                summary: job(6, JobKind::Backup, HEALTHY, "succeeded", blog_last),
                log: vec![],
            },
            JobDetail {
                summary: shop_backup,
                log: vec![],
            },
        ];
        if breach {
            jobs.insert(
                1,
                JobDetail {
                    summary: shop_failed,
                    log: vec![LogLine {
                        time: now,
                        line: HOSTILE_ERROR.into(),
                    }],
                },
            );
        }
        let (readiness, runs) = dr_fixtures(now, breach);
        Arc::new(FakeView {
            readiness,
            runs,
            runbook_starts: Mutex::new(vec![]),
            tenants: vec![shop, blog],
            jobs,
            triggers: Mutex::new(vec![]),
            job_queries: Mutex::new(vec![]),
            calls: AtomicUsize::new(0),
            catalog_down: AtomicBool::new(false),
        })
    }

    fn find(&self, name: &str) -> Result<&TenantStatus, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.tenants
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ViewError::UnknownTenant(name.into()))
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn triggered(&self) -> Vec<(String, JobKind)> {
        self.triggers.lock().unwrap().clone()
    }
}

impl DaemonView for FakeView {
    fn tenants(&self) -> Vec<TenantStatus> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.tenants.clone()
    }

    fn tenant(&self, name: &str) -> Result<TenantStatus, ViewError> {
        self.find(name).cloned()
    }

    fn points(&self, tenant: &str) -> Result<Vec<PointSummary>, ViewError> {
        let t = self.find(tenant)?;
        if self.catalog_down.load(Ordering::SeqCst) {
            return Err(ViewError::Unavailable(
                "the catalog is locked; retry in a moment".into(),
            ));
        }
        let last = t.last_backup.as_ref().unwrap();
        Ok(vec![PointSummary {
            id: last.point.clone().unwrap(),
            started: last.started.unwrap(),
            finished: last.finished.unwrap(),
            status: "complete".into(),
            components: t.components.iter().map(|c| c.name.clone()).collect(),
            bytes: 10 << 20,
            bytes_added: 1 << 20,
            seconds: 42.0,
            failures: vec![],
        }])
    }

    fn jobs(&self, tenant: Option<&str>, limit: usize) -> Vec<JobSummary> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.job_queries
            .lock()
            .unwrap()
            .push((tenant.map(String::from), limit));
        self.jobs
            .iter()
            .map(|j| j.summary.clone())
            .filter(|j| tenant.is_none_or(|t| j.tenant == t))
            .take(limit)
            .collect()
    }

    fn job(&self, id: i64) -> Result<JobDetail, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.jobs
            .iter()
            .find(|j| j.summary.id == id)
            .cloned()
            .ok_or(ViewError::UnknownJob(id))
    }

    fn trigger(&self, tenant: &str, kind: JobKind) -> Result<i64, ViewError> {
        let t = self.find(tenant)?;
        if t.running.as_ref().is_some_and(|j| j.kind == kind) {
            return Err(ViewError::Conflict(format!(
                "a {kind:?} of {tenant} is already running"
            )));
        }
        let mut triggers = self.triggers.lock().unwrap();
        triggers.push((tenant.into(), kind));
        Ok(100 + triggers.len() as i64)
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut tenants: Vec<TenantMetrics> = self
            .tenants
            .iter()
            .map(|t| TenantMetrics {
                tenant: t.name.clone(),
                rpo_target_seconds: t.rpo_target_seconds,
                backup_failures_total: t.recent_failures.len() as u64,
                backup_retries_total: 2,
                verify_failures_total: u64::from(t.last_verify.as_ref().is_some_and(|v| !v.passed)),
                components: t.components.clone(),
            })
            .collect();
        // A component never backed up, with a name that needs escaping.
        tenants[1].components.push(ComponentStatus {
            name: "odd \"name\"\\".into(),
            kind: "command".into(),
            last_success: None,
            effective_rpo_seconds: None,
            rpo_breached: true,
            last_duration_seconds: None,
            last_bytes_added: None,
        });
        MetricsSnapshot {
            tenants,
            queue_depth: 3,
            running_jobs: 1,
        }
    }

    fn readiness(&self) -> Result<Vec<TenantReadiness>, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.readiness.clone())
    }

    fn dr_runs(&self, limit: usize) -> Result<Vec<DrRunSummary>, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .runs
            .iter()
            .map(|r| r.run.clone())
            .take(limit)
            .collect())
    }

    fn dr_run(&self, id: &str) -> Result<DrRunDetail, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.runs
            .iter()
            .find(|r| r.run.id == id)
            .cloned()
            .ok_or_else(|| ViewError::UnknownRun(id.into()))
    }

    fn start_runbook(
        &self,
        runbook: &str,
        mode: RunbookMode,
        point: Option<String>,
    ) -> Result<String, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if runbook != RUNBOOK {
            return Err(ViewError::UnknownRunbook(runbook.into()));
        }
        if point.as_deref() == Some("gone") {
            return Err(ViewError::Conflict(format!(
                "runbook {runbook} could not start: no recovery point gone"
            )));
        }
        let mut starts = self.runbook_starts.lock().unwrap();
        starts.push((runbook.into(), mode, point));
        Ok(format!("dr-test-{}", starts.len()))
    }

    fn reload(&self) -> Result<ReloadReport, ViewError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(ReloadReport {
            file: "/etc/haven/haven.toml".into(),
            tenants: self.tenants.len(),
            changed: vec![self.tenants[0].name.clone()],
            ..Default::default()
        })
    }
}

/// The API over `view` on a free loopback port.
pub fn serve(view: Arc<FakeView>) -> ApiServer {
    haven_api::start(
        view,
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: TOKEN.into(),
        },
    )
    .expect("start the API")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`; `auth` is the whole Authorization value.
pub fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: 0\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the reply");
    let raw = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET with the right token.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, Some(&bearer(TOKEN)))
}

/// POST with the right token.
pub fn post(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "POST", path, Some(&bearer(TOKEN)))
}
