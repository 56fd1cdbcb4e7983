//! [`Recent`]: the latest items of a process-wide kind (requests with violations, drained task violations, stuck
//! polls), bounded: past its capacity the oldest go, and are counted.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// The latest items, oldest first, at most `capacity` of them (a batch added at once is kept whole).
pub(crate) struct Recent<T> {
    capacity: usize,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    items: VecDeque<T>,
    stored: u64,
    evicted: u64,
}

impl<T: Clone> Recent<T> {
    pub(crate) const fn new(capacity: usize) -> Recent<T> {
        Recent { capacity, inner: Mutex::new(Inner { items: VecDeque::new(), stored: 0, evicted: 0 }) }
    }

    /// Adds `item`, evicting the oldest when full.
    pub(crate) fn push(&self, item: T) {
        let mut inner = self.lock();
        if inner.items.len() >= self.capacity {
            inner.items.pop_front();
            inner.evicted += 1;
        }
        inner.items.push_back(item);
        inner.stored += 1;
    }

    /// Adds a batch, evicting as many of the oldest as make room for it (a batch larger than the capacity is kept
    /// whole, with everything older evicted).
    pub(crate) fn extend(&self, batch: impl ExactSizeIterator<Item = T>) {
        let mut inner = self.lock();
        let n = batch.len();
        let overflow = (inner.items.len() + n).saturating_sub(self.capacity).min(inner.items.len());
        inner.items.drain(..overflow);
        inner.evicted += overflow as u64;
        inner.items.extend(batch);
        inner.stored += n as u64;
    }

    /// Runs `f` on the items, oldest first (to find or replace one in place).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut VecDeque<T>) -> R) -> R {
        f(&mut self.lock().items)
    }

    /// The items, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<T> {
        self.lock().items.iter().cloned().collect()
    }

    /// How many items were added and how many evicted, since the process started.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.stored, inner.evicted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_and_counts_the_evicted() {
        let r = Recent::new(3);
        (1..=5).for_each(|i| r.push(i));
        assert_eq!(r.to_vec(), [3, 4, 5]);
        assert_eq!(r.counts(), (5, 2));
        r.extend([6, 7].into_iter());
        assert_eq!(r.to_vec(), [5, 6, 7]);
        r.extend([8, 9, 10, 11].into_iter());
        assert_eq!(r.to_vec(), [8, 9, 10, 11], "a batch larger than the capacity is kept whole");
        assert_eq!(r.counts(), (11, 7));
    }
}
