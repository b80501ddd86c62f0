//! The pure rules of the write path: which sequence numbers are settled, and what the
//! controller does with the answers of the in-sync replicas to one request.
//!
//! Both are plain values so that the rules of invariants 1, 2 and 6 of docs/VOLUMES.md are
//! tested without replicas or etcd.

use std::collections::BTreeSet;

use crate::coord::ReplicaId;
use crate::replica::ReplicaError;

/// Sequence numbers of one serving session and the settled mark: the highest seq such
/// that every write up to it was acknowledged by every in-sync replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledTracker {
    next: u64,
    settled: u64,
    /// Finished seqs above `settled` (a gap below them is still in flight or failed).
    done: BTreeSet<u64>,
}

impl SettledTracker {
    /// A tracker whose first seq is `settled + 1`.
    pub fn new(settled: u64) -> SettledTracker {
        SettledTracker {
            next: settled + 1,
            settled,
            done: BTreeSet::new(),
        }
    }

    /// A new write: its seq and the settled mark it carries.
    pub fn begin(&mut self) -> (u64, u64) {
        let seq = self.next;
        self.next += 1;
        (seq, self.settled)
    }

    /// `seq` was acknowledged by every in-sync replica. A seq never finished (a write
    /// refused for min-in-sync, or abandoned on shutdown) holds the mark below it: the
    /// regions written after it stay unsettled until the next takeover reconciles them.
    pub fn finish(&mut self, seq: u64) {
        if seq <= self.settled {
            return;
        }
        self.done.insert(seq);
        while self.done.remove(&(self.settled + 1)) {
            self.settled += 1;
        }
    }

    pub fn settled(&self) -> u64 {
        self.settled
    }

    /// The seq the next write gets.
    pub fn next(&self) -> u64 {
        self.next
    }
}

/// How one replica answered one request, as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// The replica saw a higher epoch: a newer controller exists.
    Fenced,
    /// Out of space on the replica's disk.
    NoSpace(String),
    /// Unreachable, an I/O error, anything else: the replica counts as failed.
    Failed(String),
}

impl Answer {
    pub fn of<T>(result: &Result<T, ReplicaError>) -> Answer {
        match result {
            Ok(_) => Answer::Done,
            Err(ReplicaError::Fenced { .. }) => Answer::Fenced,
            Err(e @ ReplicaError::NoSpace { .. }) => Answer::NoSpace(e.to_string()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// What to do with a request once every in-sync replica answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every in-sync replica holds it: acknowledge.
    Ack,
    /// Remove these replicas from the in-sync set (guarded transaction), then acknowledge.
    RemoveThenAck(Vec<ReplicaId>),
    /// Fewer than `min_in_sync` would be left: the request fails and the replicas stay in
    /// the set. `no_space`: every failure was a full disk (ENOSPC rather than EIO).
    Refuse { detail: String, no_space: bool },
    /// A replica fenced this controller: stop serving, acknowledge nothing.
    Fenced,
}

/// Invariants 1, 2 and 6: `answers` holds one answer per in-sync replica.
pub fn decide(answers: &[(ReplicaId, Answer)], min_in_sync: u32) -> Decision {
    if answers.iter().any(|(_, a)| *a == Answer::Fenced) {
        return Decision::Fenced;
    }
    let failed: Vec<&(ReplicaId, Answer)> =
        answers.iter().filter(|(_, a)| *a != Answer::Done).collect();
    if failed.is_empty() {
        return Decision::Ack;
    }
    let left = answers.len() - failed.len();
    if left >= (min_in_sync.max(1) as usize) {
        return Decision::RemoveThenAck(failed.iter().map(|(id, _)| id.clone()).collect());
    }
    let detail = failed
        .iter()
        .map(|(id, a)| match a {
            Answer::NoSpace(d) | Answer::Failed(d) => format!("{id}: {d}"),
            _ => id.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if left == 0 {
        format!("no in-sync replica took the request ({detail})")
    } else {
        format!(
            "{left} in-sync replica(s) left, the volume needs {min_in_sync} (--min-in-sync); \
             the failed ones stay in the set until they are back ({detail})"
        )
    };
    Decision::Refuse {
        detail,
        no_space: failed.iter().all(|(_, a)| matches!(a, Answer::NoSpace(_))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_follows_the_lowest_unfinished_seq() {
        let mut t = SettledTracker::new(0);
        let (a, s) = t.begin();
        assert_eq!((a, s), (1, 0));
        let (b, _) = t.begin();
        let (c, _) = t.begin();
        t.finish(c);
        assert_eq!(t.settled(), 0, "1 and 2 are still in flight");
        t.finish(a);
        assert_eq!(t.settled(), 1);
        let (d, s) = t.begin();
        assert_eq!((d, s), (4, 1));
        t.finish(b);
        assert_eq!(t.settled(), 3);
        t.finish(b);
        assert_eq!(t.settled(), 3, "finishing twice changes nothing");
        t.finish(d);
        assert_eq!(t.settled(), 4);
    }

    #[test]
    fn an_unfinished_seq_holds_the_mark() {
        let mut t = SettledTracker::new(10);
        let (refused, _) = t.begin();
        let (ok, _) = t.begin();
        assert_eq!(refused, 11);
        t.finish(ok);
        assert_eq!(t.settled(), 10);
        assert_eq!(t.begin(), (13, 10));
    }

    fn answers(list: &[(&str, Answer)]) -> Vec<(ReplicaId, Answer)> {
        list.iter()
            .map(|(id, a)| (id.to_string(), a.clone()))
            .collect()
    }

    #[test]
    fn all_done_acknowledges() {
        let a = answers(&[("a/n1", Answer::Done), ("b/n2", Answer::Done)]);
        assert_eq!(decide(&a, 1), Decision::Ack);
        assert_eq!(decide(&a, 2), Decision::Ack);
    }

    #[test]
    fn a_failed_replica_is_removed_before_the_ack_when_enough_are_left() {
        let a = answers(&[
            ("a/n1", Answer::Done),
            ("b/n2", Answer::Failed("reset".into())),
        ]);
        assert_eq!(decide(&a, 1), Decision::RemoveThenAck(vec!["b/n2".into()]));
        let three = answers(&[
            ("a/n1", Answer::Done),
            ("b/n2", Answer::NoSpace("full".into())),
            ("c/n3", Answer::Done),
        ]);
        assert_eq!(
            decide(&three, 2),
            Decision::RemoveThenAck(vec!["b/n2".into()])
        );
    }

    #[test]
    fn min_in_sync_refuses_and_keeps_the_replica() {
        let a = answers(&[
            ("a/n1", Answer::Done),
            ("b/n2", Answer::Failed("reset".into())),
        ]);
        match decide(&a, 2) {
            Decision::Refuse { detail, no_space } => {
                assert!(!no_space);
                assert!(
                    detail.contains("b/n2") && detail.contains("min-in-sync"),
                    "{detail}"
                );
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn no_replica_left_refuses_even_at_min_one() {
        let a = answers(&[
            ("a/n1", Answer::NoSpace("full".into())),
            ("b/n2", Answer::NoSpace("full".into())),
        ]);
        assert!(matches!(
            decide(&a, 1),
            Decision::Refuse { no_space: true, .. }
        ));
        let one = answers(&[("a/n1", Answer::Failed("gone".into()))]);
        assert!(matches!(
            decide(&one, 1),
            Decision::Refuse {
                no_space: false,
                ..
            }
        ));
    }

    #[test]
    fn fenced_wins_over_everything() {
        let a = answers(&[
            ("a/n1", Answer::Failed("reset".into())),
            ("b/n2", Answer::Fenced),
        ]);
        assert_eq!(decide(&a, 1), Decision::Fenced);
    }
}
