//! TLS to PostgreSQL, as libpq reads `sslmode` and `sslrootcert` from the
//! connection URL, so the URL a managed database hands out works as it is.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` only, and no CA
//! file: [`PgTls::from_url`] takes both keys out of the URL, builds the
//! rustls connector they ask for, and leaves the rest to tokio-postgres.
//!
//! | sslmode | encrypts | checks the chain | checks the host name |
//! | --- | --- | --- | --- |
//! | `disable` | no | | |
//! | `prefer` (default) | when the server offers it | only with `sslrootcert` | no |
//! | `require` | yes, or no connection | only with `sslrootcert` | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! As in libpq, `require` and `prefer` check the chain when a root
//! certificate file is given. Without `sslrootcert` the verify modes trust
//! the system's CA certificates (libpq's `sslrootcert=system`).

use super::StoreError;
use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, with the two verify modes tokio-postgres lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err("[store] url: sslmode=allow (plain first, TLS only when the server insists) is not supported; write sslmode=prefer to encrypt when the server offers it, or sslmode=require".into())
            }
            other => {
                return Err(format!(
                    "[store] url: sslmode={other} is not a TLS mode; write one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates that vouch for the server come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Roots {
    /// `sslrootcert=PATH`.
    File(PathBuf),
    /// No `sslrootcert`, or `sslrootcert=system`: the system's store.
    System,
}

/// The TLS a PostgreSQL connection uses: the mode to hand tokio-postgres
/// and the connector that checks what the mode asks for.
#[derive(Clone)]
pub(crate) struct PgTls {
    mode: Mode,
    roots: Roots,
    connector: MakeRustlsConnect,
}

impl PgTls {
    /// Takes `sslmode` and `sslrootcert` out of `url` (either form) and
    /// builds their connector: returns the URL for tokio-postgres and the
    /// TLS. A CA file that cannot be read is an error now, not at the
    /// first connection. Messages never repeat the URL.
    pub(crate) fn from_url(url: &str) -> Result<(String, PgTls), String> {
        let (rest, taken) = take_keys(url);
        let mut mode = Mode::Prefer;
        let mut rootcert = None;
        for (key, value) in taken {
            match key.as_str() {
                "sslmode" => mode = Mode::parse(&value)?,
                "sslrootcert" => rootcert = Some(value),
                _ => {
                    return Err(format!(
                        "[store] url: {key} (a client certificate) is not supported; rollbot authenticates to PostgreSQL with the user and password in the URL: remove {key}"
                    ))
                }
            }
        }
        let roots = match rootcert.as_deref() {
            None | Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        if rootcert.as_deref() == Some("system") && mode != Mode::VerifyFull {
            return Err(format!(
                "[store] url: sslrootcert=system needs sslmode=verify-full (as in libpq), not sslmode={}",
                mode.name()
            ));
        }
        let connector = MakeRustlsConnect::new(client_config(mode, &roots)?);
        Ok((
            rest,
            PgTls {
                mode,
                roots,
                connector,
            },
        ))
    }

    /// What tokio-postgres does before the handshake: the verify modes
    /// are `require` to it, the checks are in the connector.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    pub(crate) fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// What went wrong with TLS, said so that it can be fixed, for a
    /// connection that failed; `None` when TLS was not the problem.
    /// `target` names the database (`host:port/database`).
    pub(crate) fn refused(&self, target: &str, e: &tokio_postgres::Error) -> Option<StoreError> {
        self.explain(target, e).map(StoreError::Failed)
    }

    fn explain(&self, target: &str, e: &tokio_postgres::Error) -> Option<String> {
        if let Some(tls) = rustls_error(e) {
            return Some(self.explain_certificate(target, tls));
        }
        // tokio-postgres' own text for a failed handshake; the reason is
        // in its source, which its Display leaves out.
        if e.to_string() != "error performing TLS handshake" {
            return None;
        }
        let cause = std::error::Error::source(e).map_or_else(String::new, |c| c.to_string());
        // What tokio-postgres says when the server answers the TLS
        // request with "no" and the mode does not allow plain text.
        if cause.contains("server does not support TLS") {
            return Some(format!(
                "PostgreSQL at {target} does not accept TLS (its ssl setting is off) and [store] url asks for sslmode={}: turn ssl on at the server (ssl = on with its certificate), or, only on a network you trust, write sslmode=prefer or sslmode=disable",
                self.mode.name()
            ));
        }
        Some(format!(
            "the TLS handshake with PostgreSQL at {target} failed ({cause}) with sslmode={}: check the server's ssl settings",
            self.mode.name()
        ))
    }

    fn explain_certificate(&self, target: &str, e: &rustls::Error) -> String {
        let trusted = match &self.roots {
            Roots::File(p) => format!("the CA in sslrootcert={}", p.display()),
            Roots::System => "the system's CA certificates (no sslrootcert)".to_string(),
        };
        match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the certificate of PostgreSQL at {target} is not signed by a CA rollbot trusts ({trusted}): set sslrootcert=/path/to/ca.pem in [store] url to the CA that signed the server's certificate (managed databases publish theirs)"
            ),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            }) => format!(
                "the certificate of PostgreSQL at {target} is not valid for the host name {} (it names {}), and sslmode=verify-full checks it: connect with a host name the certificate names, or write sslmode=verify-ca to check the CA only",
                expected.to_str(),
                if presented.is_empty() {
                    "no host".to_string()
                } else {
                    presented.iter().map(|p| bare(p)).collect::<Vec<_>>().join(", ")
                }
            ),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
                "the certificate of PostgreSQL at {target} is not valid for its host name, and sslmode=verify-full checks it: connect with a host name the certificate names, or write sslmode=verify-ca to check the CA only"
            ),
            rustls::Error::InvalidCertificate(c) => format!(
                "the certificate of PostgreSQL at {target} was refused ({c}; trusted: {trusted}): renew or fix the server's certificate"
            ),
            other => format!(
                "the TLS handshake with PostgreSQL at {target} failed ({other}) with sslmode={}: check the server's ssl settings",
                self.mode.name()
            ),
        }
    }
}

/// `db.example.com` from rustls' `DnsName("db.example.com")` (and an
/// address from `IpAddress(…)`).
fn bare(presented: &str) -> &str {
    presented
        .strip_suffix(')')
        .and_then(|p| p.split_once('('))
        .map_or(presented, |(_, inner)| inner.trim_matches('"'))
}

/// The rustls error under a failed connection, if the handshake failed.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // tokio-rustls hands rustls' error over inside an io::Error, whose
        // `source` skips it.
        if let Some(t) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

fn client_config(mode: Mode, roots: &Roots) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let given = matches!(roots, Roots::File(_));
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::VerifyFull => web_pki(roots, &provider)?,
        Mode::VerifyCa => Arc::new(ChainOnly(web_pki(roots, &provider)?)),
        Mode::Require | Mode::Prefer if given => Arc::new(ChainOnly(web_pki(roots, &provider)?)),
        Mode::Require | Mode::Prefer | Mode::Disable => Arc::new(AnyCertificate(provider.clone())),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for PostgreSQL cannot be set up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn web_pki(
    roots: &Roots,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let store = match roots {
        Roots::File(path) => ca_file(path)?,
        Roots::System => system_roots()?,
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("TLS for PostgreSQL cannot be set up: {e}"))
}

/// The CA certificates in a PEM file.
fn ca_file(path: &std::path::Path) -> Result<RootCertStore, String> {
    let at = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "[store] url: sslrootcert={at} cannot be read ({e}): put the CA certificate of the database there (PEM), or correct the path"
        )
    })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            format!("[store] url: sslrootcert={at} is not a PEM certificate file ({e})")
        })?;
        store.add(cert).map_err(|e| {
            format!("[store] url: sslrootcert={at} holds a certificate that cannot be used as a CA ({e})")
        })?;
    }
    if store.is_empty() {
        return Err(format!(
            "[store] url: sslrootcert={at} holds no certificate (a \"-----BEGIN CERTIFICATE-----\" block): put the database's CA certificate there"
        ));
    }
    Ok(store)
}

/// The system's CA certificates (as `SSL_CERT_FILE` or the OS store has them).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        return Err("[store] url: sslmode verifies the server's certificate, no sslrootcert is given and this system has no CA certificates: set sslrootcert=/path/to/ca.pem in the URL, or install the system's CA certificates (ca-certificates)".into());
    }
    Ok(store)
}

/// Accepts any certificate: `require` and `prefer` without a root
/// certificate encrypt but do not authenticate the server, as in libpq.
/// The handshake's signatures are still checked, with the key the
/// server presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain up to a trusted CA, not the host name: `verify-ca`.
/// webpki checks the name last, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Keys rollbot reads itself; the client-certificate keys are taken too,
/// to be refused by name (tokio-postgres would only say "unknown option").
const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// `url` without [`OURS`], and their values in the order written. Both
/// forms: `postgres://…?key=value&…` and `key=value key='value' …`. Text
/// that does not parse is returned as it is, for tokio-postgres to refuse.
fn take_keys(url: &str) -> (String, Vec<(String, String)>) {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|p| url.strip_prefix(p));
    match rest {
        Some(rest) => take_from_query(url, rest),
        None => take_from_pairs(url).unwrap_or_else(|| (url.to_string(), Vec::new())),
    }
}

fn take_from_query(url: &str, rest: &str) -> (String, Vec<(String, String)>) {
    // As tokio-postgres reads it: credentials end at the first `@`, the
    // query starts at the first `?` after them.
    let after_at = rest.find('@').map_or(0, |i| i + 1);
    let Some(q) = rest[after_at..].find('?') else {
        return (url.to_string(), Vec::new());
    };
    let start = url.len() - rest.len() + after_at + q;
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for pair in url[start + 1..].split('&').filter(|p| !p.is_empty()) {
        let decoded = pair.split_once('=').map(|(k, v)| {
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        });
        match decoded {
            Some((k, v)) if OURS.contains(&k.as_str()) => taken.push((k, v)),
            _ => kept.push(pair),
        }
    }
    let mut out = url[..start].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    (out, taken)
}

/// The `key=value` form, read as libpq (and tokio-postgres) read it.
fn take_from_pairs(text: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut chars = text.chars().peekable();
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' { chars.next()? } else { c });
            }
            if value.is_empty() {
                return None;
            }
        }
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Some((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(url: &str) -> (String, Vec<(String, String)>) {
        take_keys(url)
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_url_form_loses_only_the_tls_keys() {
        let (rest, taken) = keys(
            "postgres://u:p%3Fw@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            rest,
            "postgres://u:p%3Fw@db:5432/app?application_name=x&connect_timeout=3"
        );
        assert_eq!(
            taken,
            vec![
                pair("sslmode", "verify-full"),
                pair("sslrootcert", "/etc/ca.pem")
            ]
        );
        let (rest, taken) = keys("postgresql://db/app?sslmode=require");
        assert_eq!(rest, "postgresql://db/app");
        assert_eq!(taken, vec![pair("sslmode", "require")]);
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, taken) = keys("postgres://u:a?sslmode=disable@db/app");
        assert_eq!(rest, "postgres://u:a?sslmode=disable@db/app");
        assert!(taken.is_empty());
    }

    #[test]
    fn the_key_value_form_keeps_quoted_values() {
        let (rest, taken) = keys(
            "host=db user=u password='it\\'s a secret' sslmode = verify-ca sslrootcert='/etc/my ca.pem'",
        );
        assert_eq!(rest, "host='db' user='u' password='it\\'s a secret'");
        assert_eq!(
            taken,
            vec![
                pair("sslmode", "verify-ca"),
                pair("sslrootcert", "/etc/my ca.pem")
            ]
        );
        // What is kept reads back as the same settings.
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_password(), Some(&b"it's a secret"[..]));
    }

    #[test]
    fn presented_names_are_shown_bare() {
        assert_eq!(bare("DnsName(\"db.example.com\")"), "db.example.com");
        assert_eq!(bare("IpAddress(10.0.0.7)"), "10.0.0.7");
        assert_eq!(bare("db.example.com"), "db.example.com");
    }

    #[test]
    fn the_mode_is_prefer_unless_written() {
        let (_, tls) = PgTls::from_url("postgres://db/app").unwrap();
        assert_eq!(tls.mode, Mode::Prefer);
        assert_eq!(tls.ssl_mode(), SslMode::Prefer);
        let (_, tls) = PgTls::from_url("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(tls.ssl_mode(), SslMode::Disable);
        let (_, tls) = PgTls::from_url("host=db sslmode=require").unwrap();
        assert_eq!(tls.ssl_mode(), SslMode::Require);
    }

    #[test]
    fn bad_tls_settings_say_what_to_write() {
        let e = PgTls::from_url("postgres://u:hunter2@db/app?sslmode=verify_full")
            .err()
            .unwrap();
        assert!(e.contains("sslmode=verify_full is not a TLS mode"), "{e}");
        assert!(e.contains("verify-full"), "{e}");
        let e = PgTls::from_url("postgres://u:hunter2@db/app?sslmode=allow")
            .err()
            .unwrap();
        assert!(e.contains("sslmode=prefer"), "{e}");
        let e = PgTls::from_url("postgres://u:hunter2@db/app?sslcert=/c.pem")
            .err()
            .unwrap();
        assert!(e.contains("sslcert") && e.contains("not supported"), "{e}");
        let e = PgTls::from_url("postgres://u:hunter2@db/app?sslmode=require&sslrootcert=system")
            .err()
            .unwrap();
        assert!(e.contains("needs sslmode=verify-full"), "{e}");
        for e in [
            PgTls::from_url("postgres://u:hunter2@db/app?sslmode=verify_full").err(),
            PgTls::from_url("postgres://u:hunter2@db/app?sslcert=/c.pem").err(),
        ] {
            assert!(!e.unwrap().contains("hunter2"));
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let url = format!(
            "postgres://u:hunter2@db/app?sslmode=verify-full&sslrootcert={}",
            missing.display()
        );
        let e = PgTls::from_url(&url).err().unwrap();
        assert!(
            e.contains(&format!("sslrootcert={} cannot be read", missing.display())),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&missing, "not a certificate\n").unwrap();
        let e = PgTls::from_url(&url).err().unwrap();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
