use anyhow::Result;
use haven_repo::check;

use crate::cli::{CheckArgs, Global};
use crate::output::bytes;

pub fn run(g: &Global, a: CheckArgs) -> Result<i32> {
    let (view, _lock) = super::open_read_as(g, super::Inspect, "check")?;
    let data = match (a.read_data, a.read_data_subset) {
        (_, Some(subset)) => check::ReadData::Subset(subset),
        (true, None) => check::ReadData::All,
        (false, None) => check::ReadData::None,
    };
    let mut report = super::with_progress(g, "check", |p| check::check_data(&view, data, p))?;
    if let Some(mirror) =
        crate::location::open_mirror(&super::location(g)?, super::min_sites(g, super::Inspect))?
    {
        let c = mirror.compare();
        for d in &c.disagreements {
            report.problems.push(format!(
                "mirror site {} disagrees on {:?} {}: {:?}; run `haven repair`",
                d.site, d.kind, d.name, d.problem
            ));
        }
        for (site, why) in &c.unreachable {
            report
                .problems
                .push(format!("mirror site {site} is unreachable ({why})"));
        }
    }
    if g.json {
        crate::output::json(&report);
    } else {
        for n in &report.notes {
            super::say(g, format!("note: {n}"));
        }
        for p in &report.problems {
            eprintln!("haven: problem: {p}");
        }
        let data = match data {
            check::ReadData::None => String::new(),
            check::ReadData::All => format!(
                ", read {} blobs ({})",
                report.blobs_read,
                bytes(report.bytes_read)
            ),
            check::ReadData::Subset(_) => format!(
                ", read {} of {} packs whole: {} blobs ({})",
                report.packs_read,
                report.packs,
                report.blobs_read,
                bytes(report.bytes_read)
            ),
        };
        super::say(
            g,
            format!(
                "checked {} snapshots, {} trees, {} packs{data}",
                report.snapshots, report.trees, report.packs
            ),
        );
    }
    if report.ok() {
        super::say(g, "no problems found");
        Ok(0)
    } else {
        eprintln!("haven: {} problem(s) found; snapshots that use the damaged data cannot be fully restored", report.problems.len());
        Ok(1)
    }
}
