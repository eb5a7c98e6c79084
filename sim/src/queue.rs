//! The event queue: a binary heap ordered by (time, sequence number). Two events at the same
//! instant come out in the order they were scheduled, so a run depends only on the seed, never on
//! how the heap happens to break ties.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Events of type `E`, each due at a time in simulated microseconds.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
    popped: u64,
}

#[derive(Debug)]
struct Scheduled<E> {
    at: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), next_seq: 0, popped: 0 }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `at` (microseconds), after everything already scheduled at `at`.
    pub fn push(&mut self, at: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled { at, seq, event });
    }

    /// The earliest event with its time and its index (how many events were popped before it):
    /// the index names an event in a run, for `--until-event`.
    pub fn pop(&mut self) -> Option<(u64, u64, E)> {
        let s = self.heap.pop()?;
        let index = self.popped;
        self.popped += 1;
        Some((s.at, index, s.event))
    }

    /// When the earliest event is due.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut q = EventQueue::new();
        q.push(30, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        q.push(10, "a3");
        assert_eq!(q.peek_time(), Some(10));
        let out: Vec<(u64, u64, &str)> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(out, [(10, 0, "a1"), (10, 1, "a2"), (10, 2, "a3"), (20, 3, "b"), (30, 4, "c")]);
        assert!(q.is_empty());
        assert_eq!(q.popped(), 5);
    }

    #[test]
    fn events_pushed_while_draining_keep_their_place() {
        let mut q = EventQueue::new();
        q.push(5, 1);
        q.push(5, 2);
        let (_, _, first) = q.pop().unwrap();
        assert_eq!(first, 1);
        // Scheduled "now" from inside an event: after what was already due now.
        q.push(5, 3);
        q.push(4, 0); // in the past: still comes out next, never lost
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop()).map(|e| e.2).collect();
        assert_eq!(rest, [0, 2, 3]);
    }
}
