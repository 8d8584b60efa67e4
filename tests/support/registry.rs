//! A real container registry (Debian's `docker-registry`, the CNCF
//! distribution registry) on 127.0.0.1 for the tests, with its storage in
//! a temporary directory and deletes enabled. Images are pushed through
//! its HTTP API (a config blob, a layer blob, a manifest) and deleted by
//! digest, as garbage collection would leave them. Stopped on drop.
//!
//! Three ways in: open, htpasswd (basic credentials, bcrypt through
//! `htpasswd -B`), and token auth, where the registry sends clients to a
//! token service run here ([`TokenService`]) whose RS256 JWTs carry the
//! certificate in `x5c` and are signed with `openssl dgst`.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub struct Registry {
    child: Child,
    pub port: u16,
    /// `user:password` when started with htpasswd auth.
    basic: Option<(String, String)>,
    /// The token service when started with token auth.
    pub tokens: Option<Arc<TokenService>>,
    log: PathBuf,
    http: reqwest::Client,
}

fn require(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "`{path}` is not installed: these tests need a real registry. Run scripts/test.sh, which installs Debian's `{package}` package (apt-get install {package})."
    );
    p
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A registry anyone may pull from and push to.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "", None)
    }

    /// A registry that asks for basic credentials (htpasswd, bcrypt).
    pub fn with_htpasswd(dir: &Path, user: &str, password: &str) -> Registry {
        let out = Command::new(require("/usr/bin/htpasswd", "apache2-utils"))
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(out.status.success(), "htpasswd failed");
        let file = dir.join("htpasswd");
        std::fs::write(&file, out.stdout).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: rollbot-test\n    path: {}\n",
            file.display()
        );
        Registry::start_with(dir, &auth, Some((user.into(), password.into())))
    }

    fn start_with(dir: &Path, auth: &str, basic: Option<(String, String)>) -> Registry {
        let binary = require(BINARY, "docker-registry");
        let port = super::free_port();
        let storage = dir.join(format!("registry-{port}"));
        std::fs::create_dir_all(&storage).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rollbot-test-secret\n{auth}",
            storage.display()
        );
        let path = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("registry-{port}.log"));
        let child = Command::new(binary)
            .args(["serve", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry {
            child,
            port,
            basic,
            tokens: None,
            log,
            http: reqwest::Client::new(),
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited ({st}): {}", self.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20 s: {}",
            self.port,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/name:tag`.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.host())
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            return path.to_string();
        }
        format!("http://{}{path}", self.host())
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.url(path);
        let r = self.http.request(method, &url);
        if let Some(t) = &self.tokens {
            let name = repository_of(&url);
            return r.bearer_auth(t.mint(&name, &["pull", "push", "delete"]));
        }
        match &self.basic {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Uploads one blob (monolithic: POST an upload, PUT it with its digest).
    async fn blob(&self, name: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "start upload: {r:?}");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "finish upload: {r:?}");
        digest
    }

    /// Pushes a one-layer image `name:tag` (its content unique to the tag);
    /// returns the manifest's digest.
    pub async fn push(&self, name: &str, tag: &str) -> String {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"tag":"{tag}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let layer = format!("layer of {name}:{tag}").into_bytes();
        let config_digest = self.blob(name, config.as_bytes()).await;
        let layer_digest = self.blob(name, &layer).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}],
        })
        .to_string();
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{name}/manifests/{tag}"))
            .header("content-type", MANIFEST_V2)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "put manifest: {r:?}");
        sha256(manifest.as_bytes())
    }

    /// Deletes a manifest by digest, as a garbage-collected registry would
    /// have lost it.
    pub async fn delete(&self, name: &str, digest: &str) {
        let r = self
            .req(
                reqwest::Method::DELETE,
                &format!("/v2/{name}/manifests/{digest}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "delete manifest: {r:?}");
    }

    /// The status of `HEAD /v2/name/manifests/reference` as the test sees it.
    pub async fn head(&self, name: &str, reference: &str) -> u16 {
        self.req(
            reqwest::Method::HEAD,
            &format!("/v2/{name}/manifests/{reference}"),
        )
        .header("accept", MANIFEST_V2)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }
}

/// The repository a `/v2/NAME/(blobs|manifests)/…` URL is about.
fn repository_of(url: &str) -> String {
    let path = url.split("/v2/").nth(1).unwrap_or_default();
    let end = ["/blobs/", "/manifests/"]
        .iter()
        .filter_map(|m| path.find(m))
        .min()
        .unwrap_or(path.len());
    path[..end].to_string()
}

impl Registry {
    /// A registry with token auth: 401s name [`TokenService`]'s realm,
    /// which hands out pull tokens to `user` with `password`.
    pub async fn with_token_auth(dir: &Path, user: &str, password: &str) -> Registry {
        let tokens = TokenService::start(dir, user, password).await;
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm(),
            tokens.cert.display()
        );
        let dir = dir.to_path_buf();
        let mut r = tokio::task::spawn_blocking(move || Registry::start_with(&dir, &auth, None))
            .await
            .unwrap();
        r.tokens = Some(tokens);
        r
    }
}

const SERVICE: &str = "rollbot-test-registry";
const ISSUER: &str = "rollbot-test-issuer";

/// A token service as the distribution registry's token auth expects one:
/// `GET /token?service=…&scope=repository:NAME:pull` with basic
/// credentials answers `{"token": JWT}`; wrong credentials get 401.
pub struct TokenService {
    port: u16,
    key: PathBuf,
    cert: PathBuf,
    /// The certificate, DER in base64, for the JWT header's `x5c`.
    x5c: String,
    /// Every token request: its query string and whether it was granted.
    pub asked: Mutex<Vec<(String, bool)>>,
    user: String,
    password: String,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(require("/usr/bin/openssl", "openssl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or_default()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenService {
    async fn start(dir: &Path, user: &str, password: &str) -> Arc<TokenService> {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=rollbot-test-token",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            None,
        );
        let der = openssl(
            &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
            None,
        );
        let x5c = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(der)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Arc::new(TokenService {
            port: listener.local_addr().unwrap().port(),
            key,
            cert,
            x5c,
            asked: Mutex::new(Vec::new()),
            user: user.into(),
            password: password.into(),
        });
        let state = me.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get(
                move |headers: axum::http::HeaderMap, query: axum::extract::RawQuery| {
                    let s = state.clone();
                    async move { s.answer(&headers, query.0.unwrap_or_default()) }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        me
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn answer(
        &self,
        headers: &axum::http::HeaderMap,
        query: String,
    ) -> (axum::http::StatusCode, String) {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.password))
        );
        let ok = headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap_or_default() == expected);
        self.asked.lock().unwrap().push((query.clone(), ok));
        if !ok {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                r#"{"details":"wrong credentials"}"#.into(),
            );
        }
        let scope: String = url_param(&query, "scope").unwrap_or_default();
        let mut parts = scope.split(':');
        let (_, name, actions) = (parts.next(), parts.next(), parts.next());
        let actions: Vec<&str> = actions.unwrap_or_default().split(',').collect();
        let token = self.mint(name.unwrap_or_default(), &actions);
        (
            axum::http::StatusCode::OK,
            serde_json::json!({"token": token}).to_string(),
        )
    }

    /// An RS256 JWT granting `actions` on repository `name`.
    pub fn mint(&self, name: &str, actions: &[&str]) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": uuid::Uuid::new_v4().to_string(),
            "access": [{"type": "repository", "name": name, "actions": actions}],
        });
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = openssl(
            &["dgst", "-sha256", "-sign", self.key.to_str().unwrap()],
            Some(signed.as_bytes()),
        );
        format!("{signed}.{}", b64url(&sig))
    }
}

pub fn url_param(query: &str, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
