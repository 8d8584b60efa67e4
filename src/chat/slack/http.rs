//! HTTP mode: `POST /slack/commands`, `/slack/interactions` (buttons and
//! form submissions), `/slack/events`.
//!
//! Every request is verified before anything else is read: `X-Slack-Signature`
//! must be `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` under the
//! signing secret (compared in constant time by `hmac`'s `verify_slice`),
//! the timestamp within 5 minutes of now, and the signature not seen before
//! (a replay). slack-morphism's `SlackEventSignatureVerifier` reads the wall
//! clock itself and its axum layer answers 400; checking here keeps the
//! status at 401 and the clock testable.
//! Anything else is answered 401, counted in `rollbot_signature_failures`,
//! and has no other effect.

use super::inbound::Inbound;
use crate::telemetry::{PlatformLabels, Telemetry};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Slack's window for a request's timestamp.
pub const MAX_AGE_SECS: i64 = 300;

pub struct Verifier {
    secret: Vec<u8>,
    /// Signatures already accepted (see `chat/replay.rs`).
    replays: crate::chat::replay::ReplayGuard,
    telemetry: Arc<Telemetry>,
}

impl Verifier {
    /// A verifier for a process that started taking requests now.
    pub fn new(secret: &str, telemetry: Arc<Telemetry>) -> Verifier {
        Verifier::started_at(secret, telemetry, chrono::Utc::now().timestamp())
    }

    pub fn started_at(secret: &str, telemetry: Arc<Telemetry>, started: i64) -> Verifier {
        Verifier {
            secret: secret.as_bytes().to_vec(),
            replays: crate::chat::replay::ReplayGuard::new(started, MAX_AGE_SECS),
            telemetry,
        }
    }

    /// Checks a request at `now` (Unix seconds): signed by Slack, fresh,
    /// and not seen before; the error says why not.
    pub fn check(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
        let (signature, at) = self.signed(headers, body, now)?;
        // Keyed by the decoded bytes: `v0=AB…` and `v0=ab…` are the same
        // signature, so the same replay.
        self.replays.first_time(&signature, at, now)
    }

    /// The request's signature bytes and timestamp, if Slack signed it
    /// within the window; the error says why not.
    pub fn signed(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(Vec<u8>, i64), &'static str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(sig), Some(ts)) = (
            header("x-slack-signature"),
            header("x-slack-request-timestamp"),
        ) else {
            return Err("missing X-Slack-Signature or X-Slack-Request-Timestamp");
        };
        let Ok(at) = ts.parse::<i64>() else {
            return Err("bad timestamp");
        };
        if !crate::clock::within(now, at, MAX_AGE_SECS) {
            return Err("timestamp more than 5 minutes from now");
        }
        let Some(Ok(expected)) = sig.strip_prefix("v0=").map(hex::decode) else {
            return Err("signature is not v0=<hex>");
        };
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| "bad signing secret")?;
        mac.update(b"v0:");
        mac.update(ts.as_bytes());
        mac.update(b":");
        mac.update(body);
        if mac.verify_slice(&expected).is_err() {
            return Err("signature does not match");
        }
        Ok((expected, at))
    }

    fn refuse(&self, why: &str) -> Response {
        self.telemetry
            .signature_failures
            .get_or_create(&PlatformLabels {
                platform: "slack".into(),
            })
            .inc();
        tracing::warn!(reason = why, "slack request refused");
        (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
    }
}

#[derive(Clone)]
struct Http {
    inbound: Arc<Inbound>,
    verifier: Arc<Verifier>,
}

impl Http {
    /// The 401 answer when the request is not from Slack.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        let now = chrono::Utc::now().timestamp();
        self.verifier
            .check(headers, body, now)
            .err()
            .map(|why| self.verifier.refuse(why))
    }
}

pub fn routes(inbound: Arc<Inbound>, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .route("/slack/events", post(events))
        .with_state(Http { inbound, verifier })
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "slack: unreadable {what}");
    (StatusCode::BAD_REQUEST, format!("unreadable {what}: {e}\n")).into_response()
}

async fn commands(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = h.verify(&headers, &body) {
        return r;
    }
    let event: SlackCommandEvent = match serde_urlencoded::from_bytes(&body) {
        Ok(e) => e,
        Err(e) => return bad_request("slash command", e),
    };
    Json(h.inbound.command(event)).into_response()
}

async fn interactions(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = h.verify(&headers, &body) {
        return r;
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return bad_request("interaction", e),
    };
    let Some(payload) = form.get("payload") else {
        return bad_request("interaction", "no payload field");
    };
    match serde_json::from_str::<SlackInteractionEvent>(payload) {
        // A form that must stay open says why (`response_action: errors`).
        Ok(ev) => match h.inbound.interaction(ev) {
            Some(answer) => Json(answer).into_response(),
            None => StatusCode::OK.into_response(),
        },
        // Another kind of interaction (a shortcut): nothing to do.
        Err(e) => {
            tracing::info!(error = %e, "slack: interaction not handled");
            StatusCode::OK.into_response()
        }
    }
}

async fn events(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = h.verify(&headers, &body) {
        return r;
    }
    match serde_json::from_slice::<SlackPushEvent>(&body) {
        Ok(SlackPushEvent::UrlVerification(v)) => {
            Json(json!({"challenge": v.challenge})).into_response()
        }
        Ok(SlackPushEvent::EventCallback(cb)) => {
            h.inbound.event(cb);
            StatusCode::OK.into_response()
        }
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => bad_request("event", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(sig: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-signature", HeaderValue::from_str(sig).unwrap());
        h.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_str(ts).unwrap(),
        );
        h
    }

    /// Slack's own example from "Verifying requests from Slack".
    #[test]
    fn slacks_documented_example_verifies_once() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let started = 1531420600;
        let v = Verifier::started_at(secret, Arc::new(Telemetry::new()), started);
        let h = headers(sig, "1531420618");
        let replay = Err("replayed request");
        assert_eq!(v.check(&h, body.as_bytes(), 1531420618 + 10), Ok(()));
        assert_eq!(v.check(&h, body.as_bytes(), 1531420618 + 20), replay);
        assert_eq!(
            v.check(&h, body.as_bytes(), 1531420618 + 360),
            Err("timestamp more than 5 minutes from now")
        );
        // The same signature in upper or mixed case is still a replay.
        let upper = format!("v0={}", sig[3..].to_uppercase());
        assert_eq!(
            v.check(
                &headers(&upper, "1531420618"),
                body.as_bytes(),
                1531420618 + 30
            ),
            replay
        );
        // After a restart the request, signed before it, is still refused.
        let again = Verifier::started_at(secret, Arc::new(Telemetry::new()), 1531420640);
        assert!(again
            .check(&h, body.as_bytes(), 1531420618 + 40)
            .unwrap_err()
            .starts_with("signed before rollbot started"));
        let v2 = Verifier::new("another-secret", Arc::new(Telemetry::new()));
        assert_eq!(
            v2.signed(&h, body.as_bytes(), 1531420618),
            Err("signature does not match")
        );
        assert!(v2
            .signed(&HeaderMap::new(), body.as_bytes(), 1531420618)
            .is_err());
    }

    /// now − 2^63 is 2^63 seconds away, not (after wrapping) a few.
    #[test]
    fn a_timestamp_near_the_start_of_i64_is_stale() {
        let v = Verifier::new("secret", Arc::new(Telemetry::new()));
        let now = 1_700_000_000_i64;
        let at = now - (1 << 62) - (1 << 62);
        let body = b"text=";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(format!("v0:{at}:").as_bytes());
        mac.update(body);
        let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            v.signed(&headers(&sig, &at.to_string()), body, now),
            Err("timestamp more than 5 minutes from now")
        );
    }
}
