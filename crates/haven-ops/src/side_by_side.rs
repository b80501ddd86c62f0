//! Components restored side by side: `tenant restore` and `tenant verify` hand their
//! per-component work to [`run`], which runs it on at most `parallelism` scoped threads.
//! A component's validation runs on its own thread right after its restore, so it
//! overlaps the other components' restores.
//!
//! ```text
//! jobs (point order) ──next index (atomic)──> worker 1 .. worker N (std::thread::scope)
//!   each: start = clock.elapsed(); report = work(job); end = clock.elapsed()
//! reports ──> back in the jobs' order, each with its start/end offsets
//! ```
//! Nothing is shared between workers but the read-only repository view (an
//! `IndexedRepository` is `Sync`), the run environment and the observer; each component
//! gets its own work folder. A worker that panics propagates the panic after the others
//! have finished (scoped threads join on every path).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::backup::Observer;
use crate::report::ComponentReport;

/// Components restored at once when the request does not say: the tenant's components,
/// up to this many (more rarely helps: they share the repository and the machine).
pub const DEFAULT_PARALLELISM: usize = 4;

/// How many threads a run of `jobs` components uses for a `requested` parallelism.
pub fn effective_parallelism(requested: Option<usize>, jobs: usize) -> usize {
    requested
        .unwrap_or(DEFAULT_PARALLELISM)
        .max(1)
        .min(jobs.max(1))
}

/// Run `work` on every job, `parallelism` at a time; the reports come back in the jobs'
/// order with `start_seconds`/`end_seconds` measured from `clock`. The observer's current
/// component shows every component in flight.
pub(crate) fn run<T: Sync>(
    jobs: &[T],
    name_of: impl Fn(&T) -> &str + Sync,
    parallelism: usize,
    clock: Instant,
    observer: &Observer,
    work: impl Fn(&T) -> ComponentReport + Sync,
) -> Vec<ComponentReport> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<ComponentReport>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    let active: Mutex<BTreeSet<String>> = Mutex::default();
    let show = |active: &BTreeSet<String>| {
        let names = active.iter().cloned().collect::<Vec<_>>().join(", ");
        observer.set_component((!names.is_empty()).then_some(names.as_str()));
    };
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { break };
        let name = name_of(job);
        {
            let mut a = active.lock().expect("active components");
            a.insert(name.to_string());
            show(&a);
        }
        let start = clock.elapsed().as_secs_f64();
        let mut report = work(job);
        report.start_seconds = start;
        report.end_seconds = clock.elapsed().as_secs_f64();
        {
            let mut a = active.lock().expect("active components");
            a.remove(name);
            show(&a);
        }
        done.lock().expect("reports")[i] = Some(report);
    };
    std::thread::scope(|s| {
        for _ in 1..parallelism.max(1) {
            s.spawn(worker);
        }
        // The calling thread is a worker too: parallelism 1 starts no thread.
        worker();
    });
    done.into_inner()
        .expect("reports")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;
    use std::time::Duration;

    fn report(name: &str) -> ComponentReport {
        ComponentReport::new(name, "files", String::new(), Outcome::Passed)
    }

    #[test]
    fn parallelism_defaults_to_the_components_up_to_four() {
        assert_eq!(effective_parallelism(None, 2), 2);
        assert_eq!(effective_parallelism(None, 9), 4);
        assert_eq!(effective_parallelism(Some(0), 3), 1);
        assert_eq!(effective_parallelism(Some(8), 3), 3);
        assert_eq!(effective_parallelism(None, 0), 1);
    }

    #[test]
    fn jobs_overlap_and_come_back_in_order() {
        let jobs = ["a", "b", "c"];
        let clock = Instant::now();
        let reports = run(
            &jobs,
            |j| j,
            3,
            clock,
            &Observer::quiet(),
            |j| {
                std::thread::sleep(Duration::from_millis(200));
                report(j)
            },
        );
        let names: Vec<_> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // Side by side: every interval overlaps every other one.
        for x in &reports {
            for y in &reports {
                assert!(x.start_seconds < y.end_seconds, "{x:?} {y:?}");
            }
        }
        assert!(clock.elapsed() < Duration::from_millis(550), "{reports:?}");
    }

    #[test]
    fn parallelism_one_runs_one_after_another() {
        let jobs = ["a", "b"];
        let reports = run(
            &jobs,
            |j| j,
            1,
            Instant::now(),
            &Observer::quiet(),
            |j| {
                std::thread::sleep(Duration::from_millis(50));
                report(j)
            },
        );
        assert!(
            reports[1].start_seconds >= reports[0].end_seconds,
            "{reports:?}"
        );
    }
}
