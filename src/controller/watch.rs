//! One rollout under watch.

use crate::chat::{ButtonStyle, MessageRef};
use crate::config_file::{OnFailing, ServiceConfig};
use crate::domain::{Action, Actor};
use crate::engine::prompt::Choice;
use crate::engine::{new_id, Engine, PromptState, Request, Status};
use crate::judge::{
    BeforeAfterJudge, Evaluation, Judge, Recommendation, SequentialJudge, Tick, TrackSample,
    Verdict,
};
use chrono::{DateTime, Utc};

mod ask;

#[derive(Clone, Debug, PartialEq)]
pub enum WatchState {
    Watching,
    /// Paused, waiting for a person's answer.
    Asking {
        prompt: String,
    },
    /// Rolled back; checking that the service recovers (incident open).
    Monitoring(String),
    /// Fully promoted, or rolled back and resolved: nothing more to do.
    Done(String),
    /// The automatic rollback did not complete: its incident stays open
    /// (and the on-call was paged) until someone rolls back by hand.
    RollbackFailed(String),
}

pub struct RolloutWatch {
    pub id: String,
    pub service: String,
    pub from: String,
    pub to: String,
    judge: SequentialJudge,
    /// Set for a rollout with no baseline track: judged after vs before
    /// instead of by `judge` (see `before_after.rs`).
    before_after: Option<BeforeAfter>,
    pub state: WatchState,
    pub last: Option<Evaluation>,
    summary: Vec<MessageRef>,
    /// A person approved a borderline canary: do not ask again unless it fails.
    borderline_approved: bool,
    /// When the canary last moved to a new step (seconds since the start).
    step_started: f64,
    incident: Option<super::incident::Incident>,
    /// The service's latest rollback when this watch first looked (outer
    /// None: not looked yet), so a later one, made by hand, is noticed.
    rollbacks_seen: Option<Option<chrono::DateTime<chrono::Utc>>>,
    /// The cooldown notice was posted for this rollout.
    cooldown_noted: bool,
    /// The "healthy, but automation is off" notice was posted.
    automation_noted: bool,
    /// The "promotion held: no rollback target" notice was posted.
    capability_noted: bool,
    /// The on-call was paged for this failing canary (automation off).
    paged: bool,
    /// Canary vs baseline over the last ticks, for the summary's chart.
    chart: super::chart::ChartHistory,
    /// The verdict the summary's chart was last attached for.
    charted: Option<Verdict>,
    /// When the rollout started, so a tick's `t` is an instant on the wall
    /// clock; without it, a tick is taken to be about now.
    start: Option<DateTime<Utc>>,
    /// Where the canary's trouble began, for the time to detect.
    onset: super::onset::OnsetEstimate,
    /// The service's custom checks and SLO burn rates.
    checks: super::checks::CheckWatch,
    /// The prompts this watch posted or took over, so one asked before a
    /// restart or failover is taken over once and never asked again.
    prompts_seen: Vec<String>,
}

/// A before/after rollout's judge, the service one week earlier at the
/// next tick (for the weekly correction) and when the watch ends.
struct BeforeAfter {
    judge: Box<BeforeAfterJudge>,
    week_ago: Option<TrackSample>,
    completion: super::before_after::Completion,
}

/// "12m40s" since the rollout started.
fn elapsed(t: f64) -> String {
    let s = t.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// "Failing" for a headline.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn controller() -> Actor {
    Actor::system("controller")
}

impl RolloutWatch {
    pub fn new(svc: &ServiceConfig, from: &str, to: &str) -> RolloutWatch {
        RolloutWatch {
            id: format!("{}-{to}-{}", svc.name(), &new_id()[..6]),
            service: svc.name().to_string(),
            from: from.into(),
            to: to.into(),
            judge: SequentialJudge::new(svc.judge.clone()),
            before_after: None,
            state: WatchState::Watching,
            last: None,
            summary: Vec::new(),
            borderline_approved: false,
            step_started: 0.0,
            incident: None,
            rollbacks_seen: None,
            cooldown_noted: false,
            automation_noted: false,
            capability_noted: false,
            paged: false,
            chart: Default::default(),
            charted: None,
            start: None,
            onset: Default::default(),
            checks: super::checks::CheckWatch::new(svc),
            prompts_seen: Vec::new(),
        }
    }

    /// The custom checks' and SLO's data for the next tick.
    pub(crate) fn feed_checks(&mut self, inputs: super::checks::CheckInputs) {
        self.checks.feed(inputs);
    }

    /// Judges this rollout after vs before with `judge`: ticks then carry
    /// the whole service as their canary and no baseline.
    pub fn judged_before_after(mut self, judge: BeforeAfterJudge) -> Self {
        self.before_after = Some(BeforeAfter {
            judge: Box::new(judge),
            week_ago: None,
            completion: Default::default(),
        });
        self
    }

    /// Whether this rollout is judged after vs before.
    pub fn before_after(&self) -> bool {
        self.before_after.is_some()
    }

    /// The after-vs-before judge, when this rollout has one.
    pub fn before_after_judge(&mut self) -> Option<&mut BeforeAfterJudge> {
        self.before_after.as_mut().map(|ba| ba.judge.as_mut())
    }

    /// Forgets what the ticks judged so far drew (the chart, the checks'
    /// history): a before/after rollout whose reference arrived late is
    /// judged again from its start.
    pub fn restart_judging(&mut self, svc: &ServiceConfig) {
        self.checks = super::checks::CheckWatch::new(svc);
        self.chart = Default::default();
        self.charted = None;
        self.onset = Default::default();
    }

    /// The service one week before the next tick (weekly correction).
    pub fn set_week_ago(&mut self, sample: Option<TrackSample>) {
        if let Some(ba) = &mut self.before_after {
            ba.week_ago = sample;
        }
    }

    /// Dates ticks from the rollout's start (`t` seconds after it).
    pub fn with_start(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }

    /// The instant a tick's window ends.
    fn instant(&self, engine: &Engine, tick: &Tick) -> DateTime<Utc> {
        match self.start {
            Some(s) => s + chrono::Duration::milliseconds((tick.t * 1000.0) as i64),
            None => engine.clock.now(),
        }
    }

    /// Resumes a rollout whose incident was stored in Monitoring (see
    /// `monitoring.rs`): `what` is what rolled it back.
    pub(super) fn resumed(mut self, incident: super::incident::Incident, what: String) -> Self {
        self.incident = Some(incident);
        self.state = WatchState::Monitoring(what);
        self
    }

    /// Keeps a rollout's stored id.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// False once the rollout was rolled back or fully promoted.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, WatchState::Done(_))
    }

    pub fn state_text(&self) -> String {
        match &self.state {
            WatchState::Watching => "watching".into(),
            WatchState::Asking { .. } => "paused, waiting for an answer".into(),
            WatchState::Monitoring(what) => format!("{what}, monitoring recovery"),
            WatchState::Done(what) | WatchState::RollbackFailed(what) => what.clone(),
        }
    }

    /// Judges one tick and acts on it. Returns the evaluation.
    pub async fn tick(&mut self, engine: &Engine, tick: &Tick) -> Option<Evaluation> {
        if matches!(self.state, WatchState::Done(_)) {
            return None;
        }
        let svc = engine.config.service(&self.service)?;
        if let WatchState::Monitoring(what) = &self.state {
            // After a rollback the judge has nothing to compare; the incident
            // checks that the service recovers.
            let what = what.clone();
            let at = self.instant(engine, tick);
            if let Some(incident) = &mut self.incident {
                if incident.observe(engine, tick, at).await {
                    self.state = WatchState::Done(format!("{what}; resolved"));
                }
            }
            return None;
        }
        if let WatchState::RollbackFailed(_) = &self.state {
            // The judge has said its word; only a rollback by hand moves
            // the incident on.
            self.rolled_back_by_hand(engine, svc).await;
            return None;
        }
        if self.rolled_back_by_hand(engine, svc).await {
            if let Some(last) = self.last.clone() {
                self.publish(engine, svc, &last).await;
            }
            return None;
        }
        if self.check_prompt(engine).await {
            // A person's answer rolled the canary back: show it once.
            if let Some(last) = self.last.clone() {
                self.publish(engine, svc, &last).await;
            }
            return None;
        }
        let (eval, seen) = match &mut self.before_after {
            None => (self.judge.observe(tick), tick.clone()),
            Some(ba) => {
                let eval = ba.judge.observe_after(
                    tick.t,
                    tick.canary.as_ref(),
                    ba.week_ago.take().as_ref(),
                );
                // The chart and the onset show the service against the
                // reference it was compared with.
                let seen = Tick {
                    baseline: ba.judge.last_reference().cloned(),
                    ..tick.clone()
                };
                (eval, seen)
            }
        };
        self.chart.push(super::chart::ChartPoint::from_tick(&seen));
        self.onset.push(&seen);
        let mut eval = eval;
        let checks_changed = self.checks.apply(&mut eval, svc);
        let changed =
            checks_changed || self.last.as_ref().is_none_or(|l| l.verdict != eval.verdict);
        self.last = Some(eval.clone());
        let automation_off = engine.automation_off(&self.service).await.is_some();
        match (eval.verdict, eval.recommendation) {
            (Verdict::Failing, _) | (_, Recommendation::Rollback) => {
                self.on_failing(engine, svc, &eval).await
            }
            (Verdict::Borderline, _)
                if self.state == WatchState::Watching && !self.borderline_approved =>
            {
                self.on_borderline(engine, svc, &eval).await
            }
            (Verdict::Healthy, Recommendation::Promote)
                if svc.auto_promote && self.state == WatchState::Watching && automation_off =>
            {
                self.note_no_auto_promote(engine, svc).await
            }
            (Verdict::Healthy, Recommendation::Promote)
                if svc.auto_promote
                    && self.state == WatchState::Watching
                    && eval.t - self.step_started >= svc.step_interval.0.as_secs_f64() =>
            {
                self.on_promote(engine, &eval).await
            }
            _ => {}
        }
        if self.state == WatchState::Watching {
            if let Some(ba) = &mut self.before_after {
                let verdict = eval.verdict.to_string();
                if let Some(end) = ba.completion.follow(engine, svc, eval.t, &verdict).await {
                    self.state = WatchState::Done(end);
                }
            }
        }
        if changed || matches!(self.state, WatchState::Done(_) | WatchState::Monitoring(_)) {
            self.publish(engine, svc, &eval).await;
        }
        Some(eval)
    }

    async fn publish(&mut self, engine: &Engine, svc: &ServiceConfig, eval: &Evaluation) {
        let msg = self.with_legend(self.titled(crate::controller::summary_message_of(
            &self.service,
            (&self.from, &self.to),
            &self.id,
            eval,
            &self.state_text(),
            &self.sides(),
        )));
        if self.summary.is_empty() {
            if let Some(ch) = &svc.deploy_channel {
                self.summary = engine.notifier.post(ch.as_ref(), &msg).await;
            }
        } else {
            engine.notifier.update(&self.summary, &msg).await;
        }
        self.attach_chart(engine, eval.verdict).await;
    }

    /// Attaches the chart to the summary once per verdict (and again after
    /// a re-post), not on every update.
    async fn attach_chart(&mut self, engine: &Engine, verdict: Verdict) {
        if self.summary.is_empty() || self.charted == Some(verdict) {
            return;
        }
        let points = self.chart.points();
        let Some(file) = super::chart::attachment(&self.id, &points) else {
            return;
        };
        engine.notifier.upload(&self.summary, &file).await;
        self.charted = Some(verdict);
    }

    /// What this rollout's evidence compares, for the words of its messages.
    fn sides(&self) -> super::Sides {
        match &self.before_after {
            None => super::Sides::Canary,
            Some(ba) => super::Sides::BeforeAfter {
                reference: super::Sides::reference(
                    ba.judge.policy().reference.secs(),
                    ba.judge.corrected(),
                ),
                confidence: ba.judge.confidence().map(str::to_string),
            },
        }
    }

    /// The short reason of `eval` in this rollout's words.
    fn short_reason(&self, eval: &Evaluation) -> String {
        super::short_reason_of(eval, &self.sides())
    }

    /// A before/after rollout has no canary: its summary says what it
    /// compares.
    fn titled(&self, mut msg: crate::chat::Message) -> crate::chat::Message {
        if self.before_after.is_some() {
            if let Some(rest) = msg.title.strip_prefix("Canary ") {
                msg.title = format!("After vs before: {rest}");
            }
        }
        msg
    }

    /// The chart's legend and scales also go in the summary as text.
    fn with_legend(&self, msg: crate::chat::Message) -> crate::chat::Message {
        let msg = self.checks.summary_field(msg);
        if self.chart.is_empty() {
            return msg;
        }
        msg.context(super::chart::legend(&self.chart.points()))
    }

    /// The summary's messages, where replies about this rollout go.
    pub fn summary_thread(&self) -> &[MessageRef] {
        &self.summary
    }

    /// The points the summary's chart is drawn from.
    pub fn chart_points(&self) -> Vec<super::chart::ChartPoint> {
        self.chart.points()
    }

    /// Posts the current summary again as a new message (the scheduled
    /// re-post for long rollouts); later updates go to the new message.
    pub async fn repost_summary(&mut self, engine: &Engine, svc: &ServiceConfig) {
        let (Some(eval), Some(ch)) = (self.last.clone(), svc.deploy_channel.as_ref()) else {
            return;
        };
        if !self.is_active() {
            return;
        }
        let msg = self.with_legend(self.titled(crate::controller::summary_message_of(
            &self.service,
            (&self.from, &self.to),
            &self.id,
            &eval,
            &self.state_text(),
            &self.sides(),
        )));
        let posted = engine.notifier.post(ch.as_ref(), &msg).await;
        if !posted.is_empty() {
            self.summary = posted;
            self.charted = None;
            self.attach_chart(engine, eval.verdict).await;
        }
    }

    /// Notices a rollback of this service made outside the watch (a
    /// `/rollback` from chat or the API) and follows it into an incident.
    async fn rolled_back_by_hand(&mut self, engine: &Engine, svc: &ServiceConfig) -> bool {
        let latest = engine.recent_rollback(&self.service).await;
        let at = latest.as_ref().map(|r| r.at);
        let Some(seen) = self.rollbacks_seen else {
            self.rollbacks_seen = Some(at);
            return false;
        };
        if at <= seen {
            return false;
        }
        self.rollbacks_seen = Some(at);
        let Some(rb) = latest else { return false };
        if matches!(self.state, WatchState::Asking { .. }) {
            // An answered prompt of ours explains it; check_prompt handles that.
            if let WatchState::Asking { prompt } = &self.state {
                if let Ok(Some(p)) = engine.prompts.get(prompt).await {
                    if p.state != PromptState::Open {
                        return false;
                    }
                }
            }
        }
        self.state = WatchState::Monitoring(format!("rolled back by {}", rb.by));
        let eval = self.last.clone().unwrap_or_else(|| {
            Evaluation::simple(
                0.0,
                Verdict::NoData,
                f64::NAN,
                Recommendation::None,
                String::new(),
            )
        });
        let line = format!(
            "Identified: {} rolled canary {} of {} back by hand ({})",
            rb.by,
            self.to,
            self.service,
            if rb.reason.is_empty() {
                "no reason given"
            } else {
                &rb.reason
            }
        );
        self.follow_into_incident(engine, svc, &eval, line, (&rb.by, rb.at))
            .await;
        true
    }

    /// Opens the incident for a rollback someone made (by hand, or through
    /// our prompt): Identified with `line`, then Monitoring from `at`.
    async fn follow_into_incident(
        &mut self,
        engine: &Engine,
        svc: &ServiceConfig,
        eval: &Evaluation,
        line: String,
        (by, at): (&str, DateTime<Utc>),
    ) {
        // The incident of a failed automatic rollback is still open: the
        // rollback by hand continues it.
        let mut incident = match self.incident.take() {
            Some(open) => open,
            None => {
                super::incident::Incident::open(
                    engine,
                    svc,
                    &self.id,
                    &self.from,
                    &self.to,
                    eval,
                    Some(line),
                )
                .await
            }
        };
        incident.rolled_back(engine, by, at).await;
        self.incident = Some(incident);
    }

    /// Picks up a person's answer to our prompt; true when it rolled back.
    async fn check_prompt(&mut self, engine: &Engine) -> bool {
        let WatchState::Asking { prompt } = &self.state else {
            return false;
        };
        let Ok(Some(p)) = engine.prompts.get(prompt).await else {
            return false;
        };
        let PromptState::Answered { choice, by, at } = &p.state else {
            return false;
        };
        // What the chosen button did decides what comes next: a rollback
        // (whichever side of the prompt offered it) opens the incident.
        let chosen = if *choice == p.approve.label {
            &p.approve
        } else {
            &p.reject
        };
        if !matches!(chosen.action, Some(Action::Rollback { .. })) {
            // Approving a borderline canary means "do not ask again unless it fails";
            // "Continue" on a failing one means look again.
            self.borderline_approved |= *choice == p.approve.label
                && (p.approve.action == Some(Action::Resume)
                    || (p.approve.action.is_none() && p.approve.label == "Approve"));
            self.state = WatchState::Watching;
            return false;
        }
        let who = by.display_name.clone();
        self.state = WatchState::Monitoring(format!("rolled back ({who} chose {choice})"));
        if let (Some(svc), Some(eval)) = (engine.config.service(&self.service), self.last.clone()) {
            let line = format!(
                "Identified: {who} chose {choice} for canary {} of {}, which the judge found {} — {}",
                self.to,
                self.service,
                eval.verdict,
                self.short_reason(&eval)
            );
            self.follow_into_incident(engine, svc, &eval, line, (&who, *at))
                .await;
        }
        true
    }

    fn request(&self, action: Action, reason: String, step: &str) -> Request {
        Request::new(controller(), action)
            .service(self.service.clone())
            .reason(reason)
            .idempotency_key(format!("controller:{}:{step}", self.id))
    }

    /// Keeps the judge's full evidence in the audit log before acting on it.
    async fn record_verdict(&self, engine: &Engine, eval: &Evaluation) {
        self.record_verdict_as(engine, eval, new_id(), Default::default())
            .await
    }

    /// A verdict entry under `correlation` (the action it leads to) with
    /// extra `parameters`.
    async fn record_verdict_as(
        &self,
        engine: &Engine,
        eval: &Evaluation,
        correlation: String,
        mut parameters: std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        parameters.insert("rollout".to_string(), serde_json::json!(self.id));
        self.checks.audit(&mut parameters);
        parameters.insert("revision".to_string(), serde_json::json!(self.to));
        parameters.insert(
            "evaluation".to_string(),
            serde_json::to_value(eval).unwrap_or_default(),
        );
        let record = crate::audit::Record {
            time: engine.clock.now(),
            actor: controller(),
            action: "verdict".into(),
            service: Some(self.service.clone()),
            parameters,
            outcome: crate::audit::Outcome::Noted,
            reason: format!("{} after {}", eval.verdict, elapsed(eval.t)),
            detail: eval.reasons.join("\n"),
            correlation_id: correlation,
            idempotency_key: None,
        };
        if let Err(e) = engine.append(record).await {
            tracing::error!(service = %self.service, error = %e, "could not record a verdict");
        }
    }

    /// The estimated onset of the fault (`onset`, an instant) and the
    /// time from it to this decision (`time_to_detect_secs`); the decision
    /// itself when no signal dates it.
    fn detection(
        &self,
        engine: &Engine,
        eval: &Evaluation,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let onset_t = self.onset.estimate().unwrap_or(eval.t).min(eval.t);
        let decided = match self.start {
            Some(s) => s + chrono::Duration::milliseconds((eval.t * 1000.0) as i64),
            None => engine.clock.now(),
        };
        let detect = eval.t - onset_t;
        let onset = decided - chrono::Duration::milliseconds((detect * 1000.0) as i64);
        let mut p = std::collections::BTreeMap::new();
        p.insert("onset".into(), serde_json::json!(onset));
        p.insert("decided".into(), serde_json::json!(decided));
        p.insert("time_to_detect_secs".into(), serde_json::json!(detect));
        p
    }

    async fn on_failing(&mut self, engine: &Engine, svc: &ServiceConfig, eval: &Evaluation) {
        let reason = format!("{} — {}", eval.verdict, self.short_reason(eval));
        // With automation off, a failing canary is asked about, never rolled back.
        let off = engine.automation_off(&self.service).await;
        let policy = match off {
            Some(_) => OnFailing::PageAndSuggest,
            // A before/after verdict the judge does not call overwhelming
            // is asked about: an outside fault would look the same.
            None if self.before_after.is_some()
                && eval.recommendation != Recommendation::Rollback =>
            {
                self.checks.policy(OnFailing::PageAndSuggest)
            }
            None => self.checks.policy(svc.on_failing),
        };
        match policy {
            OnFailing::AutoRollback => {
                // The verdict shares the rollback's correlation id and
                // dates the fault, so the time to detect can be read back.
                let corr = new_id();
                let detection = self.detection(engine, eval);
                self.record_verdict_as(engine, eval, corr.clone(), detection)
                    .await;
                // An open prompt is settled by the rollback.
                if let WatchState::Asking { prompt } = &self.state {
                    if let Ok(Some(crate::engine::prompt::Answer::Accepted(p))) = engine
                        .prompts
                        .answer(
                            prompt,
                            &controller(),
                            crate::engine::Pick::Reject,
                            engine.clock.now(),
                        )
                        .await
                    {
                        engine.notifier.update(&p.messages, &p.message()).await;
                    }
                }
                let mut incident = super::incident::Incident::open(
                    engine, svc, &self.id, &self.from, &self.to, eval, None,
                )
                .await;
                let o = engine
                    .execute(
                        self.request(
                            Action::Rollback {
                                to: None,
                                force: false,
                            },
                            format!("automatic after {}: {reason}", elapsed(eval.t)),
                            "rollback",
                        )
                        .correlation_id(corr),
                    )
                    .await;
                if o.status == Status::Succeeded {
                    incident
                        .rolled_back(engine, "rollbot controller", engine.clock.now())
                        .await;
                    self.incident = Some(incident);
                    self.state = WatchState::Monitoring("rolled back automatically".into());
                } else {
                    // The engine paged the on-call; the incident waits for
                    // a rollback by hand.
                    self.incident = Some(incident);
                    self.state = WatchState::RollbackFailed(format!(
                        "automatic rollback did not complete: {}",
                        o.message.title
                    ));
                }
            }
            OnFailing::PageAndSuggest => {
                if self.state == WatchState::Watching || self.borderline_approved {
                    self.borderline_approved = false;
                    self.record_verdict(engine, eval).await;
                    self.ask(
                        engine,
                        svc,
                        eval,
                        &self
                            .checks
                            .headline(self.headline(&eval.verdict.to_string())),
                        Choice {
                            label: "Roll back".into(),
                            action: Some(Action::Rollback {
                                to: None,
                                force: false,
                            }),
                            style: ButtonStyle::Danger,
                        },
                        Choice {
                            label: "Continue".into(),
                            action: None,
                            style: ButtonStyle::Default,
                        },
                    )
                    .await;
                }
                // Nobody will roll it back by itself: page once, whether or
                // not a prompt (borderline, earlier) is already open.
                if off.is_some() && !self.paged {
                    self.paged = true;
                    self.page(engine, svc, &reason);
                }
            }
        }
    }

    /// Pages the on-call: the canary is failing and nobody acts by itself.
    fn page(&self, engine: &Engine, svc: &ServiceConfig, reason: &str) {
        use crate::incident_comms::{IncidentEvent, IncidentRef, Thread};
        engine.tell_comms(IncidentEvent::Page {
            incident: IncidentRef {
                rollout: self.id.clone(),
                service: self.service.clone(),
                thread: Thread {
                    channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
                    root: self.summary.clone(),
                },
            },
            summary: format!(
                "Canary {} of {} is {reason}; automation is off, so nothing is rolled back until someone answers the prompt",
                self.to, self.service
            ),
        });
    }

    /// A healthy canary that `auto_promote` would move on, while automation
    /// is off: said once, nothing done.
    async fn note_no_auto_promote(&mut self, engine: &Engine, svc: &ServiceConfig) {
        if self.automation_noted {
            return;
        }
        let Some(off) = engine.automation_off(&self.service).await else {
            return;
        };
        self.automation_noted = true;
        let m = crate::chat::Message::new(
            crate::chat::Severity::Info,
            format!("{} is healthy; not promoted automatically", self.service),
        )
        .text(format!(
            "Automation is off for {} {}, so rollbot does not promote it by itself. Promote by hand with `/promote {}`, or switch automation back on with `/auto {} on`.",
            self.service,
            off.describe(),
            self.service,
            self.service
        ))
        .context(format!("rollout {}", self.id));
        if let Some(ch) = &svc.deploy_channel {
            engine
                .notifier
                .reply_or_post(&self.summary, ch.as_ref(), &m)
                .await;
        }
    }

    /// Said once per rollout: a rollback target is missing, so automatic
    /// promotion waits for someone to acknowledge it.
    async fn note_capability_hold(&mut self, engine: &Engine, why: &str) {
        if self.capability_noted {
            return;
        }
        self.capability_noted = true;
        let m = crate::chat::Message::new(
            crate::chat::Severity::Warning,
            format!("Automatic promotion of {} is held", self.service),
        )
        .text(format!(
            "{why}. rollbot does not promote {} by itself until someone acknowledges that (the Acknowledge button above). Promote by hand with `/promote {}` if you accept the risk.",
            self.service, self.service
        ))
        .context(format!("rollout {}", self.id));
        if let Some(ch) = engine
            .config
            .service(&self.service)
            .and_then(|s| s.deploy_channel.as_ref())
        {
            engine
                .notifier
                .reply_or_post(&self.summary, ch.as_ref(), &m)
                .await;
        }
    }

    async fn on_promote(&mut self, engine: &Engine, eval: &Evaluation) {
        if let Some(why) = super::capability::promotion_hold(engine, &self.service, &self.id).await
        {
            self.note_capability_hold(engine, &why).await;
            return;
        }
        if let Some(until) = engine.cooldown_until(&self.service).await {
            if !self.cooldown_noted {
                self.cooldown_noted = true;
                let m = crate::chat::Message::new(crate::chat::Severity::Info, format!("Automatic promotion of {} is held", self.service))
                    .text(format!(
                        "{} was rolled back recently, so rollbot will not promote it by itself until {} (cooldown). Promote by hand with `/promote {}` if you are sure.",
                        self.service,
                        until.format("%H:%M UTC"),
                        self.service
                    ))
                    .context(format!("rollout {}", self.id));
                if let Some(ch) = engine
                    .config
                    .service(&self.service)
                    .and_then(|s| s.deploy_channel.as_ref())
                {
                    engine
                        .notifier
                        .reply_or_post(&self.summary, ch.as_ref(), &m)
                        .await;
                }
            }
            return;
        }
        let step = format!("promote@{}", eval.t as u64);
        let o = engine
            .execute(self.request(
                Action::Promote {
                    full: false,
                    force: false,
                },
                "automatic: the canary is healthy".into(),
                &step,
            ))
            .await;
        self.step_started = eval.t;
        if o.status == Status::Pending {
            // A critical service: the promotion waits for a second person.
            if let Some(p) = o.prompt {
                self.state = WatchState::Asking { prompt: p };
            }
            return;
        }
        if o.status != Status::Succeeded {
            self.state =
                WatchState::Done(format!("automatic promotion stopped: {}", o.message.title));
            return;
        }
        if let Ok(s) = engine.backend_status(&self.service).await {
            if s.canary_revision.is_none() {
                self.state = WatchState::Done("fully promoted".into());
            }
        }
    }
}
