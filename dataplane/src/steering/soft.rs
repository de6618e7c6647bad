//! `SoftSwitch`: the steering table in the dataplane's receive path.
//!
//! The committed table is an array indexed by `dst_port - base`: one bounds check and two
//! relaxed atomic loads per message, shared by all workers without locks and never written by
//! them. Each worker counts what it steered in a block of its own (single writer, a cache line
//! apart from the others and from the table), so no per-packet write is shared between cores;
//! a rule's counters are the sum over the blocks. The control side (policy, CLI) stages
//! changes and commits them; a commit rewrites the affected port slots, so a lookup sees
//! either the old or the new target, never a torn one.

use naam_core::counter::bump;

use super::{Capabilities, Match, RuleCounters, RuleId, Steering, SteeringError, Target};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const NO_RULE: u32 = u32::MAX;

struct Slot {
    rule: AtomicU32,
    target: AtomicU32,
}

/// One worker's counts, per port slot; only that worker writes them.
#[repr(align(128))]
struct Counts {
    packets: Box<[AtomicU64]>,
    bytes: Box<[AtomicU64]>,
    misses: AtomicU64,
}

/// The shared, committed table: what workers read.
pub struct SoftTable {
    base: u16,
    slots: Box<[Slot]>,
    /// Target of ports no rule matches.
    default: AtomicU32,
    /// One block per worker.
    counts: Box<[Counts]>,
}

impl SoftTable {
    /// Looks up the target of a message to UDP port `port` and counts it in `worker`'s block.
    /// Each worker passes its own index (below the `workers` the switch was made for): the
    /// blocks are single-writer.
    #[inline]
    pub fn steer(&self, port: u16, len: usize, worker: usize) -> Target {
        let i = port.wrapping_sub(self.base) as usize;
        let counts = &self.counts[worker % self.counts.len()];
        match self.slots.get(i) {
            Some(slot) if slot.rule.load(Ordering::Relaxed) != NO_RULE => {
                bump(&counts.packets[i], 1);
                bump(&counts.bytes[i], len as u64);
                Target::decode(slot.target.load(Ordering::Relaxed))
            }
            _ => {
                bump(&counts.misses, 1);
                Target::decode(self.default.load(Ordering::Relaxed))
            }
        }
    }

    /// Messages that matched no rule.
    pub fn misses(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.misses.load(Ordering::Relaxed))
            .sum()
    }

    /// Packets and bytes steered through port slot `i`, over all workers, since the start.
    fn slot_counts(&self, i: usize) -> RuleCounters {
        let mut c = RuleCounters::default();
        for w in self.counts.iter() {
            c.packets += w.packets[i].load(Ordering::Relaxed);
            c.bytes += w.bytes[i].load(Ordering::Relaxed);
        }
        c
    }

    pub fn base(&self) -> u16 {
        self.base
    }

    /// Number of port slots (steering classes).
    pub fn classes(&self) -> usize {
        self.slots.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    m: Match,
    target: Target,
}

/// The software eSwitch: staged rules plus the committed [`SoftTable`].
pub struct SoftSwitch {
    table: Arc<SoftTable>,
    committed: BTreeMap<RuleId, Rule>,
    /// Each committed rule's slots and their counts when it took them: the workers' counters
    /// only grow, a rule counts from its commit on.
    since: BTreeMap<RuleId, Vec<(usize, RuleCounters)>>,
    staged: BTreeMap<RuleId, Rule>,
    next_id: u32,
}

impl SoftSwitch {
    /// A table for ports `base .. base + classes`, steered by `workers` workers (indices
    /// `0..workers`); unmatched messages go to `default`.
    pub fn new(base: u16, classes: u16, workers: usize, default: Target) -> Self {
        let zeros = || (0..classes).map(|_| AtomicU64::new(0)).collect();
        let slots = (0..classes)
            .map(|_| Slot {
                rule: AtomicU32::new(NO_RULE),
                target: AtomicU32::new(0),
            })
            .collect();
        let counts = (0..workers.max(1))
            .map(|_| Counts {
                packets: zeros(),
                bytes: zeros(),
                misses: AtomicU64::new(0),
            })
            .collect();
        let table = Arc::new(SoftTable {
            base,
            slots,
            default: AtomicU32::new(default.encode()),
            counts,
        });
        Self {
            table,
            committed: BTreeMap::new(),
            since: BTreeMap::new(),
            staged: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The committed table, for the receive path of every worker.
    pub fn table(&self) -> Arc<SoftTable> {
        self.table.clone()
    }

    /// Ports a match covers within the table.
    fn covered(&self, m: &Match) -> impl Iterator<Item = usize> + use<> {
        let (base, m) = (self.table.base, *m);
        (0..self.table.slots.len()).filter(move |&i| m.matches(base.wrapping_add(i as u16)))
    }
}

impl Steering for SoftSwitch {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "soft",
            hardware: false,
            max_rules: self.table.slots.len(),
            counters: true,
            unavailable: None,
        }
    }

    fn insert(&mut self, m: Match, target: Target) -> Result<RuleId, SteeringError> {
        if self.staged.len() >= self.table.slots.len() {
            return Err(SteeringError::Full {
                max: self.table.slots.len(),
            });
        }
        let mine: Vec<usize> = self.covered(&m).collect();
        for (id, r) in &self.staged {
            if self.covered(&r.m).any(|i| mine.contains(&i)) {
                return Err(SteeringError::Overlap {
                    port: m.dst_port,
                    mask: m.mask,
                    existing: *id,
                });
            }
        }
        let id = RuleId(self.next_id);
        self.next_id += 1;
        self.staged.insert(id, Rule { m, target });
        Ok(id)
    }

    fn update(&mut self, id: RuleId, target: Target) -> Result<(), SteeringError> {
        self.staged
            .get_mut(&id)
            .ok_or(SteeringError::NoRule(id))?
            .target = target;
        Ok(())
    }

    fn remove(&mut self, id: RuleId) -> Result<(), SteeringError> {
        self.staged
            .remove(&id)
            .map(|_| ())
            .ok_or(SteeringError::NoRule(id))
    }

    fn commit(&mut self) -> Result<(), SteeringError> {
        // Clear slots of removed rules, then write every staged rule's slots.
        for (id, r) in &self.committed {
            if !self.staged.contains_key(id) {
                for i in self.covered(&r.m) {
                    self.table.slots[i].rule.store(NO_RULE, Ordering::Relaxed);
                }
                self.since.remove(id);
            }
        }
        for (id, r) in &self.staged {
            for i in self.covered(&r.m) {
                let s = &self.table.slots[i];
                s.target.store(r.target.encode(), Ordering::Relaxed);
                s.rule.store(id.0, Ordering::Release);
            }
            if !self.since.contains_key(id) {
                let start = self
                    .covered(&r.m)
                    .map(|i| (i, self.table.slot_counts(i)))
                    .collect();
                self.since.insert(*id, start);
            }
        }
        self.committed = self.staged.clone();
        Ok(())
    }

    fn counters(&self, id: RuleId) -> Option<RuleCounters> {
        let mut c = RuleCounters::default();
        for &(i, start) in self.since.get(&id)? {
            let now = self.table.slot_counts(i);
            c.packets += now.packets.wrapping_sub(start.packets);
            c.bytes += now.bytes.wrapping_sub(start.bytes);
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_take_effect_at_commit_and_count() {
        let mut sw = SoftSwitch::new(7000, 64, 1, Target::NicQueue(0));
        let t = sw.table();
        let r = sw.insert(Match::class(7000, 3), Target::Host).unwrap();
        assert_eq!(
            t.steer(7003, 10, 0),
            Target::NicQueue(0),
            "staged, not yet committed"
        );
        sw.commit().unwrap();
        assert_eq!(t.steer(7003, 10, 0), Target::Host);
        assert_eq!(t.steer(7003, 20, 0), Target::Host);
        assert_eq!(
            sw.counters(r),
            Some(RuleCounters {
                packets: 2,
                bytes: 30
            })
        );
        sw.update(r, Target::NicQueue(1)).unwrap();
        sw.commit().unwrap();
        assert_eq!(t.steer(7003, 1, 0), Target::NicQueue(1));
        sw.remove(r).unwrap();
        sw.commit().unwrap();
        assert_eq!(t.steer(7003, 1, 0), Target::NicQueue(0));
        assert_eq!(sw.counters(r), None);
        assert_eq!(t.misses(), 2);
    }

    #[test]
    fn each_worker_counts_in_its_own_block_and_a_rule_counts_from_its_commit() {
        const WORKERS: usize = 4;
        const EACH: u64 = 10_000;
        let mut sw = SoftSwitch::new(7000, 8, WORKERS, Target::NicQueue(0));
        let r = sw.insert(Match::class(7000, 2), Target::Host).unwrap();
        sw.commit().unwrap();
        let t = sw.table();
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let t = &t;
                s.spawn(move || {
                    for _ in 0..EACH {
                        assert_eq!(t.steer(7002, 3, w), Target::Host);
                        t.steer(7005, 1, w);
                    }
                });
            }
        });
        // No increment lost although four threads counted at once: the blocks are theirs.
        let all = WORKERS as u64 * EACH;
        assert_eq!(
            sw.counters(r),
            Some(RuleCounters {
                packets: all,
                bytes: 3 * all
            })
        );
        assert_eq!(t.misses(), all);
        // Removed and inserted again: the new rule starts from zero.
        sw.remove(r).unwrap();
        sw.commit().unwrap();
        let r2 = sw.insert(Match::class(7000, 2), Target::Host).unwrap();
        sw.commit().unwrap();
        assert_eq!(sw.counters(r2), Some(RuleCounters::default()));
        t.steer(7002, 7, 1);
        assert_eq!(
            sw.counters(r2),
            Some(RuleCounters {
                packets: 1,
                bytes: 7
            })
        );
    }

    #[test]
    fn ports_outside_the_table_use_the_default() {
        let mut sw = SoftSwitch::new(7000, 4, 1, Target::Drop);
        sw.insert(Match::port(7001), Target::Host).unwrap();
        sw.commit().unwrap();
        let t = sw.table();
        assert_eq!(t.steer(6999, 1, 0), Target::Drop);
        assert_eq!(t.steer(7004, 1, 0), Target::Drop);
        assert_eq!(t.steer(0, 1, 0), Target::Drop);
        assert_eq!(t.steer(u16::MAX, 1, 0), Target::Drop);
        assert_eq!(t.steer(7001, 1, 0), Target::Host);
    }

    #[test]
    fn masks_cover_port_ranges_and_overlaps_are_refused() {
        let mut sw = SoftSwitch::new(7000, 64, 1, Target::Drop);
        // 7000 = 0x1b58: mask 0xfff8 covers 7000..=7007.
        sw.insert(
            Match {
                dst_port: 7000,
                mask: 0xfff8,
            },
            Target::NicQueue(2),
        )
        .unwrap();
        assert!(matches!(
            sw.insert(Match::port(7005), Target::Host),
            Err(SteeringError::Overlap { .. })
        ));
        sw.commit().unwrap();
        let t = sw.table();
        assert!((7000..7008).all(|p| t.steer(p, 1, 0) == Target::NicQueue(2)));
        assert_eq!(t.steer(7008, 1, 0), Target::Drop);
        assert!(matches!(
            sw.update(RuleId(99), Target::Host),
            Err(SteeringError::NoRule(_))
        ));
    }

    #[test]
    fn target_encoding_round_trips() {
        for t in [
            Target::Drop,
            Target::Host,
            Target::NicQueue(0),
            Target::NicQueue(u16::MAX),
        ] {
            assert_eq!(Target::decode(t.encode()), t);
        }
    }
}
