//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one
//! rollbot replica acts (controller, escalations, chat and API actions,
//! gates) while others stand by and report not-ready on `/readyz` (or,
//! with `label_pod`, Ready while the leader labels its pod: `pod_label.rs`).
//!
//! The algorithm is client-go's `leaderelection`: every `retry_period` the
//! elector reads the Lease; it takes it when it is free, its own, or not
//! renewed for `lease_duration`, and writes it back with the
//! `resourceVersion` it read, so two replicas racing for it cannot both win
//! (the loser gets 409). Expiry is judged by *this* replica's monotonic
//! clock from when it saw the Lease change, never by the `renewTime`
//! written by another machine, so clock skew between nodes does not matter.
//!
//! Safety: a holder acts only until `renew_deadline` after it *sent* its last
//! successful renewal; another replica takes over only `lease_duration`
//! after it *saw* that renewal, which cannot be earlier than it was sent.
//! With `renew_deadline < lease_duration` a holder that cannot renew (API
//! server unreachable, network partition, a paused process) has stopped
//! acting before anyone else can start. kube-lease-manager keeps reporting
//! leadership while renewals fail, which is why this is written out here.

use crate::backend::kube_common::{KubeConnection, KubeKeys};
use crate::config::{find_span, ConfigError, EnvRef, HumanDuration};
use crate::domain::human_duration;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod pod_label;
pub use pod_label::OwnPod;

/// `[leader_election]`: replicas compete for a `coordination.k8s.io/v1`
/// Lease and only the holder acts; the others answer not-ready.
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Name of the Lease (default `rollbot`).
    #[serde(default)]
    pub lease: Option<String>,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// This replica's name in the Lease (default: the `POD_NAME`
    /// environment variable, else the host name).
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a Lease nobody renews stays taken (default 15s).
    #[serde(default)]
    pub lease_duration: Option<HumanDuration>,
    /// How long after its last renewal was sent a holder keeps acting
    /// (default 10s); shorter than `lease_duration`.
    #[serde(default)]
    pub renew_deadline: Option<HumanDuration>,
    /// Pause between attempts to take or renew the Lease (default 2s);
    /// shorter than `renew_deadline`.
    #[serde(default)]
    pub retry_period: Option<HumanDuration>,
    /// API server URL; default: the in-cluster service account, else the
    /// kubeconfig.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Bearer token: `"${ENV_VAR}"`, or `token_file`.
    #[serde(default)]
    pub token: Option<EnvRef>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM file with the cluster's CA certificates for an https `api_server`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The leader labels its own pod `rollbot.dev/role=leader` (and removes
    /// the label when it stops leading), and a standby reports Ready, so a
    /// Service selecting the label routes to the leader while rolling
    /// updates and drains see every healthy replica (default false: only
    /// the leader is Ready). Needs `POD_NAME` from the downward API.
    #[serde(default)]
    pub label_pod: bool,
}

impl LeaderElectionConfig {
    /// The settings with defaults filled in; `identity` falls back to
    /// `POD_NAME`, then the host name.
    pub fn settings(&self) -> ElectionSettings {
        let secs = |d: &Option<HumanDuration>, default: u64| {
            d.map(|d| d.0)
                .unwrap_or(std::time::Duration::from_secs(default))
        };
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("rollbot-{}", std::process::id()));
        ElectionSettings {
            connection: self.keys().connection(),
            lease: self.lease.clone().unwrap_or_else(|| "rollbot".into()),
            namespace: self.namespace.clone(),
            identity,
            lease_duration: secs(&self.lease_duration, 15),
            renew_deadline: secs(&self.renew_deadline, 10),
            retry_period: secs(&self.retry_period, 2),
        }
    }
}

impl LeaderElectionConfig {
    /// The connection keys, shared with the Kubernetes backends.
    fn keys(&self) -> KubeKeys<'_> {
        KubeKeys {
            api_server: self.api_server.as_ref(),
            token: self.token.as_ref(),
            token_file: self.token_file.as_ref(),
            ca_file: self.ca_file.as_ref(),
            namespace: self.namespace.as_ref(),
            request_timeout: None,
        }
    }

    /// A holder must stop acting before another replica may take the
    /// Lease; the connection keys are checked like a backend's.
    pub fn check(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let here = find_span(source, "leader_election");
        let e = |msg: String| ConfigError::at(path, source, here.clone(), msg);
        let mut errors = Vec::new();
        let st = self.settings();
        if st.renew_deadline >= st.lease_duration {
            errors.push(e(format!(
                "[leader_election] renew_deadline ({}) must be shorter than lease_duration ({})",
                human_duration(st.renew_deadline),
                human_duration(st.lease_duration)
            ))
            .help("a holder must stop acting before another replica may take the Lease: for example lease_duration = \"15s\", renew_deadline = \"10s\""));
        }
        if st.retry_period.is_zero() || st.retry_period >= st.renew_deadline {
            errors.push(e(format!(
                "[leader_election] retry_period ({}) must be longer than 0s and shorter than renew_deadline ({})",
                human_duration(st.retry_period),
                human_duration(st.renew_deadline)
            ))
            .help("renewals are tried every retry_period; for example retry_period = \"2s\""));
        }
        for p in self.keys().problems() {
            let (message, help) = p.in_leader_election();
            errors.push(e(message).maybe_help(help));
        }
        errors
    }
}

/// The timings of an election (client-go's defaults are 15s / 10s / 2s).
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub connection: KubeConnection,
    /// Name of the Lease.
    pub lease: String,
    /// Namespace of the Lease (default: the connection's default namespace).
    pub namespace: Option<String>,
    /// This replica's name in the Lease's `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What this replica knows about the election, for `/readyz` and refusals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaderView {
    /// Whether leader election is configured at all.
    pub elected: bool,
    pub leader: bool,
    pub identity: String,
    pub lease: String,
    /// The holder last seen in the Lease (this replica when leader).
    pub holder: Option<String>,
    /// Why the last attempt to read or write the Lease failed.
    pub error: Option<String>,
    /// `label_pod`: the Service routes by the leader label, so a healthy
    /// standby reports Ready.
    pub standby_ready: bool,
}

impl LeaderView {
    /// One line for `/readyz` and for refusals on a standby replica.
    pub fn describe(&self) -> String {
        if !self.elected {
            return "leader election: off (this replica acts)".into();
        }
        let base = if self.leader {
            format!("leader: {} holds the Lease `{}`", self.identity, self.lease)
        } else {
            match &self.holder {
                Some(h) if h != &self.identity => format!(
                    "standby: the Lease `{}` is held by {h}; this replica ({}) takes no actions",
                    self.lease, self.identity
                ),
                _ => format!(
                    "standby: {} does not hold the Lease `{}` (yet); it takes no actions",
                    self.identity, self.lease
                ),
            }
        };
        match &self.error {
            Some(e) => format!("{base}; last Lease error: {e}"),
            None => base,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    elected: bool,
    identity: String,
    lease: String,
    /// Until when this replica may act (`None`: not the holder).
    valid_until: Option<Instant>,
    holder: Option<String>,
    error: Option<String>,
    /// Released the Lease while stopping: it starts nothing, but the
    /// actions it started while leading still record their results.
    handed_over: bool,
    /// The `leaseTransitions` of the Lease this replica last won: a shared
    /// store refuses writes carrying an epoch older than one it has seen.
    epoch: Option<u64>,
    /// `label_pod`: a healthy standby is Ready too.
    standby_ready: bool,
    /// This leadership began on a Lease its previous holder had released
    /// (a graceful stop), not on one that expired: that holder may still
    /// be recording the results of actions it started.
    after_release: bool,
}

/// A write the fence is asked about (see `crate::fence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// A request that changes something on a backend.
    Send,
    /// A commit to the store.
    Append,
}

/// A cheap handle asked before acting. Without an election it always says
/// yes; once [`Leadership::elect`] is called it says yes only while the
/// elector holds a fresh Lease.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<Mutex<State>>);

impl Leadership {
    pub fn is_leader(&self) -> bool {
        let s = self.0.lock().unwrap();
        !s.elected || s.valid_until.is_some_and(|v| Instant::now() < v)
    }

    pub fn view(&self) -> LeaderView {
        let leader = self.is_leader();
        let s = self.0.lock().unwrap();
        // A replica whose own hold ran out does not know who holds the
        // Lease now; it must not name itself to the clients it turns away.
        let holder = match leader {
            true => s.holder.clone(),
            false => s.holder.clone().filter(|h| h != &s.identity),
        };
        LeaderView {
            elected: s.elected,
            leader,
            identity: s.identity.clone(),
            lease: s.lease.clone(),
            holder,
            error: s.error.clone(),
            standby_ready: s.standby_ready,
        }
    }

    /// The epoch of this replica's last leadership (`None` without an
    /// election, or before the first Lease is won).
    pub(crate) fn epoch(&self) -> Option<u64> {
        let s = self.0.lock().unwrap();
        s.elected.then_some(s.epoch).flatten()
    }

    /// Who writes now: this replica in its last leadership (`None`
    /// without an election, or before the first Lease is won). In-flight
    /// records carry it, so a successor knows whose results to wait for.
    pub(crate) fn owner(&self) -> Option<crate::fence::Owner> {
        let s = self.0.lock().unwrap();
        let epoch = s.elected.then_some(s.epoch).flatten()?;
        Some(crate::fence::Owner {
            identity: s.identity.clone(),
            epoch,
        })
    }

    /// Whether this replica's leadership began on a released Lease, taken
    /// over from the holder of the epoch just before (see `won`).
    pub(crate) fn took_released(&self) -> bool {
        self.0.lock().unwrap().after_release
    }

    /// The fence every write of this replica asks (see `crate::fence`).
    pub fn fence(&self) -> crate::fence::Fence {
        crate::fence::Fence::of(self)
    }

    /// Whether this replica may make write `w` now, judged on the
    /// monotonic clock; else why not, in one sentence.
    pub(crate) fn may_write(&self, w: Write) -> Result<(), String> {
        let s = self.0.lock().unwrap();
        let now = Instant::now();
        if !s.elected || s.valid_until.is_some_and(|v| now < v) {
            return Ok(());
        }
        if s.handed_over {
            return match w {
                Write::Append => Ok(()),
                Write::Send => Err(format!(
                    "this replica ({}) handed the Lease `{}` over as it stops and starts nothing more",
                    s.identity, s.lease
                )),
            };
        }
        let holder = match s.holder.as_deref().filter(|h| *h != s.identity) {
            Some(h) => format!(" (held by {h})"),
            None => String::new(),
        };
        Err(match s.valid_until {
            Some(v) => format!(
                "this replica ({}) is no longer the leader: its hold on the Lease `{}` ran out {} ago, when its renew deadline passed without a renewal{holder}; the leader acts instead",
                s.identity,
                s.lease,
                human_duration(now.saturating_duration_since(v).max(Duration::from_millis(1)))
            ),
            None => format!(
                "this replica ({}) does not hold the Lease `{}`{holder}; the leader acts instead",
                s.identity, s.lease
            ),
        })
    }

    /// Switches to elected mode (not the leader until the first Lease is
    /// won) and returns the elector to run.
    pub fn elect(&self, settings: ElectionSettings) -> Elector {
        {
            let mut s = self.0.lock().unwrap();
            s.elected = true;
            s.identity = settings.identity.clone();
            s.lease = settings.lease.clone();
            s.valid_until = None;
        }
        Elector {
            settings,
            handle: self.clone(),
            observed: None,
            pod: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn won(&self, until: Instant, holder: &str, epoch: u64) {
        self.won_from(until, holder, epoch, None);
    }

    /// [`Leadership::won`], saying how the Lease was taken when it changed
    /// hands: `Some(true)` from a holder that released it, `Some(false)`
    /// from one whose hold expired; `None` keeps what was known (a renewal).
    pub(crate) fn won_from(
        &self,
        until: Instant,
        holder: &str,
        epoch: u64,
        released: Option<bool>,
    ) {
        let mut s = self.0.lock().unwrap();
        if let Some(r) = released {
            s.after_release = r;
        }
        s.valid_until = Some(until);
        s.epoch = Some(epoch);
        s.holder = Some(holder.to_string());
        s.error = None;
        s.handed_over = false;
    }

    pub(crate) fn lost(&self, holder: Option<String>) {
        let mut s = self.0.lock().unwrap();
        s.valid_until = None;
        s.holder = holder;
        s.error = None;
    }

    /// Stops leading because this replica gives the Lease up as it stops:
    /// it sends nothing more, and records only what it already started.
    pub(crate) fn hand_over(&self) {
        let mut s = self.0.lock().unwrap();
        s.valid_until = None;
        s.holder = None;
        s.handed_over = true;
    }

    /// A failed attempt: leadership, if any, runs out at its deadline.
    fn failed(&self, e: String) {
        self.0.lock().unwrap().error = Some(e);
    }
}

/// Runs the election loop for one replica.
pub struct Elector {
    settings: ElectionSettings,
    handle: Leadership,
    /// The Lease's resourceVersion and when this replica first saw it.
    observed: Option<(String, Instant)>,
    /// `label_pod`: this replica's pod, and the labeller's wish.
    pod: Option<(OwnPod, tokio::sync::watch::Sender<bool>)>,
}

/// A Lease's `leaseTransitions`: it grows every time the Lease changes
/// hands, so it orders leaderships (a fencing token).
fn transitions(lease: &Lease) -> u64 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
        .max(0) as u64
}

/// What one attempt found.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// Holding the Lease; its `leaseTransitions`, this leadership's epoch,
    /// and, when it just changed hands, whether its holder had released it.
    Holding(u64, Option<bool>),
    HeldBy(Option<String>),
}

impl Elector {
    /// Labels `pod` while this replica leads (`label_pod`), and reports a
    /// healthy standby Ready from now on.
    pub fn label_pod(mut self, pod: OwnPod) -> Elector {
        self.handle.0.lock().unwrap().standby_ready = true;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(pod_label::keep_labelled(
            pod.clone(),
            self.settings.connection.clone(),
            self.settings.retry_period,
            rx,
        ));
        self.pod = Some((pod, tx));
        self
    }

    /// Tries to take or renew the Lease every `retry_period` until
    /// `shutdown` fires, then gives the Lease up so a successor need not wait
    /// for it to expire.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut was_leader = false;
        loop {
            let api = match self.api().await {
                Ok(a) => a,
                Err(e) => {
                    self.handle.failed(e);
                    if wait_or_stop(&mut shutdown, self.settings.retry_period).await {
                        return;
                    }
                    continue;
                }
            };
            let sent = Instant::now();
            match self.attempt(&api).await {
                Ok(Attempt::Holding(epoch, released)) => {
                    self.handle.won_from(
                        sent + self.settings.renew_deadline,
                        &self.settings.identity,
                        epoch,
                        released,
                    );
                }
                Ok(Attempt::HeldBy(h)) => self.handle.lost(h),
                Err(e) => {
                    tracing::warn!(lease = %self.settings.lease, error = %e, "could not read or renew the leader Lease");
                    self.handle.failed(e);
                }
            }
            let leader = self.handle.is_leader();
            if leader != was_leader {
                tracing::warn!(
                    identity = %self.settings.identity,
                    lease = %self.settings.lease,
                    leader,
                    "{}",
                    if leader { "became the leader" } else { "stopped leading" }
                );
                was_leader = leader;
                if let Some((_, want)) = &self.pod {
                    let _ = want.send(leader);
                }
            }
            if wait_or_stop(&mut shutdown, self.settings.retry_period).await {
                if self.handle.is_leader() {
                    self.release(&api).await;
                    self.unlabel().await;
                }
                return;
            }
        }
    }

    async fn api(&self) -> Result<Api<Lease>, String> {
        let c = self
            .settings
            .connection
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let ns = self
            .settings
            .namespace
            .clone()
            .unwrap_or(c.default_namespace);
        Ok(Api::namespaced(c.client, &ns))
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn attempt(&mut self, api: &Api<Lease>) -> Result<Attempt, String> {
        let me = self.settings.identity.clone();
        let duration_s = self.settings.lease_duration.as_secs().max(1) as i32;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let current = api
            .get_opt(&self.settings.lease)
            .await
            .map_err(|e| describe(&e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.lease.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    // Nobody held it before: nothing to wait for.
                    Ok(Attempt::Holding(transitions(&created), Some(false)))
                }
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(None)),
                Err(e) => Err(describe(&e)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let theirs = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.settings.lease_duration);
        let seen = self
            .observed
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now);
        if let Some(h) = &holder {
            if h != &me && seen.elapsed() < theirs {
                return Ok(Attempt::HeldBy(holder));
            }
        }
        let mut next = spec.clone();
        // Taken over from nobody: the previous holder released it (or it
        // was never held); from somebody: that holder's hold expired.
        let changed_hands = (holder.as_deref() != Some(me.as_str())).then_some(holder.is_none());
        if holder.as_deref() != Some(me.as_str()) {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            next.holder_identity = Some(me.clone());
        }
        next.renew_time = Some(now);
        next.lease_duration_seconds = Some(duration_s);
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read above: a replica that
        // wrote in between makes this a 409, and that replica keeps it.
        match api
            .replace(&self.settings.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Holding(transitions(&written), changed_hands))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(holder)),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Removes the leader label as this replica stops (bounded: the pod
    /// goes away anyway, and with it the Service's endpoint).
    async fn unlabel(&mut self) {
        let Some((pod, want)) = self.pod.take() else {
            return;
        };
        // The labeller, if mid-retry, now removes it too.
        let _ = want.send(false);
        drop(want);
        let removed = tokio::time::timeout(
            Duration::from_secs(2),
            pod_label::set(&pod, &self.settings.connection, false),
        )
        .await;
        match removed {
            Ok(Ok(())) => tracing::info!(pod = %pod.name, "removed the leader label from this pod"),
            Ok(Err(e)) => {
                tracing::warn!(pod = %pod.name, error = %e, "could not remove the leader label from this pod")
            }
            Err(_) => {
                tracing::warn!(pod = %pod.name, "removing the leader label from this pod timed out")
            }
        }
    }

    /// Remembers when the Lease last changed, by this replica's clock.
    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(v, _)| v) != Some(&rv) {
            self.observed = Some((rv, Instant::now()));
        }
    }

    /// Empties the holder so a successor takes over at its next attempt
    /// (client-go's `ReleaseOnCancel`). Stops acting first.
    async fn release(&mut self, api: &Api<Lease>) {
        self.handle.hand_over();
        let Ok(Some(mut lease)) = api.get_opt(&self.settings.lease).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match api
            .replace(&self.settings.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.settings.lease, "released the leader Lease"),
            Err(e) => {
                tracing::warn!(error = %describe(&e), "could not release the leader Lease; it expires by itself")
            }
        }
    }
}

/// Sleeps for `d`; true when shutdown was asked for meanwhile.
async fn wait_or_stop(shutdown: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_election_every_replica_acts() {
        let l = Leadership::default();
        assert!(l.is_leader());
        assert!(l.view().describe().contains("off"));
    }

    #[test]
    fn leadership_runs_out_at_its_deadline_without_a_renewal() {
        let l = Leadership::default();
        let _ = l.elect(ElectionSettings {
            connection: KubeConnection::default(),
            lease: "rollbot".into(),
            namespace: None,
            identity: "rollbot-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        });
        assert!(!l.is_leader(), "not the leader before winning the Lease");
        l.won(Instant::now() + Duration::from_millis(50), "rollbot-0", 1);
        assert!(l.is_leader());
        l.failed("connection refused".into());
        assert!(l.is_leader(), "a failed renewal does not end it early");
        std::thread::sleep(Duration::from_millis(80));
        assert!(!l.is_leader(), "it ends at the deadline");
        let v = l.view();
        assert!(v.describe().contains("standby"), "{}", v.describe());
        assert!(
            v.describe().contains("connection refused"),
            "{}",
            v.describe()
        );
        l.lost(Some("rollbot-1".into()));
        assert!(l.view().describe().contains("held by rollbot-1"));
    }

    #[test]
    fn a_replica_whose_hold_ran_out_does_not_name_itself_as_the_leader() {
        let l = Leadership::default();
        let _ = l.elect(ElectionSettings {
            connection: KubeConnection::default(),
            lease: "rollbot".into(),
            namespace: None,
            identity: "rollbot-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        });
        l.won(Instant::now() + Duration::from_millis(30), "rollbot-0", 1);
        assert_eq!(l.view().holder.as_deref(), Some("rollbot-0"));
        std::thread::sleep(Duration::from_millis(60));
        let v = l.view();
        assert!(!v.leader);
        assert_eq!(v.holder, None, "a lapsed replica claims the Lease: {v:?}");
        assert!(
            !v.describe().contains("held by rollbot-0"),
            "{}",
            v.describe()
        );
        l.lost(Some("rollbot-1".into()));
        assert_eq!(l.view().holder.as_deref(), Some("rollbot-1"));
    }
}
