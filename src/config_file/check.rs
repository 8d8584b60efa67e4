//! The checks that need the whole file. Each section checks itself; the
//! backends get what they need of the rest of the file (the engine's time
//! limit, the services that use them, `[gates]`) in a `CheckContext`.

use super::sections::{MetricSourceKind, StoreKind};
use super::Config;
use crate::backend::factory::{CheckContext, ServiceUse};
use crate::config::{find_span, ConfigError, SecretSource};
use std::path::Path;

impl Config {
    /// Every check of the whole file, each section's in turn.
    pub(super) fn validate(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = self.check_services(path, source);
        errors.extend(self.check_service_checks(path, source));
        errors.extend(self.check_depends_on(path, source));
        errors.extend(self.check_verify(path, source));
        errors.extend(crate::roles::check_grants(&self.roles, path, source));
        errors.extend(self.check_backends(path, source));
        errors.extend(self.check_fallbacks(path, source));
        errors.extend(self.check_chat(path, source));
        if let Some(le) = &self.leader_election {
            errors.extend(le.check(path, source));
        }
        errors.extend(self.check_metrics(path, source));
        errors.extend(self.check_store(path, source));
        errors.extend(self.check_api(path, source));
        errors.extend(self.check_gates(path, source));
        for (host, e) in self.registry.check() {
            let at = find_span(source, &format!("registry.credentials.\"{host}\""))
                .or(find_span(source, "registry"));
            errors.push(ConfigError::at(path, source, at, e));
        }
        errors.extend(crate::incident_comms::config::check(self, path, source));
        errors
    }

    /// Each backend checks its own table and the services that use it.
    fn check_backends(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let services = self.service_uses();
        let mut errors = Vec::new();
        for (name, backend) in &self.backends {
            let cx = self.backend_context(name, backend.span(), &services, path, source);
            errors.extend(backend.as_ref().settings().check(&cx));
        }
        errors
    }

    /// What is allowed in the backends' tables but probably a mistake.
    pub(super) fn backend_warnings(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let services = self.service_uses();
        let mut warnings = Vec::new();
        for (name, backend) in &self.backends {
            let cx = self.backend_context(name, backend.span(), &services, path, source);
            warnings.extend(backend.as_ref().settings().warnings(&cx));
        }
        warnings
    }

    fn service_uses(&self) -> Vec<ServiceUse<'_>> {
        self.services
            .iter()
            .map(|s| ServiceUse {
                name: s.name(),
                name_span: s.name.span(),
                backend: s.backend.as_ref(),
                backend_span: s.backend.span(),
                backend_type: self
                    .backends
                    .get(s.backend.as_ref())
                    .map(|b| b.as_ref().type_name()),
                target: &s.target,
            })
            .collect()
    }

    fn backend_context<'a>(
        &'a self,
        name: &'a str,
        table: std::ops::Range<usize>,
        services: &'a [ServiceUse<'a>],
        path: &'a Path,
        source: &'a str,
    ) -> CheckContext<'a> {
        CheckContext {
            name,
            table,
            backend_timeout: self.engine.backend_timeout.0,
            services,
            no_gates_token: matches!(self.gates.token_source(), Ok(None)),
            path,
            source,
        }
    }
    /// `[store]`: PostgreSQL needs its URL from one secret source; the URL
    /// means nothing to sled, so it is not silently ignored there.
    pub(super) fn check_store(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let s = &self.store;
        let at = find_span(source, "store");
        match (s.kind, s.url_source()) {
            (_, Err(e)) => vec![ConfigError::at(path, source, at, format!("[store]: {e}"))],
            (StoreKind::Postgres, Ok(None)) => vec![ConfigError::at(
                path,
                source,
                at,
                "[store] kind = \"postgres\" needs url (or url_file)",
            )
            .help("write url = \"${ROLLBOT_STORE_URL}\" and set that variable to postgres://USER:PASSWORD@HOST:5432/DATABASE, or url_file = \"/run/secrets/rollbot-store-url\"")],
            (StoreKind::Sled, Ok(Some(_))) => vec![ConfigError::at(
                path,
                source,
                at,
                "[store] url is only used with kind = \"postgres\"; this store is sled, in [store] path",
            )
            .help("add kind = \"postgres\" to keep state in PostgreSQL, or remove url")],
            _ => vec![],
        }
    }

    /// `[metrics]`: a Prometheus source needs its URL, its secrets one
    /// source each; simulated scenarios must exist.
    pub(super) fn check_metrics(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let m = &self.metrics;
        if m.source == MetricSourceKind::Prometheus && m.url.is_none() {
            errors.push(
                ConfigError::at(
                    path,
                    source,
                    find_span(source, "metrics"),
                    "[metrics] source = \"prometheus\" needs url",
                )
                .help("write url = \"http://prometheus:9090\""),
            );
        }
        if let Err(e) = SecretSource::from_pair(
            "bearer_token",
            m.bearer_token.as_ref(),
            m.bearer_token_file.as_ref(),
        ) {
            errors.push(ConfigError::at(
                path,
                source,
                find_span(source, "metrics"),
                format!("[metrics]: {e}"),
            ));
        }
        if let Err(e) = SecretSource::from_pair(
            "basic_password",
            m.basic_password.as_ref(),
            m.basic_password_file.as_ref(),
        ) {
            errors.push(ConfigError::at(
                path,
                source,
                find_span(source, "metrics"),
                format!("[metrics]: {e}"),
            ));
        }
        if m.source == MetricSourceKind::Simulated {
            let known: Vec<String> = crate::judge::sim::standard_scenarios()
                .into_iter()
                .map(|s| s.name)
                .collect();
            for (svc, sc) in &m.scenarios {
                if !known.contains(sc) {
                    errors.push(
                        ConfigError::at(
                            path,
                            source,
                            find_span(source, "metrics.scenarios").or(find_span(source, "metrics")),
                            format!("[metrics.scenarios] {svc}: no scenario named `{sc}`"),
                        )
                        .help(format!("use one of: {}", known.join("; "))),
                    );
                }
            }
        }
        errors
    }

    /// Every API client needs a token.
    pub(super) fn check_api(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for c in &self.api.clients {
            if let Err(e) = c.token_source() {
                errors.push(ConfigError::at(
                    path,
                    source,
                    find_span(source, "api.clients"),
                    e,
                ));
            }
        }
        errors
    }
}
