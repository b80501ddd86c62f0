//! Placement: which replica servers hold a new volume's copies.
//!
//! Only live replicas with at least the volume's size free are candidates. Copies go to
//! distinct replica servers (distinct nodes), always. Sites: a volume that asks for
//! distinct sites (`distinct_sites`) gets one copy per site or is refused; any other volume
//! is spread over as many sites as have live replicas (up to its replica count), so that
//! with several sites a site's loss never takes every copy. Within those rules the
//! replicas with the most free space win (ties: by id, so placement is deterministic).
//! A volume that cannot be placed is refused with the reason.

use std::collections::BTreeSet;

use super::{Coord, CoordError, ReplicaId, ReplicaRecord, Result, VolumeSpec};

/// Choose `spec.replicas` replicas among `replicas` for `spec` (its `placement` is
/// ignored).
pub fn place(spec: &VolumeSpec, replicas: &[ReplicaRecord]) -> Result<Vec<ReplicaId>> {
    let refuse = |reason: String| CoordError::Placement {
        volume: spec.name.clone(),
        reason,
    };
    let n = spec.replicas as usize;
    if n == 0 {
        return Err(refuse("a volume needs at least 1 replica".into()));
    }
    let size = format_bytes(spec.size);
    let mut live: Vec<&ReplicaRecord> = replicas.iter().filter(|r| r.alive).collect();
    // Most free first, then by id.
    live.sort_by(|a, b| b.free_bytes.cmp(&a.free_bytes).then(a.id.cmp(&b.id)));
    let Some(largest) = live.first() else {
        return Err(refuse(
            "no live replica; start `haven replica serve` on the nodes that hold replicas".into(),
        ));
    };
    let fit: Vec<&ReplicaRecord> = live
        .iter()
        .copied()
        .filter(|r| r.free_bytes >= spec.size)
        .collect();
    if fit.is_empty() {
        return Err(refuse(format!(
            "no replica has {size} free (largest: {} with {})",
            largest.id,
            format_bytes(largest.free_bytes)
        )));
    }
    let live_sites = sites(&live);
    let fit_sites = sites(&fit);
    let want_sites = if spec.distinct_sites {
        n
    } else {
        n.min(live_sites.len())
    };
    if fit_sites.len() < want_sites {
        let asked = if spec.distinct_sites {
            format!("{n} replicas on distinct sites asked")
        } else {
            format!(
                "the replicas must span {want_sites} sites ({} have live replicas)",
                list(&live_sites)
            )
        };
        return Err(refuse(if live_sites.len() < want_sites {
            format!("{asked}, {}", only_sites(&live_sites, "live replicas"))
        } else {
            format!(
                "{asked}, {}",
                only_sites(&fit_sites, &format!("live replicas with {size} free"))
            )
        }));
    }
    if fit.len() < n {
        let ids: Vec<&str> = fit.iter().map(|r| r.id.as_str()).collect();
        let (verb, what) = if fit.len() == 1 {
            ("has", "live replica")
        } else {
            ("have", "live replicas")
        };
        return Err(refuse(format!(
            "{n} replicas on distinct nodes asked, only {} {what} ({}) {verb} {size} free",
            fit.len(),
            ids.join(", ")
        )));
    }
    // Greedy: the roomiest replica of a site not used yet, while there is one; then the
    // roomiest of the rest. This reaches min(n, sites) distinct sites.
    let mut chosen: Vec<&ReplicaRecord> = Vec::with_capacity(n);
    let mut nodes = BTreeSet::new();
    while chosen.len() < n {
        let unused = |r: &&&ReplicaRecord| !nodes.contains(&(&r.site, &r.node));
        let new_site = fit
            .iter()
            .filter(unused)
            .find(|r| chosen.iter().all(|c| c.site != r.site));
        let next = match new_site {
            Some(r) => *r,
            None if spec.distinct_sites => unreachable!("checked: enough sites"),
            None => match fit.iter().find(unused) {
                Some(r) => *r,
                None => {
                    return Err(refuse(format!(
                        "{n} replicas on distinct nodes asked, only {} distinct nodes have \
                         {size} free",
                        nodes.len()
                    )))
                }
            },
        };
        nodes.insert((&next.site, &next.node));
        chosen.push(next);
    }
    Ok(chosen.into_iter().map(|r| r.id.clone()).collect())
}

fn sites<'a>(replicas: &[&'a ReplicaRecord]) -> BTreeSet<&'a str> {
    replicas.iter().map(|r| r.site.as_str()).collect()
}

fn list(sites: &BTreeSet<&str>) -> String {
    sites.iter().copied().collect::<Vec<_>>().join(", ")
}

/// "only 1 site (a) has live replicas".
fn only_sites(sites: &BTreeSet<&str>, what: &str) -> String {
    match sites.len() {
        1 => format!("only 1 site ({}) has {what}", list(sites)),
        k => format!("only {k} sites ({}) have {what}", list(sites)),
    }
}

/// Sizes as people write them: "20 GiB", "1.5 MiB", "512 B".
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut value = n as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        let text = format!("{value:.1}");
        format!("{} {}", text.trim_end_matches(".0"), UNITS[unit])
    }
}

impl Coord {
    /// [`place`] among the registered replicas now.
    pub fn place(&self, spec: &VolumeSpec) -> Result<Vec<ReplicaId>> {
        place(spec, &self.replicas()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn replica(id: &str, free_gib: u64) -> ReplicaRecord {
        let (site, node) = id.split_once('/').unwrap();
        ReplicaRecord {
            id: id.into(),
            site: site.into(),
            node: node.into(),
            addr: format!("{node}:7410"),
            free_bytes: free_gib * GIB,
            alive: true,
        }
    }

    fn spec(size_gib: u64, replicas: u32, distinct_sites: bool) -> VolumeSpec {
        VolumeSpec {
            name: "data1".into(),
            size: size_gib * GIB,
            replicas,
            min_in_sync: 1,
            distinct_sites,
            placement: vec![],
        }
    }

    fn reason(result: Result<Vec<ReplicaId>>) -> String {
        match result {
            Err(CoordError::Placement { volume, reason }) => {
                assert_eq!(volume, "data1");
                reason
            }
            other => panic!("expected a placement error, got {other:?}"),
        }
    }

    #[test]
    fn distinct_nodes_most_free_first() {
        let rs = [
            replica("a/n1", 50),
            replica("a/n2", 80),
            replica("a/n3", 60),
        ];
        assert_eq!(place(&spec(20, 2, false), &rs).unwrap(), ["a/n2", "a/n3"]);
        assert_eq!(place(&spec(20, 3, false), &rs).unwrap().len(), 3);
        assert_eq!(
            reason(place(&spec(20, 4, false), &rs)),
            "4 replicas on distinct nodes asked, only 3 live replicas (a/n2, a/n3, a/n1) \
             have 20 GiB free"
        );
    }

    #[test]
    fn several_sites_spread_even_when_not_asked() {
        // Site a has the roomiest nodes, but with two sites the copies go to both.
        let rs = [
            replica("a/n1", 90),
            replica("a/n2", 80),
            replica("b/n3", 30),
        ];
        assert_eq!(place(&spec(20, 2, false), &rs).unwrap(), ["a/n1", "b/n3"]);
        assert_eq!(place(&spec(20, 2, true), &rs).unwrap(), ["a/n1", "b/n3"]);
        // Three copies on two sites: both sites, then the roomiest node left.
        assert_eq!(
            place(&spec(20, 3, false), &rs).unwrap(),
            ["a/n1", "b/n3", "a/n2"]
        );
        // When site b has no room the volume is refused, not piled onto site a.
        assert_eq!(
            reason(place(&spec(40, 2, false), &rs)),
            "the replicas must span 2 sites (a, b have live replicas), only 1 site (a) has \
             live replicas with 40 GiB free"
        );
    }

    #[test]
    fn distinct_sites_asked_but_not_enough_sites() {
        let mut rs = vec![replica("a/n1", 90), replica("a/n2", 80)];
        assert_eq!(
            reason(place(&spec(20, 2, true), &rs)),
            "2 replicas on distinct sites asked, only 1 site (a) has live replicas"
        );
        // A dead replica's site does not count.
        rs.push(ReplicaRecord {
            alive: false,
            ..replica("b/n3", 90)
        });
        assert_eq!(
            reason(place(&spec(20, 2, true), &rs)),
            "2 replicas on distinct sites asked, only 1 site (a) has live replicas"
        );
        rs.push(replica("c/n4", 90));
        assert_eq!(place(&spec(20, 2, true), &rs).unwrap(), ["a/n1", "c/n4"]);
        assert_eq!(
            reason(place(&spec(20, 3, true), &rs)),
            "3 replicas on distinct sites asked, only 2 sites (a, c) have live replicas"
        );
    }

    #[test]
    fn too_big_names_the_largest() {
        let rs = [replica("a/n1", 1), replica("b/n2", 3)];
        assert_eq!(
            reason(place(&spec(20, 2, false), &rs)),
            "no replica has 20 GiB free (largest: b/n2 with 3 GiB)"
        );
        assert!(reason(place(&spec(1, 2, false), &[])).contains("no live replica"));
        assert!(reason(place(&spec(1, 0, false), &rs)).contains("at least 1 replica"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(format_bytes(20 * GIB), "20 GiB");
        assert_eq!(format_bytes(3 * GIB / 2), "1.5 GiB");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1025), "1 KiB");
    }
}
