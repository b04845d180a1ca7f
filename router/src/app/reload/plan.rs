//! What a reload does with the inputs or outputs: the decisions alone,
//! from the running entries and the new ones, before anything is bound or
//! closed. Sans-IO, so every case is a unit test.
//!
//! An entry the new config has unchanged is kept (its sockets and peers
//! stay). Every other new entry starts: at once, before the swap, unless it
//! needs something (a fixed address) that a leaving entry holds; then it
//! starts after the swap, once those leaving entries have let go. Every
//! running entry the new config drops or changes leaves; the ones a
//! successor waits for leave first.

use crate::config::{self, Resource};

/// An input or output entry, as planning sees it.
pub(super) trait Entry: PartialEq {
    /// What it holds while it runs.
    fn resources(&self) -> Vec<Resource>;
}

impl Entry for config::Input {
    fn resources(&self) -> Vec<Resource> {
        config::Input::resources(self)
    }
}

impl Entry for config::Output {
    fn resources(&self) -> Vec<Resource> {
        config::Output::resources(self)
    }
}

/// What happens to one entry of the new config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Unchanged: the running entry at this index stays.
    Keep(usize),
    /// New or changed: built and started before the swap.
    Start,
    /// New or changed, but a leaving entry holds what it needs: built
    /// before the swap, started after the leaving entries let go.
    StartAfterLeaving,
}

/// A running entry the new config does not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Leaving {
    /// Its index among the running entries.
    pub(super) old: usize,
    /// True when a successor waits for it: it must let go before that one
    /// starts, rather than linger in the background.
    pub(super) first: bool,
}

/// The decisions for one reload, over inputs or over outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// One step per new entry, in the new config's order.
    pub(super) steps: Vec<Step>,
    /// The running entries that leave, in their order.
    pub(super) leaving: Vec<Leaving>,
}

/// Plans the move from the `old` running entries to the `new` ones.
pub(super) fn plan<E: Entry>(old: &[E], new: &[E]) -> Plan {
    let kept: Vec<Option<usize>> = new
        .iter()
        .map(|entry| old.iter().position(|o| o == entry))
        .collect();
    let leaving_at: Vec<usize> = (0..old.len())
        .filter(|i| !kept.contains(&Some(*i)))
        .collect();
    let mut waited_for = vec![false; old.len()];
    let steps = new
        .iter()
        .zip(&kept)
        .map(|(entry, kept)| {
            if let Some(i) = kept {
                return Step::Keep(*i);
            }
            let wanted = entry.resources();
            let mut blocked = false;
            for &i in &leaving_at {
                if config::overlaps(&old[i].resources(), &wanted) {
                    waited_for[i] = true;
                    blocked = true;
                }
            }
            if blocked {
                Step::StartAfterLeaving
            } else {
                Step::Start
            }
        })
        .collect();
    let leaving = leaving_at
        .into_iter()
        .map(|old| Leaving {
            old,
            first: waited_for[old],
        })
        .collect();
    Plan { steps, leaving }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct E {
        name: &'static str,
        bind: Option<&'static str>,
        version: u32,
    }

    impl Entry for E {
        fn resources(&self) -> Vec<Resource> {
            self.bind
                .map(|a| Resource::Listen {
                    field: "bind",
                    addr: a.parse::<SocketAddr>().expect("address"),
                })
                .into_iter()
                .collect()
        }
    }

    fn e(name: &'static str, bind: Option<&'static str>, version: u32) -> E {
        E {
            name,
            bind,
            version,
        }
    }

    #[test]
    fn unchanged_entries_are_kept_where_they_run() {
        let old = [e("a", Some("127.0.0.1:5000"), 1), e("b", None, 1)];
        let new = [old[1].clone(), old[0].clone()];
        assert_eq!(
            plan(&old, &new),
            Plan {
                steps: vec![Step::Keep(1), Step::Keep(0)],
                leaving: vec![],
            }
        );
    }

    #[test]
    fn a_changed_entry_on_the_same_fixed_address_waits_for_its_predecessor() {
        let old = [e("a", Some("127.0.0.1:5000"), 1)];
        let new = [e("a", Some("127.0.0.1:5000"), 2)];
        let p = plan(&old, &new);
        assert_eq!(p.steps, [Step::StartAfterLeaving]);
        assert_eq!(
            p.leaving,
            [Leaving {
                old: 0,
                first: true
            }]
        );
    }

    #[test]
    fn a_changed_entry_that_moves_starts_first_and_its_predecessor_lingers() {
        let old = [e("a", Some("127.0.0.1:5000"), 1)];
        let new = [e("a", Some("127.0.0.1:5001"), 2)];
        let p = plan(&old, &new);
        assert_eq!(p.steps, [Step::Start]);
        assert_eq!(
            p.leaving,
            [Leaving {
                old: 0,
                first: false
            }]
        );
    }

    #[test]
    fn a_renamed_entry_on_a_removed_entrys_address_waits_for_it() {
        let old = [e("a", Some("0.0.0.0:5000"), 1), e("b", None, 1)];
        let new = [e("b", None, 1), e("c", Some("127.0.0.1:5000"), 1)];
        let p = plan(&old, &new);
        assert_eq!(p.steps, [Step::Keep(1), Step::StartAfterLeaving]);
        assert_eq!(
            p.leaving,
            [Leaving {
                old: 0,
                first: true
            }]
        );
    }

    #[test]
    fn port_zero_and_connecting_entries_never_wait() {
        let old = [e("a", Some("127.0.0.1:0"), 1), e("b", None, 1)];
        let new = [e("a", Some("127.0.0.1:0"), 2), e("b", None, 2)];
        let p = plan(&old, &new);
        assert_eq!(p.steps, [Step::Start, Step::Start]);
        assert!(p.leaving.iter().all(|l| !l.first));
        assert_eq!(p.leaving.len(), 2);
    }

    #[test]
    fn removed_entries_leave_and_new_ones_start() {
        let old = [e("a", None, 1)];
        let new = [e("z", Some("127.0.0.1:5000"), 1)];
        let p = plan(&old, &new);
        assert_eq!(p.steps, [Step::Start]);
        assert_eq!(
            p.leaving,
            [Leaving {
                old: 0,
                first: false
            }]
        );
    }
}
