//! A space-saving heavy-hitter sketch (Metwally, Agrawal and El Abbadi,
//! 2005): the top users of one measure in a fixed number of slots, however
//! many users there are.
//!
//! Guarantees, for a stream of total weight `N` into `k` slots:
//! - an item's estimate is never below its true count, and exceeds it by at
//!   most the slot's `error`, which is at most `N / k`;
//! - every item whose true count is above `N / k` holds a slot.
//!
//! A new item, once the slots are full, takes the smallest slot and its
//! count (that count becomes its error). The slots are a binary min-heap by
//! count, with an index from key to heap position, so that an update and
//! an eviction both cost `O(log k)`: a delivery may rank thousands of users.

use std::collections::HashMap;

/// One counted item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counted {
    pub key: Box<str>,
    /// The estimate: the true count plus at most `error`.
    pub count: u64,
    /// How much of `count` may belong to the items this slot held before.
    pub error: u64,
}

/// The top items of one measure, in at most `capacity` slots.
#[derive(Debug)]
pub(crate) struct SpaceSaving {
    capacity: usize,
    /// The slots, a min-heap by count.
    slots: Vec<Counted>,
    /// Where each counted key's slot is in `slots`.
    index: HashMap<Box<str>, usize>,
    /// The weight of every update so far (`N`), for the error bound.
    total: u64,
}

impl SpaceSaving {
    /// A sketch of up to `capacity` slots (at least one). They are taken
    /// as users turn up, so that a site with few users, or none (there may
    /// be ten thousand sites), holds little.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            total: 0,
        }
    }

    /// Adds `weight` to `key`.
    pub(crate) fn add(&mut self, key: &str, weight: u64) {
        self.total = self.total.saturating_add(weight);
        if let Some(&at) = self.index.get(key) {
            self.slots[at].count = self.slots[at].count.saturating_add(weight);
            self.sift_down(at);
            return;
        }
        let key: Box<str> = key.into();
        if self.slots.len() < self.capacity {
            let at = self.slots.len();
            self.index.insert(key.clone(), at);
            self.slots.push(Counted {
                key,
                count: weight,
                error: 0,
            });
            self.sift_up(at);
            return;
        }
        // Full: the smallest slot (the heap's root) is taken over, and its
        // count is the most the newcomer may have had before (it could
        // have been counted, then evicted).
        let root = &mut self.slots[0];
        self.index.remove(&root.key);
        self.index.insert(key.clone(), 0);
        let min = root.count;
        *root = Counted {
            key,
            count: min.saturating_add(weight),
            error: min,
        };
        self.sift_down(0);
    }

    /// Moves the slot at `at` towards the root while it is smaller than
    /// its parent.
    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.slots[parent].count <= self.slots[at].count {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    /// Moves the slot at `at` towards the leaves while a child is smaller.
    fn sift_down(&mut self, mut at: usize) {
        loop {
            let mut smallest = at;
            for child in [2 * at + 1, 2 * at + 2] {
                if child < self.slots.len() && self.slots[child].count < self.slots[smallest].count
                {
                    smallest = child;
                }
            }
            if smallest == at {
                break;
            }
            self.swap(smallest, at);
            at = smallest;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.slots.swap(a, b);
        for at in [a, b] {
            if let Some(position) = self.index.get_mut(&self.slots[at].key) {
                *position = at;
            }
        }
    }

    /// The `n` largest estimates, largest first. Only those `n` are sorted
    /// and copied, not every slot.
    pub(crate) fn top(&self, n: usize) -> Vec<Counted> {
        let order =
            |a: &&Counted, b: &&Counted| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key));
        let mut slots: Vec<&Counted> = self.slots.iter().collect();
        if n < slots.len() {
            slots.select_nth_unstable_by(n, order);
            slots.truncate(n);
        }
        slots.sort_unstable_by(order);
        slots.into_iter().cloned().collect()
    }

    /// The most any estimate exceeds its true count: `N / k`.
    pub(crate) fn error_bound(&self) -> u64 {
        self.total / self.capacity as u64
    }

    /// The weight of every update so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Slots in use; never more than the capacity.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes this sketch holds: the slots and the index's entries it has
    /// room for, and the keys (twice: a slot's and the index's).
    pub(crate) fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Counted>();
        // A hash map entry: the key, the value and a control byte.
        let entry = std::mem::size_of::<(Box<str>, usize)>() + 1;
        let keys: usize = self.slots.iter().map(|slot| slot.key.len()).sum();
        std::mem::size_of::<Self>()
            + self.slots.capacity() * slot
            + self.index.capacity() * entry
            + 2 * keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_while_there_are_free_slots() {
        let mut sketch = SpaceSaving::new(4);
        for (key, weight) in [("a", 3), ("b", 1), ("a", 2), ("c", 7)] {
            sketch.add(key, weight);
        }
        let top = sketch.top(10);
        let seen: Vec<_> = top.iter().map(|c| (&*c.key, c.count, c.error)).collect();
        assert_eq!(seen, [("c", 7, 0), ("a", 5, 0), ("b", 1, 0)]);
        assert_eq!(sketch.total(), 13);
    }

    #[test]
    fn keeps_its_size_and_its_guarantees_with_more_items_than_slots() {
        let capacity = 16;
        let mut sketch = SpaceSaving::new(capacity);
        let mut truth: HashMap<String, u64> = HashMap::new();
        // Two heavy items among 1,000 light ones, interleaved.
        for round in 0..1000u64 {
            let light = format!("light-{round}");
            sketch.add(&light, 1);
            *truth.entry(light).or_default() += 1;
            if round % 3 == 0 {
                sketch.add("heavy", 5);
                *truth.entry("heavy".into()).or_default() += 5;
            }
            if round % 7 == 0 {
                sketch.add("medium", 4);
                *truth.entry("medium".into()).or_default() += 4;
            }
            assert!(sketch.len() <= capacity);
        }
        let n: u64 = truth.values().sum();
        assert_eq!(sketch.total(), n);
        let bound = sketch.error_bound();
        assert_eq!(bound, n / capacity as u64);
        for counted in sketch.top(capacity) {
            let true_count = truth[&*counted.key];
            assert!(
                counted.count >= true_count,
                "{counted:?} under {true_count}"
            );
            assert!(counted.count - true_count <= counted.error);
            assert!(counted.error <= bound);
        }
        // Every item above N/k holds a slot; the heavy one ranks first.
        let top = sketch.top(capacity);
        for (key, count) in &truth {
            if *count > bound {
                assert!(top.iter().any(|c| &*c.key == key), "{key} ({count}) lost");
            }
        }
        assert_eq!(&*top[0].key, "heavy");
        assert_eq!(sketch.index.len(), sketch.len());
        for (key, &at) in &sketch.index {
            assert_eq!(&sketch.slots[at].key, key);
        }
    }

    #[test]
    fn memory_does_not_grow_with_the_number_of_items() {
        let mut sketch = SpaceSaving::new(8);
        for i in 0..8 {
            sketch.add(&format!("user-{i:04}"), 1);
        }
        let full = sketch.memory_bytes();
        for i in 8..10_000 {
            sketch.add(&format!("user-{i:04}"), 1);
        }
        assert_eq!(sketch.memory_bytes(), full);
    }
}
