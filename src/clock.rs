//! Time as a dependency, so freeze windows, prompt expiry and idempotency can
//! be tested at fixed instants.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: tests and the scripted demo.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }

    pub fn advance(&self, d: std::time::Duration) {
        let mut t = self.0.lock().unwrap();
        *t += chrono::Duration::from_std(d).expect("duration fits");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Is a request's timestamp `at` within `window` seconds of `now` (Unix
/// seconds)? Checked arithmetic: a timestamp near `i64::MIN` is far from
/// now, not a wrapped-around small difference.
pub fn within(now: i64, at: i64, window: i64) -> bool {
    now.checked_sub(at)
        .and_then(i64::checked_abs)
        .is_some_and(|d| d <= window)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_far_from_now_are_not_fresh() {
        let now = 1_700_000_000;
        assert!(super::within(now, now - 300, 300));
        assert!(super::within(now, now + 300, 300));
        assert!(!super::within(now, now - 301, 300));
        assert!(!super::within(now, now - (1 << 62) - (1 << 62), 300));
        assert!(!super::within(now, i64::MIN, 300));
        assert!(!super::within(-10, i64::MAX, 300));
    }
}
