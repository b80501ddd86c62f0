//! Printing: usage errors and error chains on one line, sizes, JSON, and the progress bar (only on a
//! terminal and never with --json or --quiet). With --json, `backup` and `restore` print
//! progress instead as JSON lines on stdout ([`JsonStatus`]: `"message_type": "status"`
//! every second, or `HAVEN_PROGRESS_FPS` times a second, and once at the end), then
//! their result as one line with `"message_type": "summary"`, as restic's --json does.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use haven_repo::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Print a clap error as one line (help and version print as usual); returns the exit code.
pub fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
            2
        } else {
            0
        };
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("haven: error: {first} (see `haven --help` or `haven <command> --help`)");
    2
}

/// An error and its causes as one line, each cause once. The libraries' errors name
/// their cause in their own message (so it shows wherever they are displayed alone) and
/// still return it from `source()` (for classification); printing the chain as
/// `{:#}` does would repeat it ("...: Permission denied (os error 13): Permission
/// denied (os error 13)"). A cause whose text the line already holds is left out.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// 1536 -> "1.5 KiB" (the same spelling as the tenant reports).
pub use haven_ops::report::human_bytes as bytes;

pub fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializing results cannot fail")
    );
}

/// One JSON line on stdout (a status event or a summary), flushed at once.
pub fn json_line(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Progress as JSON status lines on stdout, fed from the engine's counters.
pub struct JsonStatus {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JsonStatus {
    pub fn start(progress: Arc<Progress>, action: &str) -> JsonStatus {
        let interval = std::env::var("HAVEN_PROGRESS_FPS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|fps| *fps > 0.0 && fps.is_finite())
            .map(|fps| Duration::from_secs_f64((1.0 / fps).clamp(0.001, 3600.0)))
            .unwrap_or(Duration::from_secs(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let action = action.to_string();
        let started = std::time::Instant::now();
        let thread = std::thread::spawn(move || loop {
            let last = !matches!(
                rx.recv_timeout(interval),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            json_line(&status(&progress, &action, started.elapsed()));
            if last {
                return;
            }
        });
        JsonStatus {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stop, after one last status line with the final counters.
    pub fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(progress: &Progress, action: &str, elapsed: Duration) -> serde_json::Value {
    let (items, bytes, items_total, bytes_total) = progress.snapshot();
    let totals_final = progress.totals_final.load(Ordering::Relaxed);
    let percent = if bytes_total > 0 {
        (bytes as f64 / bytes_total as f64).min(1.0)
    } else {
        0.0
    };
    let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-3);
    let remaining = (totals_final && rate > 0.0)
        .then(|| (bytes_total.saturating_sub(bytes) as f64 / rate).round() as u64);
    serde_json::json!({
        "message_type": "status",
        "action": action,
        "seconds_elapsed": elapsed.as_secs(),
        "seconds_remaining": remaining,
        "percent_done": percent,
        "total_files": items_total,
        "files_done": items,
        "total_bytes": bytes_total,
        "bytes_done": bytes,
        "totals_final": totals_final,
    })
}

/// A live progress bar fed from the engine's counters.
pub struct ProgressView {
    bar: Option<ProgressBar>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressView {
    pub fn start(progress: Arc<Progress>, label: &str, enabled: bool) -> ProgressView {
        if !enabled || !std::io::stderr().is_terminal() {
            return ProgressView {
                bar: None,
                stop: None,
                thread: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}")
                .expect("valid template"),
        );
        bar.set_prefix(label.to_string());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let b = bar.clone();
        let thread = std::thread::spawn(move || loop {
            let (items, bytes, items_total, bytes_total) = progress.snapshot();
            b.set_length(bytes_total.max(bytes));
            b.set_position(bytes);
            let final_mark = if progress.totals_final.load(Ordering::Relaxed) {
                ""
            } else {
                "+"
            };
            b.set_message(format!("{items}/{items_total}{final_mark} files"));
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                return;
            }
        });
        ProgressView {
            bar: Some(bar),
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
