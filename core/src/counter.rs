//! Counters shared with readers but owned by one writer (a worker's own statistics): the
//! writer adds with a plain load and store, no locked read-modify-write instruction, and any
//! thread reads them with a relaxed load. Counters written by several threads use
//! `fetch_add` instead.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Named counter values as a STATS reply pages through them.
pub type Named = Vec<(String, u64)>;

/// The counter lists a server pages STATS replies from, one per reader (`K`: the dataplane
/// keys on the principal and the client's address, one walk each; the host agent, whose
/// readers are the dataplane's counter watch and local admin tools, on the principal), each
/// built once per walk through its pages. Building the list costs in the number of counters
/// (tens of thousands with thousands of offloads), and building it again for every page
/// multiplied that by the pages of a walk (a page holds up to ~2 000 counters): a tenant's
/// STATS flood held a dataplane's control thread for seconds per request (probe 16). A
/// walk's later pages (`start > 0`) are served from the list its first page was, for up to
/// [`Snapshots::WALK_NS`] (so that a counter added meanwhile no longer shifts the indices,
/// unless another walk of the same reader began meanwhile); a first page always builds a
/// new one, so that what a reader asks for after an event counts it.
#[derive(Debug)]
pub struct Snapshots<K> {
    /// (reader, built at, list), the most recently built last.
    lists: Vec<(K, u64, std::sync::Arc<Named>)>,
    /// Lists built so far.
    built: u64,
}

impl<K: PartialEq + Copy> Default for Snapshots<K> {
    fn default() -> Self {
        Self {
            lists: Vec::new(),
            built: 0,
        }
    }
}

impl<K: PartialEq + Copy> Snapshots<K> {
    /// How long a walk's first list serves its later pages.
    pub const WALK_NS: u64 = 5_000_000_000;
    /// Readers kept at once (the least recently built goes first).
    pub const READERS: usize = 16;

    /// `who`'s list for a page starting at `start`, at `now_ns`: the one kept, or `build()`.
    pub fn get(
        &mut self,
        who: K,
        start: u32,
        now_ns: u64,
        build: impl FnOnce() -> Named,
    ) -> std::sync::Arc<Named> {
        let kept = self.lists.iter().position(|(k, at, _)| {
            start > 0 && *k == who && now_ns >= *at && now_ns - *at < Self::WALK_NS
        });
        let at = match kept {
            Some(i) => i,
            None => {
                self.lists.retain(|(k, _, _)| *k != who);
                if self.lists.len() >= Self::READERS {
                    self.lists.remove(0);
                }
                self.lists.push((who, now_ns, std::sync::Arc::new(build())));
                self.built += 1;
                self.lists.len() - 1
            }
        };
        self.lists[at].2.clone()
    }

    /// Lists built so far (a counter: a walk's pages are served from one).
    pub fn built(&self) -> u64 {
        self.built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_is_served_from_one_list_and_a_first_page_builds_a_new_one() {
        type S = Snapshots<u32>;
        let mut s = S::default();
        let mut builds = 0;
        let mut build = |n: u64| {
            builds += 1;
            vec![("c".to_string(), n)]
        };
        assert_eq!(s.get(1, 0, 0, || build(1))[0].1, 1);
        // Its later pages, within the walk's time: the same list.
        assert_eq!(s.get(1, 100, S::WALK_NS - 1, || build(2))[0].1, 1);
        // Another first page: a new one, at once.
        assert_eq!(s.get(1, 0, 1, || build(3))[0].1, 3);
        // A page of a walk too old: built again.
        assert_eq!(s.get(1, 7, 1 + S::WALK_NS, || build(4))[0].1, 4);
        // Each reader its own; at most READERS kept, the oldest dropped first.
        for r in 2..=S::READERS as u32 + 1 {
            assert_eq!(
                s.get(r, 0, 9, || build(10 + u64::from(r)))[0].1,
                10 + u64::from(r)
            );
        }
        assert_eq!(s.lists.len(), S::READERS);
        assert!(!s.lists.iter().any(|(k, _, _)| *k == 1), "the oldest went");
        assert_eq!(builds, 3 + S::READERS);
        assert_eq!(s.built(), builds as u64);
        // A later page of a reader whose walk is not kept never gets another's list.
        let mut s = S::default();
        assert_eq!(s.get(1, 0, 0, || vec![("admin".into(), 1)])[0].0, "admin");
        assert_eq!(s.get(2, 5, 1, || vec![("tenant".into(), 2)])[0].0, "tenant");
        assert_eq!(s.get(1, 5, 2, || vec![("again".into(), 3)])[0].0, "admin");
    }
}
