//! Rolls back a change that sits behind a feature flag by switching the flag
//! off in Unleash: the fastest rollback there is, no deploy involved.
//!
//! Everything goes through Unleash's admin API with an admin token:
//! rollback is `POST …/environments/{env}/off`; promote is `…/on`, or, where
//! the flag's environment has a gradual rollout (`flexibleRollout`), the next
//! rollout percentage of the service's steps (`promote full`: 100% and on).
//! Verification asks the client API, with a client token of that
//! environment, what SDKs are served, retrying for a bounded time because
//! Unleash caches it briefly. A flag has no pause, so pause and resume are
//! refused.

mod api;
mod config;
mod state;

pub use config::UnleashConfig;
pub use state::{check_steps, parse_steps};

use api::Answer;
use state::{expected, promoted, rollout_of, EnvState, Flag};

use super::poll::{poll_until, Look, Polled};
use super::*;
use crate::config::SecretSource;
use reqwest::Method;
use serde_json::{json, Value};

/// Rollout percentages a gradual promote moves through when neither the
/// backend nor the service names its own.
pub const DEFAULT_STEPS: [u8; 4] = [10, 25, 50, 100];

/// How the backend is set up; built from `[backends.NAME]` with `type = "unleash"`.
#[derive(Clone, Debug)]
pub struct UnleashSettings {
    /// Unleash's base URL, for example `https://unleash.example.com`.
    pub url: String,
    pub admin_token: Option<SecretSource>,
    /// A client token of the flag's environment, for verification.
    pub client_token: Option<SecretSource>,
    pub project: String,
    /// The environment flags are switched in; the service's own environment
    /// when unset.
    pub environment: Option<String>,
    pub steps: Vec<u8>,
    /// Time limit of one request.
    pub timeout: Duration,
    /// How long the client API is polled for the new state.
    pub verify_timeout: Duration,
    pub verify_interval: Duration,
}

impl Default for UnleashSettings {
    fn default() -> Self {
        UnleashSettings {
            url: String::new(),
            admin_token: None,
            client_token: None,
            project: "default".into(),
            environment: None,
            steps: DEFAULT_STEPS.to_vec(),
            timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(30),
            verify_interval: Duration::from_millis(500),
        }
    }
}

/// A duration for messages, in milliseconds below a second.
fn limit(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        crate::domain::human_duration(d)
    }
}

/// Names for a message, at most `max` of them.
fn listed(names: &[String], max: usize) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let mut out = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        out.push_str(&format!(" and {} more", names.len() - max));
    }
    out
}

pub struct UnleashBackend {
    s: UnleashSettings,
    http: reqwest::Client,
}

impl UnleashBackend {
    pub fn new(mut s: UnleashSettings) -> UnleashBackend {
        s.url = s.url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .user_agent(concat!("rollbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        UnleashBackend { s, http }
    }

    fn flag(&self, t: &Target) -> Result<Flag, BackendError> {
        let name = t
            .settings
            .get("flag")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                BackendError::Refused(format!(
                    "service `{}` names no flag: add flag = \"…\" under its [services.target]",
                    t.service
                ))
            })?;
        let steps = match t.settings.get("steps") {
            Some(text) => parse_steps(text).map_err(BackendError::Refused)?,
            None => self.s.steps.clone(),
        };
        Ok(Flag {
            project: t
                .settings
                .get("project")
                .cloned()
                .unwrap_or_else(|| self.s.project.clone()),
            name: name.clone(),
            environment: t
                .settings
                .get("environment")
                .or(self.s.environment.as_ref())
                .cloned()
                .unwrap_or_else(|| t.environment.clone()),
            steps,
        })
    }

    fn admin_token(&self) -> Result<String, BackendError> {
        let src = self.s.admin_token.as_ref().ok_or_else(|| {
            BackendError::failed(
                "the unleash backend has no admin token; set admin_token = \"${VAR}\" or admin_token_file",
            )
        })?;
        src.resolve()
            .map(|v| v.expose().to_string())
            .map_err(|e| BackendError::failed(format!("Unleash admin token: {e}")))
    }

    fn feature_path(&self, f: &Flag) -> String {
        format!("/api/admin/projects/{}/features/{}", f.project, f.name)
    }

    fn env_path(&self, f: &Flag) -> String {
        format!("{}/environments/{}", self.feature_path(f), f.environment)
    }

    /// The UI step, and the API call that does the same.
    fn by_hand(&self, f: &Flag, what: &str, api: &str) -> String {
        format!(
            "To do it by hand: in the Unleash UI open project `{}`, flag `{}`, environment `{}` and {what}; or send `{api}` with an admin token in the Authorization header.",
            f.project, f.name, f.environment
        )
    }

    /// Sets every gradual rollout of the environment to `to` percent;
    /// on a failure, puts back the ones already changed.
    async fn set_rollout(
        &self,
        f: &Flag,
        state: &EnvState,
        to: u8,
        token: &str,
        trail: &mut Vec<String>,
    ) -> Result<Vec<(Value, u8)>, BackendError> {
        let mut changed: Vec<(Value, u8)> = Vec::new();
        for s in &state.strategies {
            let Some(was) = rollout_of(s) else { continue };
            if was == to {
                continue;
            }
            match self.put_rollout(f, s, to, token, trail).await {
                Ok(()) => changed.push((s.clone(), was)),
                Err(e) => {
                    let undone = self.undo_rollout(f, &changed, token, trail).await;
                    let by_hand = format!(
                        "{undone} {}",
                        self.by_hand(
                            f,
                            &format!("set the flexibleRollout strategy's rollout to {to}%"),
                            &format!(
                                "PUT {}{}/strategies/{} with parameters.rollout = \"{to}\"",
                                self.s.url,
                                self.env_path(f),
                                s["id"].as_str().unwrap_or("ID")
                            )
                        )
                    );
                    return Err(self.failure(
                        &format!("the rollout change to {to}%"),
                        e.as_ref().map_err(String::as_str),
                        &by_hand,
                        trail,
                    ));
                }
            }
        }
        Ok(changed)
    }

    /// The path and body of the `PUT` that sets a strategy's rollout to
    /// `to` percent; sent by promotes, shown by dry runs.
    fn rollout_request(&self, f: &Flag, s: &Value, to: u8) -> (String, Value) {
        let id = s["id"].as_str().unwrap_or_default();
        let mut parameters = s["parameters"].clone();
        parameters["rollout"] = json!(to.to_string());
        let body = json!({
            "name": s["name"],
            "title": s["title"],
            "disabled": s["disabled"],
            "constraints": s["constraints"],
            "variants": s["variants"],
            "segments": s["segments"],
            "parameters": parameters,
        });
        (format!("{}/strategies/{id}", self.env_path(f)), body)
    }

    /// The path of the `POST` that switches the flag on or off.
    fn switch_path(&self, f: &Flag, on: bool) -> String {
        format!("{}/{}", self.env_path(f), if on { "on" } else { "off" })
    }

    /// The requests `op` would send, in order, decided on the flag's
    /// current state by the same rules as the real rollback and promote.
    /// Only the flag is read; the token is never shown.
    async fn dry_run(&self, t: &Target, op: &Operation) -> Result<Plan, BackendError> {
        let f = self.flag(t)?;
        match op {
            Operation::Pause | Operation::Resume => {
                return Err(BackendError::Refused(no_pause(&f)))
            }
            Operation::Rollback { to: Some(_) } => {
                return Err(BackendError::Refused(
                    "a feature flag has no revisions: run the rollback without one".into(),
                ))
            }
            _ => {}
        }
        let token = self.admin_token()?;
        let mut trail = Vec::new();
        let state = self.read(&f, &token, &mut trail).await?;
        let mut requests = Vec::new();
        let post = |on| PlannedRequest::new("POST", format!("{}{}", self.s.url, self.switch_path(&f, on)));
        match op {
            Operation::Promote { full } => match promoted(&f, &state, *full) {
                None => trail.push(format!(
                    "{} is already {}; nothing to promote",
                    self.where_(&f),
                    state.revision()
                )),
                Some((_, percent)) => {
                    for s in &state.strategies {
                        let (Some(was), Some(p)) = (rollout_of(s), percent) else {
                            continue;
                        };
                        if was != p {
                            let (path, body) = self.rollout_request(&f, s, p);
                            requests.push(
                                PlannedRequest::new("PUT", format!("{}{path}", self.s.url))
                                    .body(body.to_string()),
                            );
                        }
                    }
                    if !state.enabled {
                        requests.push(post(true));
                    }
                }
            },
            _ if !state.enabled => trail.push(format!(
                "{} is already off; nothing to send",
                self.where_(&f)
            )),
            _ => requests.push(post(false)),
        }
        Ok(Plan {
            requests,
            notes: trail,
        })
    }

    async fn put_rollout(
        &self,
        f: &Flag,
        s: &Value,
        to: u8,
        token: &str,
        trail: &mut Vec<String>,
    ) -> Result<(), Result<Answer, String>> {
        let (path, body) = self.rollout_request(f, s, to);
        match self
            .send(trail, Method::PUT, &path, token, Some(&body))
            .await
        {
            Ok(a) if a.ok() => {
                Self::note(trail, &format!("rollout {to}%"));
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Puts changed rollouts back; says what was restored.
    async fn undo_rollout(
        &self,
        f: &Flag,
        changed: &[(Value, u8)],
        token: &str,
        trail: &mut Vec<String>,
    ) -> String {
        if changed.is_empty() {
            return "The flag is as it was.".into();
        }
        let mut failed = 0;
        for (s, was) in changed {
            if self.put_rollout(f, s, *was, token, trail).await.is_err() {
                failed += 1;
            }
        }
        if failed == 0 {
            "The rollout percentage was put back; the flag is as it was.".into()
        } else {
            format!("{failed} rollout change(s) could not be put back: the flag is partly changed.")
        }
    }

    async fn switch(
        &self,
        f: &Flag,
        on: bool,
        token: &str,
        trail: &mut Vec<String>,
    ) -> Result<(), Result<Answer, String>> {
        let path = self.switch_path(f, on);
        match self.send(trail, Method::POST, &path, token, None).await {
            Ok(a) if a.ok() => Ok(()),
            other => Err(other),
        }
    }

    fn where_(&self, f: &Flag) -> String {
        format!(
            "flag `{}` in environment `{}` (project `{}`)",
            f.name, f.environment, f.project
        )
    }
}

#[async_trait]
impl RollbackBackend for UnleashBackend {
    fn kind(&self) -> &'static str {
        "unleash"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let f = self.flag(t)?;
        match op {
            Operation::Pause | Operation::Resume => {
                return Err(BackendError::Refused(no_pause(&f)))
            }
            Operation::Rollback { to: Some(r) } => {
                return Err(BackendError::Refused(format!(
                    "a feature flag has no revision `{r}` to go back to: rollback switches {} off. Run the rollback without a revision.",
                    self.where_(&f)
                )))
            }
            _ => {}
        }
        let token = self.admin_token()?;
        let mut trail = Vec::new();
        let state = self.read(&f, &token, &mut trail).await?;
        let to = match op {
            Operation::Promote { full } => promoted(&f, &state, *full).map(|(r, _)| r),
            _ => Some("off".into()),
        };
        Ok(Preflight {
            from_revision: Some(state.revision()),
            to_revision: to,
            notes: vec![format!(
                "{}: {}; strategies: {}",
                self.where_(&f),
                state.revision(),
                state.strategies_text()
            )],
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let f = self.flag(t)?;
        if to.is_some() {
            return Err(BackendError::Refused(
                "a feature flag has no revisions: run the rollback without one".into(),
            ));
        }
        let token = self.admin_token()?;
        let mut trail = Vec::new();
        let state = self.read(&f, &token, &mut trail).await?;
        if !state.enabled {
            return Ok(ActionReport {
                summary: format!("{} was already off; nothing to do", self.where_(&f)),
                from_revision: Some("off".into()),
                to_revision: Some("off".into()),
                changed: false,
                requests: trail,
            });
        }
        if let Err(e) = self.switch(&f, false, &token, &mut trail).await {
            return Err(self.failure(
                "switching the flag off",
                e.as_ref().map_err(String::as_str),
                &format!(
                    "{} {}",
                    if e.is_ok() {
                        "The flag is as it was (on)."
                    } else {
                        "Check the flag before acting again."
                    },
                    self.by_hand(
                        &f,
                        "switch it off",
                        &format!("POST {}{}/off", self.s.url, self.env_path(&f))
                    )
                ),
                &trail,
            ));
        }
        Ok(ActionReport {
            summary: format!(
                "switched {} off (was {}; other environments untouched)",
                self.where_(&f),
                state.revision()
            ),
            from_revision: Some(state.revision()),
            to_revision: Some("off".into()),
            changed: true,
            requests: trail,
        })
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let f = self.flag(t)?;
        let token = self.admin_token()?;
        let mut trail = Vec::new();
        let state = self.read(&f, &token, &mut trail).await?;
        let from = state.revision();
        let Some((to, percent)) = promoted(&f, &state, full) else {
            return Ok(ActionReport {
                summary: format!("{} is already {from}; nothing to promote", self.where_(&f)),
                from_revision: Some(from.clone()),
                to_revision: Some(from),
                changed: false,
                requests: trail,
            });
        };
        // Raise the percentage while the flag may still be off, so switching
        // it on exposes the new percentage at once.
        let changed = match percent {
            Some(p) => self.set_rollout(&f, &state, p, &token, &mut trail).await?,
            None => Vec::new(),
        };
        if !state.enabled {
            if let Err(e) = self.switch(&f, true, &token, &mut trail).await {
                let undone = self.undo_rollout(&f, &changed, &token, &mut trail).await;
                return Err(self.failure(
                    "switching the flag on",
                    e.as_ref().map_err(String::as_str),
                    &format!(
                        "{undone} {}",
                        self.by_hand(
                            &f,
                            "switch it on",
                            &format!("POST {}{}/on", self.s.url, self.env_path(&f))
                        )
                    ),
                    &trail,
                ));
            }
        }
        let how = match percent {
            Some(p) if state.enabled => format!("raised {} to {p}%", self.where_(&f)),
            Some(p) => format!("switched {} on at {p}%", self.where_(&f)),
            None => format!("switched {} on", self.where_(&f)),
        };
        let next = match percent {
            Some(p) if p < 100 => format!(
                "; next step {}% (steps {})",
                f.steps.iter().find(|s| **s > p).copied().unwrap_or(100),
                f.steps
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => String::new(),
        };
        Ok(ActionReport {
            summary: format!("{how} (was {from}){next}"),
            from_revision: Some(from),
            to_revision: Some(to),
            changed: true,
            requests: trail,
        })
    }

    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        self.dry_run(t, op).await
    }

    async fn pause(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(BackendError::Refused(no_pause(&self.flag(t)?)))
    }

    async fn resume(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(BackendError::Refused(no_pause(&self.flag(t)?)))
    }

    async fn verify(
        &self,
        t: &Target,
        _op: &Operation,
        report: &ActionReport,
        _ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let f = self.flag(t)?;
        let Some((want_on, want_pct)) = report.to_revision.as_deref().and_then(expected) else {
            return Ok(Verification {
                ok: false,
                detail: "nothing to verify: the action promised no flag state".into(),
            });
        };
        let want = report.to_revision.clone().unwrap_or_default();
        let client = match &self.s.client_token {
            Some(src) => Some(
                src.resolve()
                    .map(|v| v.expose().to_string())
                    .map_err(|e| BackendError::failed(format!("Unleash client token: {e}")))?,
            ),
            None => None,
        };
        let admin = self.admin_token()?;
        let started = std::time::Instant::now();
        // Every request of the wait, for the message when it gives up.
        let trail = std::sync::Mutex::new(Vec::new());
        let (f, client, admin, trail_ref) = (&f, &client, &admin, &trail);
        let waited = poll_until(
            self.s.verify_timeout,
            self.s.verify_interval,
            |polls| async move {
                let mut sent = Vec::new();
                let seen: Result<Option<(bool, Vec<u8>)>, String> = match client {
                    Some(token) => self.client_view(f, token, &mut sent).await,
                    None => match self.read(f, admin, &mut sent).await {
                        Ok(s) => Ok(Some((s.enabled, s.rollouts()))),
                        Err(e) => Err(e.to_string()),
                    },
                };
                trail_ref.lock().unwrap().extend(sent);
                Ok::<_, BackendError>(match seen {
                    Ok(Some((on, rollouts))) => {
                        let pct_ok = match want_pct {
                            Some(p) => !rollouts.is_empty() && rollouts.iter().all(|r| *r == p),
                            None => true,
                        };
                        let shown = match (on, rollouts.iter().min()) {
                            (false, _) => "disabled".to_string(),
                            (true, Some(p)) if want_pct.is_some() => format!("enabled at {p}%"),
                            (true, _) => "enabled".to_string(),
                        };
                        if on == want_on && pct_ok {
                            let via = match client {
                                Some(_) => format!("the client API (environment `{}`)", f.environment),
                                None => "the admin API (no client_token is set, so what SDKs are served was not checked)".into(),
                            };
                            Look::Done(Verification {
                                ok: true,
                                detail: format!(
                                    "{via} reports flag `{}` {shown} after {polls} poll{} in {} ms",
                                    f.name,
                                    if polls == 1 { "" } else { "s" },
                                    started.elapsed().as_millis()
                                ),
                            })
                        } else {
                            Look::Waiting(format!("flag `{}` still {shown}", f.name))
                        }
                    }
                    Ok(None) => Look::Waiting(format!(
                        "the client API does not list flag `{}` for this token",
                        f.name
                    )),
                    Err(e) if e.contains("client_token is a token of") => {
                        Look::Done(Verification { ok: false, detail: e })
                    }
                    Err(e) => Look::Waiting(e),
                })
            },
            |_| {},
        )
        .await?;
        Ok(match waited {
            Polled::Done(v) => v,
            Polled::TimedOut { last, looks } => {
                let trail = trail.into_inner().unwrap();
                Verification {
                    ok: false,
                    detail: format!(
                        "expected {want}, but after {} ({looks} polls) {last}. Requests: {}",
                        limit(self.s.verify_timeout),
                        trail
                            .iter()
                            .rev()
                            .take(3)
                            .rev()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                }
            }
        })
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let f = self.flag(t)?;
        let token = self.admin_token()?;
        let mut trail = Vec::new();
        let state = self.read(&f, &token, &mut trail).await?;
        let mut notes = vec![format!(
            "{}: {}; strategies: {}",
            self.where_(&f),
            state.revision(),
            state.strategies_text()
        )];
        if state.percentage().is_some() {
            notes.push(format!(
                "promote steps {}",
                f.steps
                    .iter()
                    .map(|s| format!("{s}%"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !state.others.is_empty() {
            notes.push(format!("other environments: {}", state.others.join(", ")));
        }
        Ok(BackendStatus {
            live_revision: Some(state.revision()),
            canary_weight: state.percentage().filter(|_| state.enabled),
            notes,
            ..Default::default()
        })
    }
}

fn no_pause(f: &Flag) -> String {
    format!(
        "a feature flag has no pause: flag `{}` is on or off in `{}`. To stop exposure use rollback (switches the flag off); a gradual rollout stays at its percentage until someone promotes it.",
        f.name, f.environment
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Unleash stand-in that serves one flag and refuses changes with
    /// a 500, recording every request.
    async fn failing_unleash(
        production: Value,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::{body::Bytes, extract::Request, http::StatusCode, Json};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let log = log.clone();
            let production = production.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                log.lock().unwrap().push(format!(
                    "{} {} {}",
                    parts.method,
                    parts.uri.path(),
                    String::from_utf8_lossy(&body)
                ));
                if parts.method == axum::http::Method::GET {
                    (
                        StatusCode::OK,
                        Json(json!({"name": "new-checkout", "environments": [production]})),
                    )
                } else if parts.method == axum::http::Method::PUT {
                    (StatusCode::OK, Json(json!({})))
                } else {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"message": "database is read-only"})),
                    )
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn backend_at(url: &str) -> (UnleashBackend, Target) {
        std::env::set_var("ROLLBOT_TEST_UNLEASH_UNIT_ADMIN", "*:*.unit-admin-secret");
        let b = UnleashBackend::new(UnleashSettings {
            url: url.into(),
            admin_token: Some(SecretSource::Env("ROLLBOT_TEST_UNLEASH_UNIT_ADMIN".into())),
            environment: Some("production".into()),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: [("flag".to_string(), "new-checkout".to_string())].into(),
        };
        (b, t)
    }

    #[tokio::test]
    async fn a_refused_switch_says_the_flag_is_as_it_was_and_how_to_do_it_by_hand() {
        let (url, seen) =
            failing_unleash(json!({"name": "production", "enabled": true, "strategies": []})).await;
        let (b, t) = backend_at(&url);
        // As the audit entry records it: the message, then the requests.
        let err = b
            .rollback(&t, None, &CallContext::default())
            .await
            .unwrap_err()
            .with_requests();
        let off = format!(
            "{url}/api/admin/projects/default/features/new-checkout/environments/production/off"
        );
        assert!(err.contains("HTTP 500: database is read-only"), "{err}");
        assert!(err.contains("The flag is as it was (on)"), "{err}");
        assert!(err.contains(&format!("send `POST {off}`")), "{err}");
        assert!(
            err.contains(&format!(
                "Requests: GET {url}/api/admin/projects/default/features/new-checkout → 200"
            )),
            "{err}"
        );
        assert!(err.contains(&format!("POST {off} → 500")), "{err}");
        assert!(!err.contains("unit-admin-secret"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_switch_on_puts_the_raised_percentage_back() {
        let strategy = json!({"id": "s1", "name": "flexibleRollout", "constraints": [], "variants": [], "segments": [],
            "parameters": {"rollout": "25", "stickiness": "default", "groupId": "new-checkout"}});
        let (url, seen) = failing_unleash(
            json!({"name": "production", "enabled": false, "strategies": [strategy]}),
        )
        .await;
        let (b, t) = backend_at(&url);
        let err = b
            .promote(&t, true, &CallContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("percentage was put back; the flag is as it was"),
            "{err}"
        );
        let seen = seen.lock().unwrap().clone();
        let puts: Vec<&String> = seen.iter().filter(|r| r.starts_with("PUT")).collect();
        assert_eq!(puts.len(), 2, "{seen:?}");
        assert!(
            puts[0].contains("/strategies/s1") && puts[0].contains(r#""rollout":"100""#),
            "{seen:?}"
        );
        assert!(
            puts[1].contains(r#""rollout":"25""#)
                && puts[1].contains(r#""groupId":"new-checkout""#),
            "{seen:?}"
        );
        assert!(seen
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("/environments/production/on")));
    }

    #[tokio::test]
    async fn a_flag_has_no_pause() {
        let b = UnleashBackend::new(UnleashSettings {
            url: "http://127.0.0.1:9".into(),
            ..Default::default()
        });
        let t = Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: [("flag".to_string(), "new-checkout".to_string())].into(),
        };
        let err = b
            .preflight(&t, &Operation::Pause, &CallContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no pause") && err.contains("rollback"),
            "{err}"
        );
        let t = Target {
            settings: BTreeMap::new(),
            ..t
        };
        let err = b.status(&t).await.unwrap_err().to_string();
        assert!(err.contains("flag = "), "{err}");
    }
}
