//! Waiting for a platform to reach a state: one bounded loop for every
//! backend that verifies by reading again (a rollout completing, a
//! controller aborting, a flag served, a receiver done, a gate passed).

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What one look found.
pub enum Look<T, S> {
    /// The wait is over, with its result (which may be a failure).
    Done(T),
    /// Not there yet; what was seen, for progress and the final message.
    Waiting(S),
}

/// How a wait ended.
pub enum Polled<T, S> {
    Done(T),
    /// `timeout` passed; `last` is what the last look saw.
    TimedOut {
        last: S,
        looks: u32,
    },
}

/// Looks with `look` (given the look's number, from 1) until it says done,
/// every `interval`, for at most `timeout`: the last look starts when the
/// timeout is over at the latest, so the wait ends within `timeout` and one
/// look. `changed` hears each waiting state that differs from the one before,
/// for progress reports. An error from a look ends the wait.
pub async fn poll_until<T, S, E, F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut look: F,
    mut changed: impl FnMut(&S),
) -> Result<Polled<T, S>, E>
where
    S: PartialEq,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Look<T, S>, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut last: Option<S> = None;
    let mut looks = 0;
    loop {
        looks += 1;
        let seen = match look(looks).await? {
            Look::Done(t) => return Ok(Polled::Done(t)),
            Look::Waiting(s) => s,
        };
        if last.as_ref() != Some(&seen) {
            changed(&seen);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Polled::TimedOut { last: seen, looks });
        }
        last = Some(seen);
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_wait_ends_when_done_with_every_change_reported_once() {
        let reported = Mutex::new(Vec::new());
        let r: Result<_, ()> = poll_until(
            Duration::from_secs(3600),
            Duration::from_millis(1),
            |n| async move {
                Ok(match n {
                    1 | 2 => Look::Waiting("1 of 3 replicas"),
                    3 => Look::Waiting("2 of 3 replicas"),
                    _ => Look::Done(n),
                })
            },
            |s: &&str| reported.lock().unwrap().push(s.to_string()),
        )
        .await;
        assert!(matches!(r, Ok(Polled::Done(4))));
        assert_eq!(
            reported.into_inner().unwrap(),
            ["1 of 3 replicas", "2 of 3 replicas"]
        );
    }

    #[tokio::test]
    async fn a_wait_that_is_over_looks_once_more_and_an_error_ends_it() {
        // The timeout is over before the first look ends: one look, then
        // the wait reports what it saw instead of sleeping.
        let r: Result<Polled<(), &str>, ()> = poll_until(
            Duration::ZERO,
            Duration::from_secs(3600),
            |_| async { Ok(Look::Waiting("paused")) },
            |_| {},
        )
        .await;
        assert!(matches!(
            r,
            Ok(Polled::TimedOut {
                last: "paused",
                looks: 1
            })
        ));
        let r: Result<Polled<(), ()>, &str> = poll_until(
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            |_| async { Err("403 Forbidden") },
            |_| {},
        )
        .await;
        assert!(matches!(r, Err("403 Forbidden")));
    }
}
