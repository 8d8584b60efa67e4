//! The resource types the fake API server serves.

/// One served resource type.
#[derive(Clone, Debug)]
pub struct Kind {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Writes to the object ignore `status`; writes to `/status` change only `status`.
    pub status_subresource: bool,
    /// An `autoscaling/v1` `Scale` at `/scale` backed by `spec.replicas`.
    pub scale_subresource: bool,
    pub short_names: Vec<String>,
}

impl Kind {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Kind {
        Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: false,
            scale_subresource: false,
            short_names: vec![],
        }
    }

    pub fn with_status(mut self) -> Kind {
        self.status_subresource = true;
        self
    }

    pub fn with_scale(mut self) -> Kind {
        self.scale_subresource = true;
        self
    }

    pub fn short(mut self, names: &[&str]) -> Kind {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, `pods`: how the API server names a resource in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(super) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The kinds rollbot's Kubernetes backends and leader election use.
pub fn standard_kinds() -> Vec<Kind> {
    vec![
        Kind::new("", "v1", "Namespace", "namespaces", false).short(&["ns"]),
        Kind::new("", "v1", "Pod", "pods", true)
            .with_status()
            .short(&["po"]),
        Kind::new("apps", "v1", "Deployment", "deployments", true)
            .with_status()
            .with_scale()
            .short(&["deploy"]),
        Kind::new("apps", "v1", "ReplicaSet", "replicasets", true)
            .with_status()
            .with_scale()
            .short(&["rs"]),
        Kind::new("argoproj.io", "v1alpha1", "Rollout", "rollouts", true)
            .with_status()
            .with_scale()
            .short(&["ro"]),
        Kind::new(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
            true,
        )
        .short(&["vs"]),
        Kind::new(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        )
        .short(&["vs"]),
        Kind::new("coordination.k8s.io", "v1", "Lease", "leases", true),
    ]
}
