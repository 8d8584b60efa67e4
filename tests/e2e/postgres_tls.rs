//! TLS to a real PostgreSQL (`ssl = on`, a CA and a server certificate
//! made here): each libpq `sslmode` does what libpq does, the store works
//! encrypted (the server's `pg_stat_ssl` says so), and every way TLS can
//! fail says what was wrong and what to do, without the password.

use crate::support::postgres::Postgres;
use crate::support::{in_process, rollbot, text};
use rollbot::audit::{Outcome as AuditOutcome, Record};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use rollbot::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PASSWORD: &str = "s3cret-pw";
/// The name in the server's certificate; it resolves nowhere, the
/// connection goes to `hostaddr=127.0.0.1` and TLS checks the name.
const DB_HOST: &str = "db.rollbot.test";

/// A CA, a server certificate it signed for [`DB_HOST`], and a second CA
/// that signed nothing, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    chain: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, name.to_string());
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
        };
        let ours = ca("rollbot test CA");
        let other = ca("some other CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec![DB_HOST.to_string()])
            .unwrap()
            .signed_by(&key, &ours)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ours.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        Pki {
            chain: server.pem() + &ours.pem(),
            key: key.serialize_pem(),
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
}

/// A PostgreSQL with `ssl = on` and a certificate for [`DB_HOST`], and
/// the certificates.
fn tls_server() -> (Postgres, Pki) {
    let pg = Postgres::start();
    let pki = Pki::new();
    pg.enable_tls(&pki.chain, &pki.key);
    (pg, pki)
}

/// A URL for `db` on `pg` reached as `host`, with a password (trust
/// authentication ignores it; messages must not show it) and `params`.
fn url(pg: &Postgres, host: &str, db: &str, params: &str) -> String {
    format!(
        "postgres://{}:{PASSWORD}@{host}:{}/{db}?hostaddr=127.0.0.1&{params}",
        pg.user, pg.port
    )
}

fn ca_param(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

fn open(url: &str) -> anyhow::Result<Store> {
    rollbot::store::postgres_store::open_store(url, Duration::from_secs(5))
}

/// Why opening the store at `url` failed, checked not to show the password.
fn refusal(url: &str) -> String {
    let e = format!("{:#}", open(url).err().expect("the store must not open"));
    assert!(!e.contains(PASSWORD), "the password is shown: {e}");
    e
}

fn record(n: usize) -> Record {
    Record {
        time: chrono::Utc::now(),
        actor: Actor::new(Platform::Console, "ada", "Ada"),
        action: "rollback".into(),
        service: Some("checkout".into()),
        parameters: BTreeMap::from([("n".into(), serde_json::json!(n))]),
        outcome: AuditOutcome::Succeeded,
        reason: "test".into(),
        detail: String::new(),
        correlation_id: format!("c-{n}"),
        idempotency_key: None,
    }
}

/// verify-full with the CA that signed the server's certificate: the
/// store appends and verifies its chain, over connections the server
/// reports as encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_databases_ca_keeps_the_store_encrypted() {
    let (pg, pki) = tls_server();
    pg.create_database("tls");
    let store = open(&url(
        &pg,
        DB_HOST,
        "tls",
        &format!("sslmode=verify-full&{}", ca_param(&pki.ca())),
    ))
    .unwrap();
    for n in 0..5 {
        store.append(record(n)).await.unwrap();
    }
    let report = store.audit_handle().verify().unwrap();
    assert_eq!(report.first_bad, None, "{report}");
    assert_eq!(report.checked, 5);
    let (encrypted, plain) = pg.rollbot_connections();
    assert!(encrypted >= 1, "no encrypted connection of rollbot's");
    assert_eq!(plain, 0, "rollbot connected without TLS");
}

/// A database that only lets its user in over TLS with a password (as
/// managed ones do): verify-full logs in with SCRAM bound to the TLS
/// channel (`channel_binding=require`), and a wrong password is refused
/// without being shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_over_tls_binds_scram_to_the_channel() {
    let (pg, pki) = tls_server();
    pg.tls_login("app", PASSWORD, "managed");
    let app = |password: &str| {
        format!(
            "postgres://app:{password}@{DB_HOST}:{}/managed?hostaddr=127.0.0.1&sslmode=verify-full&{}&channel_binding=require",
            pg.port,
            ca_param(&pki.ca())
        )
    };
    let store = open(&app(PASSWORD)).unwrap();
    store.append(record(1)).await.unwrap();
    assert_eq!(store.audit_handle().verify().unwrap().checked, 1);
    drop(store);

    let e = format!(
        "{:#}",
        open(&app("wrong-pw"))
            .err()
            .expect("a wrong password must not log in")
    );
    assert!(!e.contains("wrong-pw"), "{e}");
    assert!(e.contains("password authentication failed"), "{e}");
}

/// The certificate checks: a host name the certificate does not name is
/// refused by verify-full (and accepted by verify-ca, which checks the CA
/// only); a CA that did not sign the certificate is refused; a CA file
/// that is not there is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_match_are_refused_with_what_to_do() {
    let (pg, pki) = tls_server();
    pg.create_database("tls");
    let ca = ca_param(&pki.ca());

    let e = refusal(&url(
        &pg,
        "other.rollbot.test",
        "tls",
        &format!("sslmode=verify-full&{ca}"),
    ));
    assert!(
        e.contains("is not valid for the host name other.rollbot.test (it names db.rollbot.test)"),
        "{e}"
    );
    assert!(e.contains("sslmode=verify-ca"), "{e}");
    open(&url(
        &pg,
        "other.rollbot.test",
        "tls",
        &format!("sslmode=verify-ca&{ca}"),
    ))
    .expect("verify-ca does not check the host name");

    let e = refusal(&url(
        &pg,
        DB_HOST,
        "tls",
        &format!("sslmode=verify-full&{}", ca_param(&pki.other_ca())),
    ));
    assert!(e.contains("is not signed by a CA rollbot trusts"), "{e}");
    assert!(
        e.contains(&format!("sslrootcert={}", pki.other_ca().display())),
        "{e}"
    );
    // libpq's rule: `require` with a root certificate checks the chain.
    let e = refusal(&url(
        &pg,
        DB_HOST,
        "tls",
        &format!("sslmode=require&{}", ca_param(&pki.other_ca())),
    ));
    assert!(e.contains("is not signed by a CA rollbot trusts"), "{e}");

    let missing = pki.dir.path().join("nowhere.pem");
    let e = refusal(&url(
        &pg,
        DB_HOST,
        "tls",
        &format!("sslmode=verify-full&{}", ca_param(&missing)),
    ));
    assert!(
        e.contains(&format!("sslrootcert={} cannot be read", missing.display())),
        "{e}"
    );
}

/// `require` without a CA encrypts without checking the certificate (a
/// certificate no system trusts is accepted), and `disable` stays plain
/// on a server that offers TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_ca_and_disable_stays_plain() {
    let (pg, _pki) = tls_server();
    pg.create_database("tls");
    let store = open(&url(&pg, DB_HOST, "tls", "sslmode=require")).unwrap();
    store.append(record(1)).await.unwrap();
    assert_eq!(
        pg.rollbot_connections().1,
        0,
        "require connected in plain text"
    );
    drop(store);

    pg.create_database("plain");
    let store = open(&url(&pg, DB_HOST, "plain", "sslmode=disable")).unwrap();
    store.append(record(1)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The first store's connections close when it is dropped.
    while pg.rollbot_connections().0 > 0 {
        assert!(std::time::Instant::now() < deadline, "TLS connections stay");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pg.rollbot_connections().1 >= 1, "disable did not connect");
}

/// A server with `ssl` off: `require` (and the verify modes) refuse with
/// what to change; the default (`prefer`) and `disable` connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_when_tls_is_required() {
    let pg = Postgres::start();
    pg.create_database("plain");
    for mode in ["require", "verify-full"] {
        let e = refusal(&url(&pg, "127.0.0.1", "plain", &format!("sslmode={mode}")));
        assert!(
            e.contains(&format!(
                "does not accept TLS (its ssl setting is off) and [store] url asks for sslmode={mode}"
            )),
            "{e}"
        );
        assert!(e.contains("turn ssl on at the server"), "{e}");
    }
    for params in ["sslmode=prefer", "sslmode=disable", "connect_timeout=5"] {
        let store = open(&url(&pg, "127.0.0.1", "plain", params)).unwrap();
        store.append(record(1)).await.unwrap();
    }
}

/// A TLS setting rollbot cannot use is an error when the store opens
/// (on an async thread, as `serve` opens it), naming the setting.
#[tokio::test]
async fn a_misspelt_sslmode_is_named_when_the_store_opens() {
    let e = refusal(&format!(
        "postgres://rollbot:{PASSWORD}@127.0.0.1:1/app?sslmode=verify_full"
    ));
    assert!(
        e.contains("sslmode=verify_full is not a TLS mode; write one of disable, prefer, require, verify-ca, verify-full"),
        "{e}"
    );
}

/// `rollbot store copy` into a database reached with verify-full, then
/// `rollbot audit verify --config` over it; a config whose CA does not
/// match gets the certificate's message, not the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_and_audit_verify_work_over_verify_full() {
    let (pg, pki) = tls_server();
    pg.create_database("copy");
    let dir = tempfile::tempdir().unwrap();
    let sled = r#"
[backends.sim]
type = "simulated"
history = { checkout = ["v1", "v2", "v3"] }

[[services]]
name = "checkout"
backend = "sim"

[[roles.responder]]
members = ["console:responder"]
"#;
    {
        let rt = in_process::start(dir.path(), sled, vec![]).await;
        let out = rt
            .engine
            .execute(
                Request::new(
                    Actor::new(Platform::Console, "responder", "responder"),
                    Action::Rollback {
                        to: None,
                        force: false,
                    },
                )
                .service("checkout")
                .reason("bad deploy"),
            )
            .await;
        assert_eq!(out.status, Status::Succeeded, "{out:?}");
    }
    let good = url(
        &pg,
        DB_HOST,
        "copy",
        &format!("sslmode=verify-full&{}", ca_param(&pki.ca())),
    );
    let from = format!("sled:{}", dir.path().join("data").display());
    let o = rollbot(&[
        "store",
        "copy",
        "--from",
        &from,
        "--to",
        &format!("postgres:{good}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chain verified"), "{}", text(&o));

    let verify = |url: &str| {
        let file = dir.path().join("store-url");
        std::fs::write(&file, format!("{url}\n")).unwrap();
        let config = dir.path().join("pg.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\nkind = \"postgres\"\nurl_file = \"{}\"\n{sled}",
                file.display()
            ),
        )
        .unwrap();
        rollbot(&["audit", "verify", "--config", config.to_str().unwrap()])
    };
    let v = verify(&good);
    assert!(v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("audit log intact"), "{}", text(&v));

    let v = verify(&good.replace("ca.pem", "other-ca.pem"));
    assert!(!v.status.success());
    assert!(
        text(&v).contains("is not signed by a CA rollbot trusts"),
        "{}",
        text(&v)
    );
    assert!(!text(&v).contains(PASSWORD), "{}", text(&v));
}
