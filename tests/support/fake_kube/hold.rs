//! Holding one request before the server looks at it, so a test can act
//! while a client waits for its answer: freeze the client (SIGSTOP), or
//! change the object behind its back, then let the request through. The
//! request is answered from the store as it is when released.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Which request to hold: the `nth` (from 1) with this method, a path
/// ending in `path_end`, and this `Authorization` header.
pub(super) struct HoldSpec {
    method: String,
    path_end: String,
    authorization: String,
    /// Matching requests still to let through before the held one.
    before: Mutex<Option<u32>>,
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

/// A test's handle on a held request.
#[derive(Clone)]
pub struct Hold(Arc<HoldSpec>);

impl Hold {
    pub(super) fn new(method: &str, path_end: &str, authorization: &str, nth: u32) -> Hold {
        Hold(Arc::new(HoldSpec {
            method: method.into(),
            path_end: path_end.into(),
            authorization: authorization.into(),
            before: Mutex::new(Some(nth.max(1) - 1)),
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
        }))
    }

    /// Whether this request is the one to hold (counts it if it matches).
    pub(super) fn takes(&self, method: &str, path: &str, authorization: &str) -> bool {
        let h = &self.0;
        if h.method != method || !path.ends_with(&h.path_end) || h.authorization != authorization {
            return false;
        }
        let mut before = h.before.lock().unwrap();
        match *before {
            Some(0) => {
                *before = None;
                true
            }
            Some(n) => {
                *before = Some(n - 1);
                false
            }
            None => false,
        }
    }

    /// Called by the server for the held request: waits for the release.
    pub(super) async fn wait(&self) {
        self.0.reached.send_replace(true);
        let mut rx = self.0.released.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Waits (bounded) until the request arrived and is being held.
    pub async fn reached(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut rx = self.0.reached.subscribe();
        let got = tokio::time::timeout_at(deadline.into(), rx.wait_for(|r| *r)).await;
        assert!(
            got.is_ok(),
            "{} …{} was not sent within {within:?}",
            self.0.method,
            self.0.path_end
        );
    }

    /// Lets the held request through.
    pub fn release(&self) {
        self.0.released.send_replace(true);
    }
}
