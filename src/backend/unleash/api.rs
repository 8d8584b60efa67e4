//! Unleash's admin and client APIs: one request at a time, each recorded
//! in the action's trail, and failures that say what the flag is now and
//! how to do it by hand.

use super::state::{rollout_of, EnvState, Flag};
use super::{limit, listed, UnleashBackend};
use crate::backend::BackendError;
use reqwest::Method;
use serde_json::Value;

/// Unleash's error message from an error body, else the beginning of the body.
pub(super) fn message(body: &Value, raw: &str) -> String {
    body["message"]
        .as_str()
        .or_else(|| body["details"][0]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let flat = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            flat.chars().take(200).collect()
        })
}

/// An answer from Unleash: status code, JSON body (Null when not JSON), raw text.
pub(super) struct Answer {
    pub(super) code: u16,
    pub(super) body: Value,
    pub(super) raw: String,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl UnleashBackend {
    /// Sends one request and records it, with its answer, in `trail`.
    /// `Err` is a request that got no answer.
    pub(super) async fn send(
        &self,
        trail: &mut Vec<String>,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let head = format!("{method} {}{path}", self.s.url);
        if method != Method::GET {
            if let Err(f) = crate::fence::check(&head) {
                trail.push(format!("{head} → not sent"));
                return Err(f.0);
            }
        }
        let started = std::time::Instant::now();
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.s.url))
            .timeout(self.s.timeout)
            .header("Authorization", token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let got = match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                r.text().await.map(|raw| (code, raw))
            }
            Err(e) => Err(e),
        };
        match got {
            Ok((code, raw)) => {
                let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                let took = started.elapsed().as_millis();
                let mut line = format!("{head} → {code} in {took} ms");
                if !(200..300).contains(&code) {
                    line.push_str(&format!(": {}", message(&body, &raw)));
                }
                trail.push(line);
                Ok(Answer { code, body, raw })
            }
            Err(e) if e.is_timeout() => {
                let why = format!("no answer within {}", limit(self.s.timeout));
                trail.push(format!("{head} → {why}"));
                Err(why)
            }
            Err(e) => {
                let why = e.without_url().to_string();
                trail.push(format!("{head} → {why}"));
                Err(why)
            }
        }
    }

    /// Adds what an answer said to the newest line of the trail.
    pub(super) fn note(trail: &mut [String], text: &str) {
        if let Some(last) = trail.last_mut() {
            last.push_str(&format!(": {text}"));
        }
    }

    /// The failure for an answer that was not 2xx, or for no answer.
    pub(super) fn failure(
        &self,
        what: &str,
        answer: Result<&Answer, &str>,
        by_hand: &str,
        trail: &[String],
    ) -> BackendError {
        let said = match answer {
            Ok(a) if a.code == 401 || a.code == 403 => format!(
                "Unleash refused the admin token for {what} (HTTP {}: {}). Check admin_token: it must be an admin token (Unleash → Admin → API access) or a personal access token allowed to change flags in this project.",
                a.code,
                message(&a.body, &a.raw)
            ),
            Ok(a) => format!(
                "Unleash answered {what} with HTTP {}: {}.",
                a.code,
                message(&a.body, &a.raw)
            ),
            Err(e) => format!("Unleash did not answer {what} ({e}); it may or may not have acted."),
        };
        BackendError::Failed {
            message: format!("{said}\n{by_hand}"),
            requests: trail.to_vec(),
        }
    }

    /// The flag's state in its environment. A missing project, flag or
    /// environment is refused naming what exists.
    pub(super) async fn read(
        &self,
        f: &Flag,
        token: &str,
        trail: &mut Vec<String>,
    ) -> Result<EnvState, BackendError> {
        let path = self.feature_path(f);
        let a = self.send(trail, Method::GET, &path, token, None).await;
        let a = match a {
            Ok(a) if a.ok() => a,
            Ok(a) if a.code == 404 => return Err(self.missing_flag(f, &a, token, trail).await),
            Ok(a) => {
                return Err(self.failure(
                    &format!("reading flag `{}`", f.name),
                    Ok(&a),
                    "Nothing was changed.",
                    trail,
                ))
            }
            Err(e) => {
                return Err(self.failure(
                    &format!("reading flag `{}`", f.name),
                    Err(&e),
                    "Nothing was changed.",
                    trail,
                ))
            }
        };
        let envs = a.body["environments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let name_of = |e: &Value| e["name"].as_str().unwrap_or("?").to_string();
        let Some(env) = envs.iter().find(|e| e["name"] == f.environment.as_str()) else {
            let names: Vec<String> = envs.iter().map(name_of).collect();
            Self::note(trail, &format!("no environment {}", f.environment));
            return Err(BackendError::Refused(format!(
                "flag `{}` in project `{}` has no environment `{}`; it has: {}. Set environment in the backend or the service's [services.target] to one of them, or enable `{}` for project `{}` in Unleash.",
                f.name,
                f.project,
                f.environment,
                listed(&names, 20),
                f.environment,
                f.project
            )));
        };
        let state = EnvState {
            enabled: env["enabled"] == true,
            strategies: env["strategies"].as_array().cloned().unwrap_or_default(),
            others: envs
                .iter()
                .filter(|e| e["name"] != f.environment.as_str())
                .map(|e| {
                    format!(
                        "{} {}",
                        name_of(e),
                        if e["enabled"] == true { "on" } else { "off" }
                    )
                })
                .collect(),
        };
        Self::note(
            trail,
            &format!(
                "{} {}, {}",
                f.environment,
                state.revision(),
                state.strategies_text()
            ),
        );
        Ok(state)
    }

    /// Says what exists when the flag (or its project) does not.
    pub(super) async fn missing_flag(
        &self,
        f: &Flag,
        first: &Answer,
        token: &str,
        trail: &mut Vec<String>,
    ) -> BackendError {
        let unleash_said = message(&first.body, &first.raw);
        // Unleash lists an unknown project as empty: look for the project first.
        let projects: Option<Vec<String>> = match self
            .send(trail, Method::GET, "/api/admin/projects", token, None)
            .await
        {
            Ok(a) if a.ok() => a.body["projects"].as_array().map(|ps| {
                ps.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            }),
            _ => None,
        };
        if let Some(ps) = projects.as_ref().filter(|ps| !ps.contains(&f.project)) {
            return BackendError::Refused(format!(
                "Unleash has no project `{}` ({unleash_said}); projects: {}. Fix project in the backend or the service's [services.target].",
                f.project,
                listed(ps, 20)
            ));
        }
        let list = format!("/api/admin/projects/{}/features", f.project);
        let exists = match self.send(trail, Method::GET, &list, token, None).await {
            Ok(a) if a.ok() => {
                let names: Vec<String> = a.body["features"]
                    .as_array()
                    .map(|fs| {
                        fs.iter()
                            .filter_map(|x| x["name"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("flags in project `{}`: {}", f.project, listed(&names, 20))
            }
            _ => "the list of flags could not be read".into(),
        };
        BackendError::Refused(format!(
            "Unleash has no flag `{}` in project `{}` ({unleash_said}); {exists}. Fix flag (or project) in the service's [services.target], or create the flag in Unleash.",
            f.name, f.project
        ))
    }

    /// Reads what the SDKs of the flag's environment are served.
    pub(super) async fn client_view(
        &self,
        f: &Flag,
        token: &str,
        trail: &mut Vec<String>,
    ) -> Result<Option<(bool, Vec<u8>)>, String> {
        // The plain request, as SDKs send it: Unleash caches that answer
        // separately from filtered ones (`?namePrefix=`), which are fresh
        // sooner than what SDKs get.
        let a = self
            .send(trail, Method::GET, "/api/client/features", token, None)
            .await?;
        if !a.ok() {
            return Err(format!(
                "the client API answered HTTP {}: {}",
                a.code,
                message(&a.body, &a.raw)
            ));
        }
        if let Some(env) = a.body["query"]["environment"].as_str() {
            if env != f.environment {
                return Err(format!(
                    "client_token is a token of environment `{env}`, not `{}`; give the backend a client token of `{}`",
                    f.environment, f.environment
                ));
            }
        }
        let feature = a.body["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|x| x["name"] == f.name.as_str()));
        Ok(feature.map(|x| {
            let rollouts = x["strategies"]
                .as_array()
                .map(|ss| ss.iter().filter_map(rollout_of).collect())
                .unwrap_or_default();
            (x["enabled"] == true, rollouts)
        }))
    }
}
