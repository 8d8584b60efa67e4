//! Circuit breakers and bulkheads around everything rollbot calls out to.
//!
//! A breaker opens after repeated failures so a dead dependency fails fast
//! with a clear message instead of hanging every caller; after a cooldown one
//! trial call is let through (half-open) and its result closes or re-opens it.
//! A bulkhead is a bounded pool per dependency, so a slow chat API or a hung
//! Prometheus can never take the slots a rollback needs.

use crate::telemetry::{BreakerLabels, BreakerTransition, Telemetry};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

struct Inner {
    state: State,
    failures: u32,
    opened_at: Option<Instant>,
    last_error: Option<String>,
    trial_in_flight: bool,
}

/// A snapshot for `/status`.
#[derive(Clone, Debug)]
pub struct BreakerStatus {
    pub name: String,
    pub state: State,
    pub failures: u32,
    pub last_error: Option<String>,
}

pub struct Breaker {
    name: String,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
    /// Slots for actions (rollback, promote, …).
    pool: Semaphore,
    /// Slots for reads (`/status`), apart: a flood of reads never takes
    /// the slot a rollback needs.
    reads: Semaphore,
    telemetry: Arc<Telemetry>,
}

/// Which pool a call takes its slot from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Action,
    Read,
}

/// Why a guarded call did not run or did not finish.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected<E> {
    /// The breaker is open; nothing was called.
    Open {
        name: String,
        retry_in: Duration,
        last_error: Option<String>,
    },
    /// The call ran past its time limit.
    Timeout(Duration),
    /// The call itself failed.
    Inner(E),
}

impl Breaker {
    pub fn new(
        name: impl Into<String>,
        threshold: u32,
        cooldown: Duration,
        pool: usize,
        telemetry: Arc<Telemetry>,
    ) -> Breaker {
        let b = Breaker {
            name: name.into(),
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                opened_at: None,
                last_error: None,
                trial_in_flight: false,
            }),
            pool: Semaphore::new(pool.max(1)),
            reads: Semaphore::new(pool.max(1)),
            telemetry,
        };
        b.telemetry
            .breaker_state
            .get_or_create(&BreakerLabels {
                breaker: b.name.clone(),
            })
            .set(0);
        b
    }

    pub fn status(&self) -> BreakerStatus {
        let i = self.inner.lock().unwrap();
        BreakerStatus {
            name: self.name.clone(),
            state: i.state,
            failures: i.failures,
            last_error: i.last_error.clone(),
        }
    }

    fn transition(&self, inner: &mut Inner, to: State) {
        if inner.state == to {
            return;
        }
        tracing::warn!(breaker = %self.name, from = inner.state.name(), to = to.name(), last_error = ?inner.last_error, "circuit breaker changed state");
        inner.state = to;
        self.telemetry
            .breaker_state
            .get_or_create(&BreakerLabels {
                breaker: self.name.clone(),
            })
            .set(to.gauge());
        self.telemetry
            .breaker_transitions
            .get_or_create(&BreakerTransition {
                breaker: self.name.clone(),
                to: to.name().into(),
            })
            .inc();
    }

    /// Decides whether a call may go ahead now.
    fn admit<E>(&self) -> Result<(), Rejected<E>> {
        let mut i = self.inner.lock().unwrap();
        match i.state {
            State::Closed => Ok(()),
            State::Open => {
                let since = i.opened_at.map(|t| t.elapsed()).unwrap_or_default();
                if since >= self.cooldown {
                    self.transition(&mut i, State::HalfOpen);
                    i.trial_in_flight = true;
                    Ok(())
                } else {
                    Err(Rejected::Open {
                        name: self.name.clone(),
                        retry_in: self.cooldown - since,
                        last_error: i.last_error.clone(),
                    })
                }
            }
            State::HalfOpen if !i.trial_in_flight => {
                i.trial_in_flight = true;
                Ok(())
            }
            State::HalfOpen => Err(Rejected::Open {
                name: self.name.clone(),
                retry_in: Duration::ZERO,
                last_error: i.last_error.clone(),
            }),
        }
    }

    fn record(&self, ok: bool, error: Option<String>) {
        let mut i = self.inner.lock().unwrap();
        i.trial_in_flight = false;
        if ok {
            i.failures = 0;
            self.transition(&mut i, State::Closed);
            return;
        }
        i.failures += 1;
        i.last_error = error;
        if i.state == State::HalfOpen || i.failures >= self.threshold {
            i.opened_at = Some(Instant::now());
            self.transition(&mut i, State::Open);
        }
    }

    /// Runs an action `f` inside this dependency's pool, with a time limit,
    /// through the breaker. `counts_as_failure` tells which errors are the
    /// dependency's fault (a refusal such as "revision does not exist" is
    /// not).
    pub async fn call<T, E, F>(
        &self,
        timeout: Duration,
        f: F,
        counts_as_failure: impl Fn(&E) -> bool,
    ) -> Result<T, Rejected<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        self.call_in(Lane::Action, timeout, f, counts_as_failure)
            .await
    }

    /// [`Breaker::call`] in the given lane. The time limit covers the wait
    /// for a slot too; a wait that runs out is not the dependency's fault
    /// and does not count against it.
    pub async fn call_in<T, E, F>(
        &self,
        lane: Lane,
        timeout: Duration,
        f: F,
        counts_as_failure: impl Fn(&E) -> bool,
    ) -> Result<T, Rejected<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        self.admit()?;
        let started = Instant::now();
        let pool = match lane {
            Lane::Action => &self.pool,
            Lane::Read => &self.reads,
        };
        let _slot = match tokio::time::timeout(timeout, pool.acquire()).await {
            Ok(slot) => slot.expect("breaker pool is never closed"),
            Err(_) => {
                // Admitted as a half-open trial but never made: let another try.
                self.inner.lock().unwrap().trial_in_flight = false;
                return Err(Rejected::Timeout(timeout));
            }
        };
        let timeout = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(timeout, f).await {
            Err(_) => {
                self.record(
                    false,
                    Some(format!(
                        "no answer within {}",
                        crate::domain::human_duration(timeout)
                    )),
                );
                Err(Rejected::Timeout(timeout))
            }
            Ok(Ok(v)) => {
                self.record(true, None);
                Ok(v)
            }
            Ok(Err(e)) => {
                if counts_as_failure(&e) {
                    self.record(false, Some(e.to_string()));
                } else {
                    self.record(true, None);
                }
                Err(Rejected::Inner(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new(
            "backend:test",
            threshold,
            Duration::from_millis(cooldown_ms),
            2,
            Arc::new(Telemetry::new()),
        )
    }

    async fn fail(b: &Breaker) -> Result<(), Rejected<String>> {
        b.call(
            Duration::from_secs(1),
            async { Err::<(), _>("503 from upstream".to_string()) },
            |_| true,
        )
        .await
    }

    #[tokio::test]
    async fn opens_after_threshold_then_half_opens_and_closes() {
        let b = breaker(3, 50);
        for _ in 0..3 {
            assert!(matches!(fail(&b).await, Err(Rejected::Inner(_))));
        }
        assert_eq!(b.status().state, State::Open);
        // Open: the call is not made at all.
        let called = std::sync::atomic::AtomicBool::new(false);
        let r = b
            .call(
                Duration::from_secs(1),
                async {
                    called.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, String>(())
                },
                |_| true,
            )
            .await;
        assert!(matches!(r, Err(Rejected::Open { .. })));
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Half-open trial succeeds and closes the breaker.
        assert!(b
            .call(Duration::from_secs(1), async { Ok::<_, String>(1) }, |_| {
                true
            })
            .await
            .is_ok());
        assert_eq!(b.status().state, State::Closed);
        let metrics = b.telemetry.render();
        assert!(
            metrics.contains(
                "rollbot_breaker_transitions_total{breaker=\"backend:test\",to=\"open\"} 1"
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn failed_trial_reopens_and_refusals_do_not_count() {
        let b = breaker(1, 10);
        let _ = fail(&b).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = fail(&b).await;
        assert_eq!(b.status().state, State::Open);
        let b = breaker(1, 10);
        let r = b
            .call(
                Duration::from_secs(1),
                async { Err::<(), _>("no such revision".to_string()) },
                |_| false,
            )
            .await;
        assert!(matches!(r, Err(Rejected::Inner(_))));
        assert_eq!(b.status().state, State::Closed);
    }

    #[tokio::test]
    async fn a_hung_call_times_out_and_counts() {
        let b = breaker(1, 1000);
        let r = b
            .call(
                Duration::from_millis(20),
                std::future::pending::<Result<(), String>>(),
                |_| true,
            )
            .await;
        assert!(matches!(r, Err(Rejected::Timeout(_))));
        assert_eq!(b.status().state, State::Open);
    }
}
