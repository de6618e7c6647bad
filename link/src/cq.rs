//! A queue pair's software completion queue: finished one-sided ops wait here until the worker
//! polls them. Both backends use it: `shm` completes an op when it is posted, `verbs` moves
//! what the device's completion queue reported. Sized at setup; never allocates afterwards.

use crate::Completion;

pub(crate) struct CompletionQueue {
    slots: Box<[Completion]>,
    head: usize,
    len: usize,
}

impl CompletionQueue {
    /// A queue for `depth` completions (at least one).
    pub(crate) fn new(depth: usize) -> Self {
        CompletionQueue {
            slots: vec![Completion::default(); depth.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Completions waiting to be polled.
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))] // the verbs backend's bound
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Queues a completion. The poster reserved room (it refuses a post when the queue is
    /// full), so there always is.
    pub(crate) fn push(&mut self, c: Completion) {
        debug_assert!(!self.is_full(), "a post reserves its completion's room");
        let i = (self.head + self.len) % self.slots.len();
        self.slots[i] = c;
        self.len += 1;
    }

    /// Moves the oldest completions into `out`; returns how many.
    pub(crate) fn pop_into(&mut self, out: &mut [Completion]) -> usize {
        let n = out.len().min(self.len);
        for slot in out.iter_mut().take(n) {
            *slot = self.slots[self.head];
            self.head = (self.head + 1) % self.slots.len();
        }
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(wr_id: u64) -> Completion {
        Completion {
            wr_id,
            ..Completion::default()
        }
    }

    #[test]
    fn completions_leave_in_order_across_the_wrap() {
        let mut q = CompletionQueue::new(3);
        let mut out = [Completion::default(); 2];
        for round in 0..5u64 {
            q.push(c(round * 2));
            q.push(c(round * 2 + 1));
            assert_eq!(q.len(), 2);
            assert_eq!(q.pop_into(&mut out[..1]), 1);
            assert_eq!(out[0].wr_id, round * 2);
            assert_eq!(q.pop_into(&mut out), 1);
            assert_eq!(out[0].wr_id, round * 2 + 1);
        }
        for i in 0..3 {
            q.push(c(i));
        }
        assert!(q.is_full());
        assert_eq!(q.capacity(), 3);
    }
}
