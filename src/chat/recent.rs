//! Delivery IDs seen lately, for dropping a platform's retries of a
//! request already taken. Bounded in time and in number, so a flood of
//! requests cannot grow memory: the oldest are forgotten first. (An
//! action's idempotency key, kept in the store, still makes a late retry
//! act once.)

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The IDs in arrival order, and the same IDs for lookup.
type Seen = (VecDeque<(Instant, String)>, HashSet<String>);

pub struct RecentIds {
    window: Duration,
    max: usize,
    inner: Mutex<Seen>,
}

impl RecentIds {
    pub fn new(window: Duration, max: usize) -> RecentIds {
        RecentIds {
            window,
            max,
            inner: Mutex::new((VecDeque::new(), HashSet::new())),
        }
    }

    /// True the first time `id` is seen within the window.
    pub fn first_time(&self, id: &str) -> bool {
        let mut guard = self.inner.lock().unwrap();
        let (order, set) = &mut *guard;
        while let Some((at, old)) = order.front() {
            if at.elapsed() < self.window && order.len() < self.max {
                break;
            }
            set.remove(old);
            order.pop_front();
        }
        if !set.insert(id.to_string()) {
            return false;
        }
        order.push_back((Instant::now(), id.to_string()));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_dropped_and_memory_stays_bounded() {
        let r = RecentIds::new(Duration::from_secs(600), 100);
        assert!(r.first_time("a"));
        assert!(!r.first_time("a"));
        for i in 0..10_000 {
            assert!(r.first_time(&format!("id{i}")));
        }
        assert!(r.len() <= 100);
        // The oldest went first; the newest are still known.
        assert!(r.first_time("a"));
        assert!(!r.first_time("id9999"));
    }

    #[test]
    fn ids_are_forgotten_after_the_window() {
        let r = RecentIds::new(Duration::from_millis(20), 100);
        assert!(r.first_time("a"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.first_time("a"));
    }
}
