//! The dashboard in real headless Chromium (Debian's `chromium`) over a fake daemon: the
//! DOM after the page's script ran (`--dump-dom`), and a 1280x800 screenshot whose pixels
//! are counted: a breached RPO shows as a red cell, a page with none shows no red.
//! The page's script gets time through `--virtual-time-budget` (virtual time waits for the
//! page's requests), not through sleeps.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn chromium_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .expect("no chromium on PATH: install Debian's package: apt-get install -y chromium")
}

/// Runs headless Chromium on `url` with `extra` (`--dump-dom` or `--screenshot=...`).
fn chromium(profile: &Path, url: &str, extra: &str) -> Output {
    let mut child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,800",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = read(Box::new(stdout));
        let err = read(Box::new(stderr));
        let status = child.wait();
        let _ = tx.send((status, out.join().unwrap(), err.join().unwrap()));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((status, stdout, stderr)) => Output {
            status: status.expect("wait for chromium"),
            stdout,
            stderr,
        },
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("chromium did not finish within 120 s on {url}");
        }
    }
}

fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), url, "--dump-dom");
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot's pixels as RGB.
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Picture {
    fn count(&self, pred: impl Fn([u8; 3]) -> bool) -> usize {
        self.rgb.iter().filter(|&&p| pred(p)).count()
    }
}

fn strongly_red([r, g, b]: [u8; 3]) -> bool {
    r >= 180 && g <= 80 && b <= 80
}

fn strongly_green([r, g, b]: [u8; 3]) -> bool {
    g >= 100 && r <= 80 && b <= 80
}

fn screenshot(url: &str, keep_as: &str) -> Picture {
    let profile = tempfile::tempdir().unwrap();
    let file = profile.path().join("shot.png");
    let out = chromium(
        profile.path(),
        url,
        &format!("--screenshot={}", file.display()),
    );
    assert!(
        out.status.success() && file.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    // Kept for a person to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(keep_as);
    std::fs::write(&keep, &bytes).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Picture {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// The `<tr>` of `tenant` in the dumped DOM.
fn row<'a>(dom: &'a str, tenant: &str) -> &'a str {
    let start = dom
        .find(&format!("data-tenant=\"{tenant}\""))
        .unwrap_or_else(|| panic!("no row for {tenant} in the page:\n{dom}"));
    let end = start + dom[start..].find("</tr>").unwrap();
    &dom[start..end]
}

/// The disaster-recovery `<tr>` of `tenant` in the dumped DOM.
fn dr_row<'a>(dom: &'a str, tenant: &str) -> &'a str {
    let start = dom
        .find(&format!("data-dr-tenant=\"{tenant}\""))
        .unwrap_or_else(|| panic!("no DR row for {tenant} in the page:\n{dom}"));
    let end = start + dom[start..].find("</tr>").unwrap();
    &dom[start..end]
}

fn url(server: &haven_api::ApiServer, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("http://{}/#token={t}", server.addr()),
        None => format!("http://{}/", server.addr()),
    }
}

#[test]
fn dashboard_marks_the_breached_tenant_red_and_shows_progress() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    let dom = dump_dom(&url(&server, Some(TOKEN)));

    let shop = row(&dom, BREACHED);
    assert!(shop.contains("data-breached=\"true\""), "{shop}");
    assert!(shop.contains("class=\"rpo breached\""), "{shop}");
    assert!(shop.contains("BREACHED 5h 00m"), "{shop}");
    assert!(shop.contains("target 1h 00m"), "{shop}");
    assert!(
        shop.contains("restore 1m 23s"),
        "last verify's restore time: {shop}"
    );
    assert!(
        shop.contains("in 17m") || shop.contains("in 16m"),
        "next run: {shop}"
    );
    // The failure's message is shown as text, its markup inert.
    assert!(shop.contains("connection refused"), "{shop}");
    assert!(
        !dom.contains("<b id=\"injected\">"),
        "markup from the daemon was rendered"
    );

    let blog = row(&dom, HEALTHY);
    assert!(blog.contains("data-breached=\"false\""), "{blog}");
    assert!(blog.contains("class=\"rpo ok\""), "{blog}");
    assert!(!blog.contains("BREACHED"), "{blog}");
    assert!(blog.contains("OK 10m"), "{blog}");
    assert!(blog.contains("FAILED"), "the failed verify: {blog}");
    // The running backup's progress.
    assert!(blog.contains("backup running: uploads"), "{blog}");
    assert!(
        blog.contains("role=\"progressbar\" aria-valuenow=\"40\""),
        "{blog}"
    );
    assert!(blog.contains("400.0 MiB / 1000.0 MiB (40%)"), "{blog}");
    assert!(dom.contains("2 tenants · 1 breached"), "header summary");
    // Recent jobs.
    assert!(
        dom.contains(&format!("data-job=\"{RUNNING_JOB}\"")),
        "jobs table"
    );

    // Disaster recovery: readiness, the measured RTO of the last good drill, the failed
    // last drill with its (inert) error, the runbook over its RTO target.
    let dr = dr_row(&dom, BREACHED);
    assert!(dr.contains("data-ready=\"false\""), "{dr}");
    assert!(dr.contains("NOT READY"), "{dr}");
    assert!(
        dr.contains(&format!("31m 14s (drill {GOOD_DRILL})")),
        "{dr}"
    );
    assert!(dr.contains("failed</span> · 12s"), "{dr}");
    assert!(dr.contains(FAILED_DRILL), "{dr}");
    assert!(dr.contains("shop-failover → shop-dr"), "{dr}");
    assert!(
        dr.contains("rto 30m 00s · EXCEEDED · drills 0 4 * * *"),
        "{dr}"
    );
    assert!(
        dr.contains("proven rp-0002 by drill · verified RPO 30h 00m"),
        "{dr}"
    );
    let dr = dr_row(&dom, HEALTHY);
    assert!(dr.contains("data-ready=\"true\""), "{dr}");
    assert!(
        dr.contains("1m 35s (estimate from 3 verifies, no drill yet)"),
        "{dr}"
    );
    assert!(dr.contains("never"), "no drill yet: {dr}");

    let shot = screenshot(&url(&server, Some(TOKEN)), "dashboard-breached.png");
    assert_eq!((shot.width, shot.height), (1280, 800));
    let red = shot.count(strongly_red);
    let green = shot.count(strongly_green);
    assert!(
        red > 2000,
        "the breached RPO is not red in the screenshot: {red} red pixels"
    );
    assert!(
        green > 2000,
        "the healthy RPO is not green: {green} green pixels"
    );
    assert!(view.triggered().is_empty());
}

#[test]
fn dashboard_without_a_breach_shows_no_red() {
    let view = FakeView::new(false);
    let server = serve(view.clone());
    let dom = dump_dom(&url(&server, Some(TOKEN)));
    for tenant in [BREACHED, HEALTHY] {
        let r = row(&dom, tenant);
        assert!(r.contains("class=\"rpo ok\""), "{r}");
        assert!(!r.contains("BREACHED"), "{r}");
        let dr = dr_row(&dom, tenant);
        assert!(dr.contains("class=\"ready yes\""), "{dr}");
    }
    let shot = screenshot(&url(&server, Some(TOKEN)), "dashboard-healthy.png");
    let red = shot.count(strongly_red);
    let green = shot.count(strongly_green);
    assert!(
        green > 4000,
        "the page did not render its tenants: {green} green pixels"
    );
    assert!(red < 20, "red on a page without a breach: {red} pixels");
}

#[test]
fn dashboard_without_the_right_token_shows_no_data() {
    let view = FakeView::new(true);
    let server = serve(view.clone());
    for (token, message) in [(None, None), (Some("wrong"), Some("refused the token"))] {
        let dom = dump_dom(&url(&server, token));
        assert!(
            dom.contains("<form id=\"login\" class=\"\">"),
            "login shown: {dom}"
        );
        assert!(dom.contains("<main id=\"main\" class=\"hidden\">"), "{dom}");
        assert!(!dom.contains(BREACHED) && !dom.contains(HEALTHY), "{dom}");
        if let Some(message) = message {
            assert!(dom.contains(message), "{dom}");
        }
    }
    assert_eq!(view.calls(), 0, "the daemon was asked something");
}
