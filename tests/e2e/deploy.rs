//! deploy/ and the Dockerfile agree with the binary: the manifests render
//! (`kubectl kustomize`), parse as the Kubernetes types they claim to be,
//! and point at what rollbot really serves, reads and needs.

use crate::support::{bin, text};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// YAML documents as JSON values, through python3's PyYAML (no YAML crate
/// is among rollbot's dependencies).
fn yaml_docs(yaml: &[u8]) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is needed to read YAML in this test: {e}; install python3 and python3-yaml (scripts/test.sh does)"));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), yaml).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the YAML does not parse (or PyYAML is missing: apt-get install python3-yaml): {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// deploy/ as `kubectl apply -k deploy/` would send it.
fn rendered() -> Vec<Value> {
    rendered_at("deploy")
}

/// A kustomization under the repository root, rendered.
fn rendered_at(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", root().join(dir).to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed to render deploy/ (kubectl kustomize): {e}; install kubectl 1.27 or later")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}/ failed: {}",
        text(&out)
    );
    yaml_docs(&out.stdout)
}

fn of_kind(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"));
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{kind} {name} is not a valid {kind}: {e}"))
}

fn http_get(p: &Option<Probe>) -> (String, IntOrString) {
    let g = p
        .as_ref()
        .and_then(|p| p.http_get.clone())
        .expect("an httpGet probe");
    (g.path.unwrap_or_default(), g.port)
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("the container has no port named {name}"))
                .container_port
        }
    }
}

/// `${VAR}` references and `*_file = "PATH"` values in a config text.
fn secret_refs(config: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut env = BTreeSet::new();
    let mut files = BTreeSet::new();
    for line in config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
    {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            let end = rest[i..].find('}').unwrap() + i;
            env.insert(rest[i + 2..end].to_string());
            rest = &rest[end..];
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim().ends_with("_file") {
                files.insert(value.trim().trim_matches('"').to_string());
            }
        }
    }
    (env, files)
}

fn rules_of(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    let names = r.resource_names.clone().unwrap_or_default().join(",");
                    out.insert(format!("{g}/{res}:{v}[{names}]"));
                }
            }
        }
    }
    out
}

#[test]
fn the_manifests_match_the_binary_and_its_config() {
    let docs = rendered();
    let sts: StatefulSet = one(&docs, "StatefulSet", "rollbot");
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(1),
        "one replica: the store has one writer"
    );
    let claims = spec.volume_claim_templates.clone().unwrap_or_default();
    assert_eq!(claims.len(), 1, "a PersistentVolumeClaim for the store");
    let claim_name = claims[0].metadata.name.clone().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
            .clone()
    };

    // The config the pod reads is the file in deploy/, and rollbot accepts it.
    let config_mount = mount_of("config");
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(
        args,
        ["serve", "--config", config_mount.mount_path.as_str()]
    );
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "config")
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .expect("the config volume is a ConfigMap");
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|d| d["metadata"]["name"] == cm_name.as_str())
        .unwrap_or_else(|| {
            panic!("the StatefulSet mounts ConfigMap {cm_name}, which deploy/ does not make")
        });
    let file = std::fs::read_to_string(root().join("deploy/rollbot.toml")).unwrap();
    let key = config_mount.sub_path.clone().expect("mounted with subPath");
    assert_eq!(cm["data"][key.as_str()].as_str(), Some(file.as_str()));
    let config = rollbot::config_file::Config::parse(Path::new("deploy/rollbot.toml"), &file)
        .unwrap_or_else(|e| panic!("{e}"));

    // The port rollbot listens on is the container's, on every interface.
    let (host, port) = config.server.listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "probes and the Service reach the pod IP");
    let port: i32 = port.parse().unwrap();
    let (live, live_port) = http_get(&c.liveness_probe);
    let (ready, ready_port) = http_get(&c.readiness_probe);
    assert_eq!(live, "/healthz");
    assert_eq!(ready, "/readyz");
    assert_eq!(port_number(c, &live_port), port);
    assert_eq!(port_number(c, &ready_port), port);
    for name in ["rollbot", "rollbot-headless"] {
        let svc: Service = one(&docs, "Service", name);
        let sp = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        let target = sp.target_port.clone().unwrap();
        assert_eq!(port_number(c, &target), port, "Service {name}");
        let selector = svc.spec.as_ref().unwrap().selector.clone().unwrap();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(labels.get(&k), Some(&v), "Service {name} selects the pod");
        }
    }

    // The store lives on the claim.
    let store = mount_of(&claim_name);
    assert!(
        config.store.path.starts_with(&store.mount_path),
        "[store] path {} is not on the volume at {}",
        config.store.path.display(),
        store.mount_path
    );

    // Non-root, read-only root filesystem, no privilege escalation.
    let psc = pod.security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let csc = c.security_context.clone().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));

    // Every secret the config names comes from the Secret template.
    let env_refs = assert_secrets_come_from_the_template(&file, c, pod);

    // check-config accepts it with the Secret's variables set.
    let mut cmd = Command::new(bin());
    cmd.args([
        "check-config",
        root().join("deploy/rollbot.toml").to_str().unwrap(),
    ]);
    for var in &env_refs {
        cmd.env(var, "dummy-value");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    assert_least_privilege(&docs, pod, sts.metadata.namespace.as_deref().unwrap(), &[]);
    assert_the_image_runs_what_the_pod_runs(&args, psc.run_as_user);
}

/// Every secret `config` (the text of deploy/rollbot.toml) reads comes
/// from the Secret template: variables through `secretKeyRef`, files
/// through a Secret volume. Returns the variables.
fn assert_secrets_come_from_the_template(
    config: &str,
    c: &Container,
    pod: &PodSpec,
) -> BTreeSet<String> {
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let template = yaml_docs(&std::fs::read(root().join("deploy/secret.template.yaml")).unwrap());
    let secret: Secret = serde_json::from_value(template[0].clone()).unwrap();
    let secret_name = secret.metadata.name.clone().unwrap();
    let keys: BTreeSet<String> = secret.string_data.clone().unwrap().into_keys().collect();
    let (env_refs, file_refs) = secret_refs(config);
    assert!(!env_refs.is_empty() && !file_refs.is_empty());
    for var in &env_refs {
        let e = c
            .env
            .iter()
            .flatten()
            .find(|e| &e.name == var)
            .unwrap_or_else(|| {
                panic!("the config reads ${{{var}}}, which the container does not set")
            });
        let r = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.clone())
            .unwrap_or_else(|| panic!("{var} is not taken from a Secret"));
        assert_eq!(r.name, secret_name, "{var}");
        assert!(
            keys.contains(&r.key),
            "{var}: the Secret template has no key {}",
            r.key
        );
    }
    for path in &file_refs {
        let path = Path::new(path);
        let m = mounts
            .iter()
            .find(|m| path.starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("{} is on no mounted volume", path.display()));
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        let s = vol
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not a Secret", m.name));
        assert_eq!(s.secret_name.as_deref(), Some(secret_name.as_str()));
        let rel = path.strip_prefix(&m.mount_path).unwrap().to_str().unwrap();
        let item = s
            .items
            .iter()
            .flatten()
            .find(|i| i.path == rel)
            .unwrap_or_else(|| panic!("the Secret volume has no item at {rel}"));
        assert!(
            keys.contains(&item.key),
            "no key {} in the Secret template",
            item.key
        );
    }

    env_refs
}

/// Least privilege: exactly these rules, no wildcards, bound to the pod's
/// service account in its namespace only, and no Secret applied.
fn assert_least_privilege(docs: &[Value], pod: &PodSpec, ns: &str, leader_extra: &[&str]) {
    let workloads: ClusterRole = one(docs, "ClusterRole", "rollbot-workloads");
    let got = rules_of(workloads.rules.as_deref().unwrap_or_default());
    let mut want = BTreeSet::new();
    for (gr, verbs) in [
        ("apps/deployments", &["get", "list", "watch", "patch"][..]),
        ("apps/deployments/scale", &["get", "patch"]),
        ("apps/replicasets", &["get", "list"]),
        ("argoproj.io/rollouts", &["get", "list", "watch", "patch"]),
        ("argoproj.io/rollouts/status", &["get", "patch"]),
        (
            "networking.istio.io/virtualservices",
            &["get", "list", "watch", "patch"],
        ),
    ] {
        for v in verbs {
            want.insert(format!("{gr}:{v}[]"));
        }
    }
    assert_eq!(got, want);
    let leader: Role = one(docs, "Role", "rollbot-leader");
    let got = rules_of(leader.rules.as_deref().unwrap_or_default());
    let want: BTreeSet<String> = [
        "coordination.k8s.io/leases:get[rollbot-leader]",
        "coordination.k8s.io/leases:update[rollbot-leader]",
        "coordination.k8s.io/leases:create[]",
    ]
    .into_iter()
    .chain(leader_extra.iter().copied())
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    let sa = pod.service_account_name.clone().unwrap();
    for name in ["rollbot-workloads", "rollbot-leader"] {
        let b: RoleBinding = one(docs, "RoleBinding", name);
        let s = &b.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("ServiceAccount", sa.as_str())
        );
        assert_eq!(s.namespace.as_deref(), Some(ns));
    }
    assert_eq!(
        of_kind(docs, "ClusterRoleBinding").len(),
        0,
        "bound per namespace only"
    );
    assert_eq!(
        of_kind(docs, "Secret").len(),
        0,
        "no Secret with placeholder values is applied"
    );
}

/// The image starts the same command (`args`) the StatefulSet runs, as
/// the user the pod runs as, built with this toolchain.
fn assert_the_image_runs_what_the_pod_runs(args: &[String], run_as_user: Option<i64>) {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instr = |name: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("the Dockerfile has no {name}"));
        serde_json::from_str(&line[name.len() + 1..]).unwrap()
    };
    assert_eq!(instr("ENTRYPOINT"), ["rollbot"]);
    assert_eq!(instr("CMD"), args);
    let user = dockerfile.lines().find(|l| l.starts_with("USER ")).unwrap();
    let uid: i64 = user[5..].split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0);
    assert_eq!(run_as_user, Some(uid), "the pod runs as the image's user");
    let rustc = Command::new("rustc").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&rustc.stdout);
    let minor: String = version
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    assert!(
        dockerfile.contains(&format!("FROM rust:{minor}-bookworm AS builder")),
        "the builder image matches the toolchain ({minor})"
    );
}

/// deploy/ha/: two replicas with the state in PostgreSQL. The same
/// namespace, RBAC (the Lease), Service, image, probes and config as
/// deploy/, but a Deployment without a volume, a PodDisruptionBudget, and
/// `[store]` in PostgreSQL with its URL from the Secret.
#[test]
fn the_two_replica_variant_keeps_no_state_in_its_pods() {
    let base = rendered();
    let docs = rendered_at("deploy/ha");
    assert!(of_kind(&docs, "StatefulSet").is_empty());
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    // What is not about where state lives is deploy/'s, unchanged.
    for (kind, name) in [
        ("Namespace", "rollbot"),
        ("ServiceAccount", "rollbot"),
        ("ClusterRole", "rollbot-workloads"),
        ("RoleBinding", "rollbot-workloads"),
        ("RoleBinding", "rollbot-leader"),
    ] {
        let a: Value = one(&base, kind, name);
        let b: Value = one(&docs, kind, name);
        assert_eq!(b, a, "deploy/ha's {kind} {name} differs from deploy/'s");
    }

    // The Role and the Service are deploy/'s but for the leader label:
    // the leader may label its pod, and traffic goes to that label only.
    let mut role: Value = one(&docs, "Role", "rollbot-leader");
    let pods_rule = role["rules"].as_array_mut().unwrap().pop().unwrap();
    assert_eq!(pods_rule["resources"], serde_json::json!(["pods"]));
    assert_eq!(role, one::<Value>(&base, "Role", "rollbot-leader"));
    let mut svc: Value = one(&docs, "Service", "rollbot");
    let role_label = svc["spec"]["selector"]
        .as_object_mut()
        .unwrap()
        .remove("rollbot.dev/role");
    assert_eq!(role_label, Some(Value::from("leader")), "{svc}");
    assert_eq!(svc, one::<Value>(&base, "Service", "rollbot"));

    let d: Deployment = one(&docs, "Deployment", "rollbot");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "a standby beside the leader");
    // Both replicas are Ready (label_pod): a rolling update starts a new
    // pod, waits until it is Ready as a standby, and only then stops an
    // old one, never leaving nobody to take the Lease over.
    let strategy = spec.strategy.clone().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    // The pods start without the leader label: only the leader adds it.
    let template_labels = spec.template.metadata.clone().unwrap().labels.unwrap();
    assert!(!template_labels.contains_key("rollbot.dev/role"));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let sts: StatefulSet = one(&base, "StatefulSet", "rollbot");
    let base_pod = sts.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let base_c = &base_pod.containers[0];
    assert_eq!(c.image, base_c.image);
    assert_eq!(c.args, base_c.args);
    assert_eq!(c.ports, base_c.ports);
    assert_eq!(
        http_get(&c.readiness_probe),
        http_get(&base_c.readiness_probe)
    );
    assert_eq!(
        http_get(&c.liveness_probe),
        http_get(&base_c.liveness_probe)
    );
    assert_eq!(c.security_context, base_c.security_context);
    assert_eq!(pod.service_account_name, base_pod.service_account_name);
    assert_eq!(
        pod.termination_grace_period_seconds, base_pod.termination_grace_period_seconds,
        "the graceful stop's 60 s for actions in flight"
    );
    for v in pod.volumes.iter().flatten() {
        assert!(
            v.persistent_volume_claim.is_none() && v.host_path.is_none(),
            "volume {} keeps state in the pod's node",
            v.name
        );
    }
    // Each replica names itself in the Lease.
    let pod_name = c.env.iter().flatten().find(|e| e.name == "POD_NAME");
    let field = pod_name
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("metadata.name"));
    let pod_ns = c.env.iter().flatten().find(|e| e.name == "POD_NAMESPACE");
    let field = pod_ns
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("metadata.namespace"));

    // One replica stays through voluntary disruptions.
    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget", "rollbot");
    let pdb_spec = pdb.spec.unwrap();
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    let labels = spec.template.metadata.clone().unwrap().labels.unwrap();
    for (k, v) in pdb_spec.selector.unwrap().match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v), "the budget selects the pods");
    }

    // The config is deploy/'s but for [store]: PostgreSQL, its URL from
    // the Secret, the same way every other secret is referenced.
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
        .unwrap();
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|d| d["metadata"]["name"] == cm_name.as_str())
        .unwrap();
    let file = std::fs::read_to_string(root().join("deploy/ha/rollbot.toml")).unwrap();
    assert_eq!(cm["data"]["rollbot.toml"].as_str(), Some(file.as_str()));
    let base_file = std::fs::read_to_string(root().join("deploy/rollbot.toml")).unwrap();
    let mut ha: toml::Table = file.parse().unwrap();
    let mut single: toml::Table = base_file.parse().unwrap();
    let store = ha.remove("store").expect("a [store] table");
    single.remove("store");
    let label_pod = ha["leader_election"]
        .as_table_mut()
        .and_then(|t| t.remove("label_pod"));
    assert_eq!(
        label_pod,
        Some(toml::Value::Boolean(true)),
        "the leader labels its pod"
    );
    assert_eq!(ha, single, "deploy/ha/rollbot.toml differs beyond [store]");
    assert_eq!(store["kind"].as_str(), Some("postgres"), "{store}");
    assert_eq!(
        store["url"].as_str(),
        Some("${ROLLBOT_STORE_URL}"),
        "{store}"
    );
    assert!(
        store.get("path").is_none(),
        "no path: nothing on the pod's disk"
    );
    let vars = assert_secrets_come_from_the_template(&file, c, pod);
    assert!(vars.contains("ROLLBOT_STORE_URL"), "{vars:?}");
    // label_pod: the leader labels its own pod, whatever its name.
    assert_least_privilege(
        &docs,
        pod,
        d.metadata.namespace.as_deref().unwrap(),
        &["/pods:get[]", "/pods:patch[]"],
    );
}
