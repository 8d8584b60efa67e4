//! Sends each action as a signed JSON POST to a receiver rollbot does not
//! know (a deploy script behind HTTP, a CI job, a Spinnaker pipeline).
//!
//! Signature: `X-Rollbot-Signature: sha256=<hex HMAC-SHA256(secret,
//! "{X-Rollbot-Timestamp}.{body}")>`, with the Unix time in seconds in
//! `X-Rollbot-Timestamp`. 2xx is success; 4xx is a failure reported with the
//! beginning of the answer; 5xx, connection errors and timeouts are retried
//! with exponential backoff and the same `Idempotency-Key`. An optional
//! `status_url` is polled (signed GET) to verify the action finished.
//!
//! The `Idempotency-Key` header (and the body's `idempotency_key`) is the
//! engine's key for the action, unique across everything that asks rollbot
//! to act, so a receiver can deduplicate on it alone: an HTTP API call with
//! `"idempotency_key": "ci-1234"` from the client `ci` arrives as
//! `api:ci:ci-1234` (sent as the client gave it, two clients' keys could
//! meet and the second action would be dropped as a repeat), a controller
//! step as `controller:ROLLOUT:STEP`, a prompt's button as
//! `prompt:ID:approve`, and the correlation id when nobody gave a key.
//! Header names go out in lower case (`idempotency-key`,
//! `x-rollbot-signature`, `x-rollbot-timestamp`), as HTTP/2 requires and
//! HTTP/1.1 allows: receivers must look them up case-insensitively.

use super::factory::{BackendSettings, BuildContext, Built, CheckContext};
use super::poll::{poll_until, Look, Polled};
use super::*;
use crate::config::{ConfigError, EnvRef, HumanDuration, SecretSource};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How the backend is set up; built from `[backends.NAME]` with `type = "webhook"`.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: String,
    /// Polled after an action; `{service}`, `{environment}`, `{action}`,
    /// `{correlation_id}` and `{idempotency_key}` are filled in.
    pub status_url: Option<String>,
    pub secret: Option<SecretSource>,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
    /// How long `status_url` is polled before verification gives up.
    pub status_timeout: Duration,
    pub status_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            url: String::new(),
            status_url: None,
            secret: None,
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(500),
            status_timeout: Duration::from_secs(60),
            status_interval: Duration::from_secs(2),
        }
    }
}

/// `[backends.NAME]` with `type = "webhook"`: POSTs each action as signed
/// JSON to a URL (see docs/backends/webhook.md for the signature scheme
/// receivers check).
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where actions are POSTed (`http://` or `https://`).
    url: String,
    /// Optional URL polled (signed GET) after an action until the
    /// receiver answers `{"state": "done"|"failed"|"running"}`;
    /// `{service}`, `{environment}`, `{action}`, `{correlation_id}` and
    /// `{idempotency_key}` are filled in.
    #[serde(default)]
    status_url: Option<String>,
    /// HMAC-SHA256 signing secret: `"${ENV_VAR}"`, or `secret_file`.
    #[serde(default)]
    secret: Option<EnvRef>,
    #[serde(default)]
    secret_file: Option<std::path::PathBuf>,
    /// Time limit of one request (default 10s).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// Retries after the first attempt on 5xx, connection errors and
    /// timeouts, with the same idempotency key (default 3, at most 10).
    #[serde(default)]
    retries: Option<u32>,
    /// Wait before the first retry, doubled each time (default 500ms).
    #[serde(default)]
    backoff: Option<HumanDuration>,
    /// How long `status_url` is polled before verification gives up
    /// (default 60s).
    #[serde(default)]
    status_timeout: Option<HumanDuration>,
    /// Pause between polls (default 2s).
    #[serde(default)]
    status_interval: Option<HumanDuration>,
}

impl WebhookConfig {
    /// The settings with defaults filled in.
    fn settings(&self) -> WebhookSettings {
        let d = WebhookSettings::default();
        WebhookSettings {
            url: self.url.clone(),
            status_url: self.status_url.clone(),
            // Checked when the config was loaded.
            secret: SecretSource::from_pair(
                "secret",
                self.secret.as_ref(),
                self.secret_file.as_ref(),
            )
            .ok()
            .flatten(),
            timeout: self.timeout.map(|t| t.0).unwrap_or(d.timeout),
            retries: self.retries.unwrap_or(d.retries),
            backoff: self.backoff.map(|t| t.0).unwrap_or(d.backoff),
            status_timeout: self.status_timeout.map(|t| t.0).unwrap_or(d.status_timeout),
            status_interval: self
                .status_interval
                .map(|t| t.0)
                .unwrap_or(d.status_interval),
        }
    }
}

impl BackendSettings for WebhookConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        // The engine cuts every backend call at backend_timeout; the
        // webhook's own limits must end first so its report survives.
        let d = WebhookSettings::default();
        let worst = worst_case(
            self.timeout.map(|t| t.0).unwrap_or(d.timeout),
            self.retries.unwrap_or(d.retries).min(10),
            self.backoff.map(|t| t.0).unwrap_or(d.backoff),
        );
        let limit = cx.backend_timeout;
        // Polling is a separate call (verify), with its own limit.
        let poll = match self.status_url {
            Some(_) => self.status_timeout.map(|t| t.0).unwrap_or(d.status_timeout),
            None => Duration::ZERO,
        };
        if self.retries.unwrap_or(d.retries) <= 10 && (worst >= limit || poll >= limit) {
            errors.push(
                cx.error(format!(
                    "a request with its retries can take {}{}, but [engine] backend_timeout is {}",
                    crate::domain::human_duration(worst),
                    if self.status_url.is_some() {
                        format!(" and polling status_url {}", crate::domain::human_duration(poll))
                    } else {
                        String::new()
                    },
                    crate::domain::human_duration(limit)
                ))
                .help("lower timeout, retries or status_timeout, or raise backend_timeout in [engine]"),
            );
        }
        for (key, u) in [
            ("url", Some(&self.url)),
            ("status_url", self.status_url.as_ref()),
        ] {
            if let Some(u) = u {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    errors.push(
                        cx.error(format!("{key} `{u}` is not an http:// or https:// URL"))
                            .help("write the receiver's full URL, for example \"https://deploy.example.com/rollbot\""),
                    );
                }
            }
        }
        match SecretSource::from_pair("secret", self.secret.as_ref(), self.secret_file.as_ref()) {
            Err(e) => errors.push(cx.error(e)),
            Ok(None) => errors.push(cx.error("a webhook needs a signing secret").help(
                "write secret = \"${ROLLBOT_WEBHOOK_SECRET}\" or secret_file = \"/path/to/secret\"",
            )),
            Ok(Some(_)) => {}
        }
        if self.retries.is_some_and(|r| r > 10) {
            errors.push(
                cx.error("retries must be at most 10")
                    .help("a rollback should not wait minutes on a receiver that keeps failing"),
            );
        }
        errors
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        WebhookBackend::new(self.settings()).into()
    }
}

pub struct WebhookBackend {
    s: WebhookSettings,
    http: reqwest::Client,
}

/// The longest a POST with its retries can take: every attempt hits its time
/// limit, with the backoff waits between them.
pub fn worst_case(timeout: Duration, retries: u32, backoff: Duration) -> Duration {
    let mut total = timeout * (retries + 1);
    let mut wait = backoff;
    for _ in 0..retries {
        total += wait;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    total
}

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The signature header's value for a timestamp and body.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header in constant time (for receivers written in Rust,
/// and for the tests).
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(sig) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The URL without its query string, for messages (a query may hold a token).
fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// A duration for messages, in milliseconds below a second.
fn limit(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        crate::domain::human_duration(d)
    }
}

/// At most `max` bytes of `text`, on one line.
fn beginning(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= max {
        return flat;
    }
    let mut cut = max;
    while !flat.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &flat[..cut])
}

enum Attempt {
    Answer(u16, String),
    Timeout,
    Connect(String),
}

impl WebhookBackend {
    pub fn new(s: WebhookSettings) -> WebhookBackend {
        let http = reqwest::Client::builder()
            .user_agent(concat!("rollbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        WebhookBackend { s, http }
    }

    fn secret(&self) -> Result<Vec<u8>, BackendError> {
        let src = self.s.secret.as_ref().ok_or_else(|| {
            BackendError::failed(
                "the webhook backend has no secret; set secret = \"${VAR}\" or secret_file",
            )
        })?;
        src.resolve()
            .map(|v| v.expose().as_bytes().to_vec())
            .map_err(|e| BackendError::failed(format!("webhook signing secret: {e}")))
    }

    /// `status_url` with its placeholders filled, each value
    /// percent-encoded: an idempotency key such as `api:ci:deploy 42/7`
    /// must stay one path segment or query value.
    fn fill(&self, template: &str, t: &Target, action: &str, ctx: &CallContext) -> String {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let enc = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
        let values = [
            ("service", enc(&t.service)),
            ("environment", enc(&t.environment)),
            ("action", enc(action)),
            ("correlation_id", enc(&ctx.correlation_id)),
            ("idempotency_key", enc(&ctx.idempotency_key)),
        ];
        let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::fill(template, &values)
    }

    async fn once(
        &self,
        method: reqwest::Method,
        url: &str,
        secret: &[u8],
        body: &[u8],
        key: &str,
    ) -> Attempt {
        let ts = chrono::Utc::now().timestamp().to_string();
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(self.s.timeout)
            .header("X-Rollbot-Timestamp", &ts)
            .header("X-Rollbot-Signature", sign(secret, &ts, body))
            .header("Idempotency-Key", key);
        if method == reqwest::Method::POST {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_vec());
        }
        match req.send().await {
            Err(e) if e.is_timeout() => Attempt::Timeout,
            Err(e) => Attempt::Connect(e.without_url().to_string()),
            Ok(r) => {
                let code = r.status().as_u16();
                match tokio::time::timeout(self.s.timeout, r.text()).await {
                    Ok(Ok(text)) => Attempt::Answer(code, text),
                    Ok(Err(e)) if e.is_timeout() => Attempt::Timeout,
                    Ok(Err(e)) => Attempt::Connect(e.without_url().to_string()),
                    Err(_) => Attempt::Timeout,
                }
            }
        }
    }

    /// The signed body of one action, as sent and as a dry run shows it.
    fn body(
        action: &str,
        t: &Target,
        to: Option<&str>,
        extra: serde_json::Value,
        ctx: &CallContext,
    ) -> Vec<u8> {
        let mut body = serde_json::json!({
            "action": action,
            "service": t.service,
            "environment": t.environment,
            "from_revision": serde_json::Value::Null,
            "to_revision": to,
            "actor": ctx.actor,
            "reason": ctx.reason,
            "correlation_id": ctx.correlation_id,
            "idempotency_key": ctx.idempotency_key,
            "rollback": action == "rollback",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::to_vec(&body).expect("JSON")
    }

    /// Sends one action with retries. Returns the 2xx answer's body and one
    /// line per attempt for the audit entry.
    async fn post(
        &self,
        action: &str,
        t: &Target,
        to: Option<&str>,
        extra: serde_json::Value,
        ctx: &CallContext,
    ) -> Result<(String, Vec<String>), BackendError> {
        let secret = self.secret()?;
        let body = Self::body(action, t, to, extra, ctx);
        let attempts = self.s.retries + 1;
        let mut trail = Vec::new();
        let mut wait = self.s.backoff;
        for n in 1..=attempts {
            // Each attempt, a retry after a pause too, asks the fence.
            if let Err(f) = crate::fence::check(&format!("POST {} {action}", shown(&self.s.url))) {
                return Err(BackendError::Failed {
                    message: f.0,
                    requests: trail,
                });
            }
            let started = std::time::Instant::now();
            let got = self
                .once(
                    reqwest::Method::POST,
                    &self.s.url,
                    &secret,
                    &body,
                    &ctx.idempotency_key,
                )
                .await;
            let took = started.elapsed().as_millis();
            let head = format!(
                "POST {} {action} (attempt {n}/{attempts}, key {})",
                shown(&self.s.url),
                ctx.idempotency_key
            );
            let retry = match got {
                Attempt::Answer(code, text) if (200..300).contains(&code) => {
                    trail.push(format!(
                        "{head} → {code} in {took} ms: {}",
                        beginning(&text, 200)
                    ));
                    return Ok((text, trail));
                }
                Attempt::Answer(code, text) if code < 500 => {
                    trail.push(format!(
                        "{head} → {code} in {took} ms: {}",
                        beginning(&text, 200)
                    ));
                    return Err(BackendError::Failed {
                        message: format!(
                            "the webhook refused {action} with HTTP {code}: {}\nThe receiver should not have acted; fix what it names, or do the {action} by hand in the pipeline behind {}.",
                            beginning(&text, 300),
                            shown(&self.s.url),
                        ),
                        requests: trail,
                    });
                }
                Attempt::Answer(code, text) => {
                    trail.push(format!(
                        "{head} → {code} in {took} ms: {}",
                        beginning(&text, 200)
                    ));
                    format!("HTTP {code}")
                }
                Attempt::Timeout => {
                    trail.push(format!(
                        "{head} → no answer within {}",
                        limit(self.s.timeout)
                    ));
                    format!("no answer within {}", limit(self.s.timeout))
                }
                Attempt::Connect(e) => {
                    trail.push(format!("{head} → {e}"));
                    e
                }
            };
            if n == attempts {
                return Err(BackendError::Failed {
                    message: format!(
                        "the webhook did not accept {action} after {attempts} attempts (last: {retry})\nAn attempt that timed out may still have acted: check the pipeline behind {} for idempotency key {} before doing the {action} by hand.",
                        shown(&self.s.url),
                        ctx.idempotency_key,
                    ),
                    requests: trail,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        unreachable!("the loop returns on its last attempt")
    }

    async fn act(
        &self,
        action: &str,
        t: &Target,
        to: Option<&str>,
        extra: serde_json::Value,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let (answer, requests) = self.post(action, t, to, extra, ctx).await?;
        // A receiver may answer with the revisions it used.
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Ok(ActionReport {
            summary: field("detail").unwrap_or_else(|| {
                format!("the webhook at {} accepted {action}", shown(&self.s.url))
            }),
            from_revision: field("from_revision"),
            to_revision: field("to_revision").or_else(|| to.map(str::to_string)),
            changed: true,
            requests,
        })
    }

    /// Polls `status_url` until the receiver says done or failed.
    async fn poll(&self, url: &str, key: &str) -> Result<Verification, BackendError> {
        let secret = self.secret()?;
        let secret = &secret;
        let waited = poll_until(
            self.s.status_timeout,
            self.s.status_interval,
            |polls| async move {
                let got = self.once(reqwest::Method::GET, url, secret, b"", key).await;
                Ok::<_, BackendError>(match got {
                    Attempt::Answer(code, text) if (200..300).contains(&code) => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        let state = v.get("state").and_then(|s| s.as_str()).unwrap_or("");
                        let detail = match v.get("detail") {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        let said = format!("GET {} → {code} {state}: {detail}", shown(url));
                        match state {
                            "done" => Look::Done(Verification {
                                ok: true,
                                detail: format!(
                                    "the receiver reports done after {polls} polls ({said})"
                                ),
                            }),
                            "failed" => Look::Done(Verification {
                                ok: false,
                                detail: format!(
                                    "the receiver reports failed after {polls} polls ({said})"
                                ),
                            }),
                            "running" => Look::Waiting(said),
                            _ => Look::Waiting(format!(
                                "GET {} → {code} without a state of done, failed or running: {}",
                                shown(url),
                                beginning(&text, 200)
                            )),
                        }
                    }
                    Attempt::Answer(code, text) => Look::Waiting(format!(
                        "GET {} → {code}: {}",
                        shown(url),
                        beginning(&text, 200)
                    )),
                    Attempt::Timeout => Look::Waiting(format!("GET {} → no answer", shown(url))),
                    Attempt::Connect(e) => Look::Waiting(format!("GET {} → {e}", shown(url))),
                })
            },
            |_| {},
        )
        .await?;
        Ok(match waited {
            Polled::Done(v) => v,
            Polled::TimedOut { last, looks } => Verification {
                ok: false,
                detail: format!(
                    "the receiver did not report done within {} ({looks} polls; last: {last})",
                    limit(self.s.status_timeout)
                ),
            },
        })
    }
}

#[async_trait]
impl RollbackBackend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn preflight(
        &self,
        _t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        // Nothing is sent: the receiver alone knows its revisions. Only
        // check what can fail before anything is sent.
        self.secret()?;
        let to = match op {
            Operation::Rollback { to } => to.clone(),
            _ => None,
        };
        Ok(Preflight {
            to_revision: to,
            notes: vec![format!(
                "the webhook at {} decides; rollbot cannot check revisions beforehand",
                shown(&self.s.url)
            )],
            ..Default::default()
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        // The migrations it crosses, so the pipeline can run data fix-ups.
        let extra = serde_json::json!({ "migrations": ctx.migrations });
        self.act("rollback", t, to, extra, ctx)
            .await
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.act("promote", t, None, serde_json::json!({ "full": full }), ctx)
            .await
    }

    async fn pause(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.act("pause", t, None, serde_json::json!({}), ctx).await
    }

    async fn resume(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.act("resume", t, None, serde_json::json!({}), ctx)
            .await
    }

    /// The request and its body, built by the code that sends it; the
    /// signature is made when it is sent, from the secret, and not shown.
    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        self.secret()?;
        let (to, extra) = match op {
            Operation::Rollback { to } => (to.as_deref(), serde_json::json!({})),
            Operation::Promote { full } => (None, serde_json::json!({ "full": full })),
            Operation::Pause | Operation::Resume => (None, serde_json::json!({})),
        };
        let body = Self::body(op.name(), t, to, extra, ctx);
        let mut notes = vec![format!(
            "headers: Content-Type: application/json, Idempotency-Key: {}, X-Rollbot-Timestamp (the time of sending) and X-Rollbot-Signature (HMAC-SHA256 of the timestamp and this body with the backend's secret); up to {} attempts",
            ctx.idempotency_key,
            self.s.retries + 1
        )];
        if self.s.status_url.is_some() {
            notes.push("then it would poll the status_url until the receiver reports the result".into());
        }
        Ok(Plan {
            requests: vec![PlannedRequest::new("POST", shown(&self.s.url))
                .body(String::from_utf8_lossy(&body).into_owned())],
            notes,
        })
    }

    async fn verify(
        &self,
        t: &Target,
        op: &Operation,
        _report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        match &self.s.status_url {
            None => Ok(Verification {
                ok: true,
                detail: "not verified: the receiver accepted the request and no status_url is configured".into(),
            }),
            Some(u) => {
                let url = self.fill(u, t, op.name(), ctx);
                self.poll(&url, &ctx.idempotency_key).await
            }
        }
    }

    async fn status(&self, _t: &Target) -> Result<BackendStatus, BackendError> {
        Ok(BackendStatus {
            notes: vec![format!(
                "the webhook backend sends actions to {} and keeps no state; ask the receiver",
                shown(&self.s.url)
            )],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = sign(b"secret", "1700000000", b"{\"a\":1}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert!(verify_signature(b"secret", "1700000000", b"{\"a\":1}", &s));
        assert!(!verify_signature(b"secret", "1700000001", b"{\"a\":1}", &s));
        assert!(!verify_signature(b"secret", "1700000000", b"{\"a\":2}", &s));
        assert!(!verify_signature(b"other", "1700000000", b"{\"a\":1}", &s));
        assert!(!verify_signature(
            b"secret",
            "1700000000",
            b"{\"a\":1}",
            "sha1=00"
        ));
        // The README's Python and openssl recipes give the same value.
        assert_eq!(
            sign(b"whsec", "1700000000", br#"{"action":"rollback"}"#),
            "sha256=42c57665f54f901e817cf216df218ebb09af90dc15a2d44fb986751ac5181673"
        );
    }

    #[test]
    fn worst_case_adds_attempts_and_waits() {
        assert_eq!(
            worst_case(Duration::from_secs(10), 3, Duration::from_millis(500)),
            Duration::from_millis(40_000 + 500 + 1000 + 2000)
        );
        assert_eq!(
            worst_case(Duration::from_secs(1), 0, Duration::from_secs(5)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn shown_urls_drop_the_query() {
        assert_eq!(
            shown("https://ci.example.com/hook?token=abc"),
            "https://ci.example.com/hook"
        );
        assert_eq!(beginning("a\n  b\tc", 10), "a b c");
        assert_eq!(beginning("ééééé", 5), "éé…");
    }

    #[test]
    fn status_url_values_are_percent_encoded() {
        let b = WebhookBackend::new(WebhookSettings {
            url: "http://127.0.0.1:1/hook".into(),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod eu".into(),
            settings: BTreeMap::new(),
        };
        let ctx = CallContext {
            idempotency_key: "api:ci:deploy 42/7?x=1".into(),
            ..Default::default()
        };
        assert_eq!(
            b.fill("http://h/status/{idempotency_key}?env={environment}", &t, "rollback", &ctx),
            "http://h/status/api%3Aci%3Adeploy%2042%2F7%3Fx%3D1?env=prod%20eu"
        );
    }

    #[tokio::test]
    async fn a_plan_shows_the_body_to_be_signed_and_sends_nothing() {
        // Nothing listens here: a plan that sent would fail.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::env::set_var("ROLLBOT_TEST_WEBHOOK_PLAN_SECRET", "pl4n-secret");
        let b = WebhookBackend::new(WebhookSettings {
            url: format!("http://127.0.0.1:{port}/hook?token=abc"),
            secret: Some(SecretSource::Env("ROLLBOT_TEST_WEBHOOK_PLAN_SECRET".into())),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: BTreeMap::new(),
        };
        let ctx = CallContext {
            actor: "Ana (console:ana)".into(),
            idempotency_key: "k-1".into(),
            ..Default::default()
        };
        let op = Operation::Rollback {
            to: Some("v41".into()),
        };
        let plan = b.plan(&t, &op, &ctx).await.unwrap();
        assert_eq!(plan.requests.len(), 1);
        let r = &plan.requests[0];
        assert_eq!((r.method.as_str(), r.target.clone()), ("POST", format!("http://127.0.0.1:{port}/hook")));
        let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["action"], "rollback");
        assert_eq!(body["to_revision"], "v41");
        assert_eq!(body["idempotency_key"], "k-1");
        let shown = format!("{plan:?}");
        assert!(!shown.contains("pl4n-secret") && !shown.contains("token=abc"), "{shown}");
        assert!(plan.notes[0].contains("X-Rollbot-Signature"), "{:?}", plan.notes);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_then_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::env::set_var("ROLLBOT_TEST_WEBHOOK_UNIT_SECRET", "s3cret");
        let b = WebhookBackend::new(WebhookSettings {
            url: format!("http://127.0.0.1:{port}/hook"),
            secret: Some(SecretSource::Env("ROLLBOT_TEST_WEBHOOK_UNIT_SECRET".into())),
            retries: 2,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: BTreeMap::new(),
        };
        // As the audit entry records it: the message, then the requests.
        let err = b
            .rollback(&t, None, &CallContext::default())
            .await
            .unwrap_err()
            .with_requests();
        assert!(err.contains("after 3 attempts"), "{err}");
        assert_eq!(err.matches("POST http://127.0.0.1").count(), 3, "{err}");
        assert!(!err.contains("s3cret"));
    }

    #[tokio::test]
    async fn a_missing_secret_is_named() {
        let b = WebhookBackend::new(WebhookSettings {
            url: "http://127.0.0.1:9/hook".into(),
            secret: Some(SecretSource::Env("ROLLBOT_TEST_NO_SUCH_VAR".into())),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: BTreeMap::new(),
        };
        let err = b
            .preflight(&t, &Operation::Pause, &CallContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROLLBOT_TEST_NO_SUCH_VAR"), "{err}");
    }
}
