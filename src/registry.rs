//! Asks container registries whether an image is still there, through the
//! OCI distribution API: `HEAD /v2/<name>/manifests/<tag-or-digest>`, with
//! the registry's bearer-token flow (a 401 naming a token realm, a token
//! fetched from it, the request sent again) and basic credentials from a
//! secret or from a docker config file's `auths`.
//!
//! `[registry]` in the config:
//! `docker_config` (a `config.json` as `docker login` writes it),
//! `insecure` (registries reached over plain HTTP; loopback always is),
//! `timeout`, and `[registry.credentials."HOST"]` with `username` and
//! `password = "${ENV}"` or `password_file`.

use crate::config::{EnvRef, HumanDuration, SecretSource};
use base64::Engine as _;
use reqwest::header::{HeaderValue, ACCEPT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The manifest types a pull accepts: OCI and Docker, single and lists.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// A docker `config.json`; its `auths` give credentials per registry.
    pub docker_config: Option<PathBuf>,
    /// Registries reached over plain HTTP (`host:port`); 127.0.0.1,
    /// localhost and ::1 always are, as Docker does.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Time limit of one request to a registry.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Basic credentials per registry host (`host` or `host:port`).
    #[serde(default)]
    pub credentials: BTreeMap<String, RegistryCredential>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredential {
    pub username: String,
    pub password: Option<EnvRef>,
    pub password_file: Option<PathBuf>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            docker_config: None,
            insecure: Vec::new(),
            timeout: default_timeout(),
            credentials: BTreeMap::new(),
        }
    }
}

impl RegistryConfig {
    /// Each credential names exactly one password source: the host and
    /// what is wrong.
    pub fn check(&self) -> Vec<(String, String)> {
        self.credentials
            .iter()
            .filter_map(|(host, c)| {
                match SecretSource::from_pair(
                    "password",
                    c.password.as_ref(),
                    c.password_file.as_ref(),
                ) {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(format!(
                        "[registry.credentials.\"{host}\"] needs password = \"${{ENV_VAR}}\" or password_file"
                    )),
                    Err(e) => Some(format!("[registry.credentials.\"{host}\"]: {e}")),
                }
                .map(|e| (host.clone(), e))
            })
            .collect()
    }
}

/// An image reference split the way a registry is asked about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry as written (`docker.io` when none is).
    pub host: String,
    /// The repository (`shop/checkout`, `library/nginx`).
    pub name: String,
    /// The tag or `sha256:…` digest.
    pub reference: String,
}

impl ImageRef {
    /// Docker's rules: the first path part is a registry when it has a `.`
    /// or `:` or is `localhost`; no tag means `latest`; a digest wins.
    pub fn parse(image: &str) -> Result<ImageRef, String> {
        let image = image.trim();
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(format!("`{image}` is not an image reference"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
            _ => (path.clone(), "latest".to_string()),
        };
        let name = if host == "docker.io" && !name.contains('/') {
            format!("library/{name}")
        } else {
            name
        };
        Ok(ImageRef {
            host,
            name,
            reference: digest.unwrap_or(tag),
        })
    }

    /// Where the registry's API answers (Docker Hub's differs from its name).
    fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }
}

/// What a registry said of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    Present,
    /// The registry answered that the manifest is not there.
    Gone(String),
    /// The registry could not tell: unreachable, credentials refused… The
    /// text says which and what to do; it never blocks a rollout.
    Unknown(String),
}

pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
}

/// Basic credentials for one registry.
struct Basic {
    user: String,
    password: String,
    /// Where they came from, for messages.
    from: String,
}

/// The `Bearer realm="…",service="…",scope="…"` challenge, parsed.
fn challenge(v: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => match q.split_once('"') {
                Some((v, n)) => (v.to_string(), n),
                None => (q.to_string(), ""),
            },
            None => match after.split_once(',') {
                Some((v, n)) => (v.trim().to_string(), n),
                None => (after.trim().to_string(), ""),
            },
        };
        params.insert(k, value);
        rest = next.trim_start_matches(',').trim();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// The host part of a docker config `auths` key (`https://host/v1/` → `host`).
fn auths_host(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    k.split('/').next().unwrap_or(k)
}

impl RegistryClient {
    pub fn new(config: &RegistryConfig) -> RegistryClient {
        let http = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .user_agent(concat!("rollbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        RegistryClient {
            http,
            config: config.clone(),
        }
    }

    fn plain_http(&self, host: &str) -> bool {
        let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        ["127.0.0.1", "localhost", "[::1]"].contains(&bare)
            || bare.starts_with("127.")
            || self.config.insecure.iter().any(|i| i == host)
    }

    /// Credentials for `host`: `[registry.credentials]` first, then the
    /// docker config's `auths`. Read now, so a rotated secret is used.
    fn basic_for(&self, host: &str) -> Result<Option<Basic>, String> {
        if let Some(c) = self.config.credentials.get(host) {
            let source =
                SecretSource::from_pair("password", c.password.as_ref(), c.password_file.as_ref())?
                    .ok_or_else(|| format!("[registry.credentials.\"{host}\"] has no password"))?;
            let password = source.resolve()?;
            return Ok(Some(Basic {
                user: c.username.clone(),
                password: password.expose().to_string(),
                from: format!("[registry.credentials.\"{host}\"] (user {})", c.username),
            }));
        }
        let Some(path) = &self.config.docker_config else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read docker config {}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("docker config {} is not JSON: {e}", path.display()))?;
        let hub = host == "docker.io";
        let Some((key, entry)) = v["auths"].as_object().and_then(|a| {
            a.iter().find(|(k, _)| {
                let h = auths_host(k);
                h == host || (hub && (h == "index.docker.io" || h == "registry-1.docker.io"))
            })
        }) else {
            return Ok(None);
        };
        let from = format!("{} auths \"{key}\"", path.display());
        let (user, password) = match entry["auth"].as_str() {
            Some(a) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| format!("{from}: `auth` is not base64 of user:password"))?;
                let s = String::from_utf8_lossy(&raw).to_string();
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| format!("{from}: `auth` is not base64 of user:password"))?;
                (u.to_string(), p.to_string())
            }
            None => (
                entry["username"].as_str().unwrap_or_default().to_string(),
                entry["password"].as_str().unwrap_or_default().to_string(),
            ),
        };
        if user.is_empty() {
            return Ok(None);
        }
        Ok(Some(Basic {
            from: format!("{from} (user {user})"),
            user,
            password,
        }))
    }

    /// Whether `image` can still be pulled from its registry.
    pub async fn check(&self, image: &str) -> ImageState {
        let r = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => return ImageState::Unknown(e),
        };
        let scheme = if self.plain_http(&r.host) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            r.api_host(),
            r.name,
            r.reference
        );
        let basic = match self.basic_for(&r.host) {
            Ok(b) => b,
            Err(e) => {
                return ImageState::Unknown(format!(
                    "the credentials for registry {} could not be read: {e}",
                    r.host
                ))
            }
        };
        match self.head_with_auth(&r, &url, basic.as_ref()).await {
            Ok(s) => s,
            Err(e) => ImageState::Unknown(e),
        }
    }

    async fn head(&self, url: &str, auth: Option<&str>) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .head(url)
            .header(ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| unreachable_text(url, &e))
    }

    async fn head_with_auth(
        &self,
        r: &ImageRef,
        url: &str,
        basic: Option<&Basic>,
    ) -> Result<ImageState, String> {
        let first = self.head(url, None).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(answer(r, url, first.status(), None));
        }
        let header = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (scheme, params) = challenge(&header).unwrap_or_default();
        let auth = match scheme.as_str() {
            "bearer" => {
                let token = self.token(r, &params, basic).await?;
                format!("Bearer {token}")
            }
            "basic" => match basic {
                Some(b) => basic_header(b),
                None => return Err(no_credentials(r)),
            },
            _ => {
                return Err(format!(
                    "registry {} answered 401 to HEAD {url} without a challenge rollbot knows (WWW-Authenticate: `{header}`)",
                    r.host
                ))
            }
        };
        let again = self.head(url, Some(&auth)).await?;
        Ok(answer(r, url, again.status(), basic))
    }

    /// A pull token from the realm the registry named.
    async fn token(
        &self,
        r: &ImageRef,
        params: &BTreeMap<String, String>,
        basic: Option<&Basic>,
    ) -> Result<String, String> {
        let realm = params.get("realm").ok_or_else(|| {
            format!(
                "registry {} asks for a bearer token but names no realm",
                r.host
            )
        })?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", r.name));
        let mut query = vec![("scope", scope)];
        if let Some(s) = params.get("service") {
            query.push(("service", s.clone()));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(b) = basic {
            req = req.basic_auth(&b.user, Some(&b.password));
        }
        let resp = req.send().await.map_err(|e| unreachable_text(realm, &e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(match basic {
                    Some(b) => wrong_credentials(r, b, &format!("the token service {realm}")),
                    None => no_credentials(r),
                })
            }
            s => {
                return Err(format!(
                    "the token service {realm} of registry {} answered {s}",
                    r.host
                ))
            }
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            format!(
                "the token service {realm} of registry {} sent no JSON: {e}",
                r.host
            )
        })?;
        body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "the token service {realm} of registry {} sent no token",
                    r.host
                )
            })
    }
}

fn basic_header(b: &Basic) -> String {
    let raw = format!("{}:{}", b.user, b.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The registry's final answer about a manifest.
fn answer(r: &ImageRef, url: &str, status: StatusCode, basic: Option<&Basic>) -> ImageState {
    match status {
        s if s.is_success() => ImageState::Present,
        StatusCode::NOT_FOUND => ImageState::Gone(format!(
            "HEAD {url} answered 404: registry {} has no manifest {} in {}",
            r.host, r.reference, r.name
        )),
        StatusCode::UNAUTHORIZED => ImageState::Unknown(match basic {
            Some(b) => wrong_credentials(r, b, "the registry"),
            None => no_credentials(r),
        }),
        StatusCode::FORBIDDEN => ImageState::Unknown(format!(
            "registry {} denied pull access to {} (403); give rollbot's credentials pull rights",
            r.host, r.name
        )),
        s => ImageState::Unknown(format!(
            "registry {} answered {s} to HEAD {url}; the image could not be checked",
            r.host
        )),
    }
}

fn no_credentials(r: &ImageRef) -> String {
    format!(
        "registry {} needs credentials (401) and none are configured for it; add [registry.credentials.\"{}\"] or a docker_config with an `auths` entry",
        r.host, r.host
    )
}

fn wrong_credentials(r: &ImageRef, b: &Basic, who: &str) -> String {
    format!(
        "registry {}: {who} refused the credentials from {} (401); check the username and password",
        r.host, b.from
    )
}

fn unreachable_text(url: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "did not answer in time".to_string()
    } else if e.is_connect() {
        "could not be reached (connection failed)".to_string()
    } else {
        format!("failed: {e}")
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url);
    format!("registry {host} {what}; the image was not checked (request: HEAD or GET {url})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_dockers_rules() {
        let r = |s| ImageRef::parse(s).unwrap();
        assert_eq!(
            r("127.0.0.1:5000/shop/checkout:v41"),
            ImageRef {
                host: "127.0.0.1:5000".into(),
                name: "shop/checkout".into(),
                reference: "v41".into()
            }
        );
        assert_eq!(r("nginx").name, "library/nginx");
        assert_eq!(r("nginx").reference, "latest");
        assert_eq!(r("nginx").host, "docker.io");
        assert_eq!(r("localhost/app").host, "localhost");
        assert_eq!(r("shop/app:1.2").name, "shop/app");
        let d = r("registry.example.com:443/a/b:1@sha256:abc");
        assert_eq!(d.reference, "sha256:abc");
        assert_eq!(d.name, "a/b");
        assert!(ImageRef::parse("").is_err());
    }

    #[test]
    fn challenges_are_parsed() {
        let (s, p) = challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:shop/checkout:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:shop/checkout:pull");
        let (s, p) = challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        assert_eq!(auths_host("https://index.docker.io/v1/"), "index.docker.io");
    }
}
