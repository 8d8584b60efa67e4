//! Custom checks (`[[services.checks]]`) and SLO burn rates (`slo`) of the
//! rollouts under watch: the queries of one tick for every due rollout
//! (each distinct query text once, grouped by service and track), what
//! each rollout's checks make of them, and how that reaches the verdict,
//! the summary and the audit log.
//!
//! Tiers: a firing `auto_rollback` check rolls back, `page_and_suggest`
//! posts the Roll back / Continue prompt, `log_only` is a line in the
//! summary. A check without data is `no_data` and never acts.

use crate::breaker::Breaker;
use crate::config_file::{CheckSeverity, Config, OnFailing, ServiceConfig};
use crate::judge::checks::{CheckInput, CheckJudge, CheckOutcome, CheckState};
use crate::judge::slo::{self, SloInput};
use crate::judge::{Evaluation, MetricClass, MetricEvidence, Recommendation, Verdict};
use crate::metrics::{render, Answers, Defaults, MetricError, MetricSource, Series, Watched};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What one tick's queries gave one service.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckInputs {
    /// One per `[[services.checks]]`, in order.
    pub checks: Vec<CheckInput>,
    pub slo: Option<SloInput>,
}

/// What a query is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Check(usize),
    SloRequests(u64),
    SloErrors(u64),
}

/// One query of a service at one tick, and which track its answer is
/// when the query names it (`$track`) rather than returning the label.
struct Planned {
    purpose: Purpose,
    promql: String,
    track: Option<&'static str>,
}

/// The queries of a service's checks and SLO at one tick.
fn plan(config: &Config, svc: &ServiceConfig, w: &Watched, interval: Duration) -> Vec<Planned> {
    let mut out = Vec::new();
    for (i, c) in svc.checks.iter().enumerate() {
        // A threshold check judges the canary: `$track` is the canary.
        let track = c.query.as_ref().contains("$track").then_some("canary");
        out.push(Planned {
            purpose: Purpose::Check(i),
            promql: render(
                c.query.as_ref(),
                &w.service,
                &w.namespace,
                "canary",
                interval,
            ),
            track,
        });
    }
    if svc.slo.is_some() {
        // The SLI is the error-rate signal's own pair of queries.
        let requests = svc
            .metrics
            .requests
            .as_deref()
            .or(config.metrics.queries.requests.as_deref())
            .unwrap_or(Defaults::REQUESTS);
        let errors = svc
            .metrics
            .errors
            .as_deref()
            .or(config.metrics.queries.errors.as_deref())
            .unwrap_or(Defaults::ERRORS);
        for window in slo::windows() {
            let length = Duration::from_secs(window);
            for (template, purpose) in [
                (requests, Purpose::SloRequests(window)),
                (errors, Purpose::SloErrors(window)),
            ] {
                let tracks: Vec<Option<&'static str>> = if template.contains("$track") {
                    vec![Some("baseline"), Some("canary")]
                } else {
                    vec![None]
                };
                for track in tracks {
                    out.push(Planned {
                        purpose,
                        promql: render(
                            template,
                            &w.service,
                            &w.namespace,
                            track.unwrap_or(""),
                            length,
                        ),
                        track,
                    });
                }
            }
        }
    }
    out
}

/// The series of an answer that belong to `service`, with their track.
fn series_of<'a>(
    answer: &'a [Series],
    service: &'a str,
    track: Option<&'static str>,
) -> impl Iterator<Item = (Option<&'a str>, f64)> + 'a {
    answer
        .iter()
        .filter(move |s| s.service.as_deref().is_none_or(|x| x == service))
        .map(move |s| (track.or(s.track.as_deref()), s.value))
}

/// A check's input from its answer.
fn check_input(
    svc: &ServiceConfig,
    i: usize,
    answer: &Result<Vec<Series>, String>,
    service: &str,
    track: Option<&'static str>,
) -> CheckInput {
    let series: Vec<(Option<&str>, f64)> = match answer {
        Ok(a) => series_of(a, service, track).collect(),
        Err(e) => return CheckInput::NoData(e.clone()),
    };
    if series.is_empty() {
        return CheckInput::NoData("no series".into());
    }
    let of = |t: &str| -> Vec<f64> {
        series
            .iter()
            .filter(|(x, _)| *x == Some(t))
            .map(|(_, v)| *v)
            .collect()
    };
    let (canary, baseline) = (of("canary"), of("baseline"));
    match svc.checks[i].condition() {
        crate::config_file::Condition::Baseline { .. } => match (&canary[..], &baseline[..]) {
            ([c], [b]) => CheckInput::Pair {
                canary: *c,
                baseline: *b,
            },
            ([], _) | (_, []) => CheckInput::NoData(format!(
                "no series with track=\"{}\"",
                if canary.is_empty() { "canary" } else { "baseline" }
            )),
            _ => CheckInput::NoData(format!(
                "{} canary and {} baseline series; aggregate them to one per track, such as `sum by (track) (…)`",
                canary.len(),
                baseline.len()
            )),
        },
        condition => {
            // The canary's own series when there are any, else every
            // series (the whole service); the worst one decides, as an
            // alerting rule fires for any of its series.
            let values: Vec<f64> = if canary.is_empty() {
                series.iter().map(|(_, v)| *v).collect()
            } else {
                canary.clone()
            };
            let worst = match condition {
                crate::config_file::Condition::Below(_) => values.iter().copied().fold(f64::INFINITY, f64::min),
                _ => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            CheckInput::Value {
                value: worst,
                canary: !canary.is_empty(),
            }
        }
    }
}

/// One tick's checks and SLO queries for every due rollout: one query per
/// distinct text, through the metric source's breaker.
pub(crate) async fn fetch(
    config: &Config,
    source: &dyn MetricSource,
    breaker: &Breaker,
    watched: &[Watched],
    at: DateTime<Utc>,
    interval: Duration,
) -> (HashMap<String, CheckInputs>, usize) {
    let plans: Vec<(&Watched, &ServiceConfig, Vec<Planned>)> = watched
        .iter()
        .filter_map(|w| {
            let svc = config.service(&w.service)?;
            let p = plan(config, svc, w, interval);
            (!p.is_empty()).then_some((w, svc, p))
        })
        .collect();
    if plans.is_empty() {
        return (HashMap::new(), 0);
    }
    let queries: Vec<String> = plans
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|q| q.promql.clone()))
        .collect();
    // Each distinct text is sent once, by sources that run queries.
    let sent = if source.runs_queries() {
        queries
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    } else {
        0
    };
    let limit = config.metrics.timeout.0 * 8;
    let answers: Result<Answers, String> = breaker
        .call(limit, source.instant(&queries, at), |_: &MetricError| true)
        .await
        .map_err(super::run::unanswered);
    let inputs = plans
        .into_iter()
        .map(|(w, svc, planned)| {
            (
                w.service.clone(),
                inputs(svc, &w.service, &planned, &answers),
            )
        })
        .collect();
    (inputs, sent)
}

/// A service's inputs from the tick's answers.
fn inputs(
    svc: &ServiceConfig,
    service: &str,
    planned: &[Planned],
    answers: &Result<Answers, String>,
) -> CheckInputs {
    let answer = |q: &Planned| -> Result<Vec<Series>, String> {
        match answers {
            Ok(a) => a
                .get(&q.promql)
                .cloned()
                .unwrap_or_else(|| Err("not answered".into())),
            Err(e) => Err(e.clone()),
        }
    };
    let mut out = CheckInputs {
        checks: vec![CheckInput::NoData("not queried".into()); svc.checks.len()],
        slo: None,
    };
    // Window → track → (errors, requests).
    let mut slo_counts: BTreeMap<u64, HashMap<String, (f64, f64)>> = BTreeMap::new();
    let mut slo_missing = None;
    for q in planned {
        let a = answer(q);
        match q.purpose {
            Purpose::Check(i) => out.checks[i] = check_input(svc, i, &a, service, q.track),
            Purpose::SloRequests(w) | Purpose::SloErrors(w) => {
                let a = match a {
                    Ok(a) => a,
                    Err(e) => {
                        slo_missing.get_or_insert(e);
                        continue;
                    }
                };
                let by_track = slo_counts.entry(w).or_default();
                for (track, v) in series_of(&a, service, q.track) {
                    let e = by_track.entry(track.unwrap_or("").to_string()).or_default();
                    match q.purpose {
                        Purpose::SloErrors(_) => e.0 += v,
                        _ => e.1 += v,
                    }
                }
            }
        }
    }
    if svc.slo.is_some() {
        out.slo = Some(slo_input(slo_counts, slo_missing));
    }
    out
}

/// The canary's own traffic when the canary served requests in the
/// shortest window, else the whole service's.
fn slo_input(
    counts: BTreeMap<u64, HashMap<String, (f64, f64)>>,
    missing: Option<String>,
) -> SloInput {
    let shortest = slo::windows()[0];
    let canary = counts
        .get(&shortest)
        .and_then(|t| t.get("canary"))
        .is_some_and(|(_, n)| *n > 0.0);
    let counts: BTreeMap<u64, (f64, f64)> = counts
        .into_iter()
        .filter_map(|(w, tracks)| {
            let picked = tracks
                .iter()
                .filter(|(t, _)| !canary || t.as_str() == "canary")
                .fold((0.0, 0.0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1));
            (picked.1 > 0.0).then_some((w, picked))
        })
        .collect();
    let missing = match (&missing, counts.is_empty()) {
        (Some(_), _) => missing,
        (None, true) => Some("no requests in any SLO window".into()),
        (None, false) => None,
    };
    SloInput {
        counts,
        canary,
        missing,
    }
}

/// A check that decides what the controller does.
#[derive(Clone, Debug)]
pub(crate) struct Fired {
    pub name: String,
    pub severity: CheckSeverity,
}

/// The checks of one rollout.
pub(crate) struct CheckWatch {
    judges: Vec<CheckJudge>,
    slo: Option<crate::config_file::SloConfig>,
    /// The inputs of the tick about to be judged.
    pending: Option<CheckInputs>,
    /// Every check at the last tick, for the summary.
    pub last: Vec<CheckOutcome>,
    /// The check behind the current decision, if any.
    pub fired: Option<Fired>,
    /// The judge itself found the canary failing at the last tick.
    judge_failing: bool,
}

impl CheckWatch {
    pub fn new(svc: &ServiceConfig) -> CheckWatch {
        CheckWatch {
            judges: svc.checks.iter().cloned().map(CheckJudge::new).collect(),
            slo: svc.slo.as_ref().map(|s| s.get_ref().clone()),
            pending: None,
            last: Vec::new(),
            fired: None,
            judge_failing: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.judges.is_empty() && self.slo.is_none()
    }

    /// The next tick's inputs.
    pub fn feed(&mut self, inputs: CheckInputs) {
        self.pending = Some(inputs);
    }

    /// Judges the tick's checks and folds them into the judge's
    /// evaluation: each check's evidence, the reasons of those firing or
    /// pending, and, when one fires at a controller tier, a failing
    /// verdict. Returns whether any check's state changed.
    pub fn apply(&mut self, eval: &mut Evaluation, svc: &ServiceConfig) -> bool {
        self.judge_failing =
            eval.verdict == Verdict::Failing || eval.recommendation == Recommendation::Rollback;
        self.fired = None;
        if self.is_empty() {
            return false;
        }
        let inputs = self.pending.take().unwrap_or_default();
        let p = &svc.judge;
        let policy = (p.warm_up.secs(), p.alpha, p.sustained_for.secs());
        let mut outcomes: Vec<CheckOutcome> = self
            .judges
            .iter_mut()
            .enumerate()
            .map(|(i, j)| {
                let input = inputs
                    .checks
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| CheckInput::NoData("not queried".into()));
                j.observe(eval.t, &input, policy)
            })
            .collect();
        if let Some(s) = &self.slo {
            let input = inputs.slo.clone().unwrap_or_else(|| SloInput {
                missing: Some("not queried".into()),
                ..Default::default()
            });
            outcomes.extend(slo::assess(
                s.objective,
                s.window.0.as_secs_f64(),
                s.page,
                &input,
            ));
        }
        let changed = self.last.len() != outcomes.len()
            || self
                .last
                .iter()
                .zip(&outcomes)
                .any(|(a, b)| a.state != b.state);
        // The most severe firing check decides; the judge's own failing
        // verdict keeps its tier.
        let tiered = outcomes
            .iter()
            .filter(|o| o.state == CheckState::Firing && o.severity != CheckSeverity::LogOnly)
            .max_by_key(|o| o.severity);
        if let Some(o) = tiered {
            self.fired = Some(Fired {
                name: o.name.clone(),
                severity: o.severity,
            });
            if !self.judge_failing {
                eval.verdict = Verdict::Failing;
                eval.recommendation = Recommendation::Rollback;
                eval.score = 0.0;
            }
        }
        // A check on its way to firing holds an automatic promotion.
        let pending = outcomes
            .iter()
            .find(|o| o.state == CheckState::Pending && o.severity != CheckSeverity::LogOnly);
        if let (Some(o), Recommendation::Promote) = (pending, eval.recommendation) {
            eval.recommendation = Recommendation::None;
            eval.reasons
                .push(format!("promotion waits: check `{}` is pending", o.name));
        }
        let mut reasons: Vec<String> = Vec::new();
        for o in &outcomes {
            if let Some(r) = &o.reason {
                let tier = match (o.state, o.severity) {
                    (CheckState::Firing, CheckSeverity::LogOnly) => {
                        " (log only: nothing is done)".to_string()
                    }
                    (CheckState::Firing, s) => format!(" ({s})"),
                    _ => String::new(),
                };
                reasons.push(format!("{r}{tier}"));
            }
            eval.evidence.push(o.evidence.clone());
        }
        // The deciding check's reason reads first.
        if let Some(f) = &self.fired {
            if let Some(i) = reasons.iter().position(|r| r.contains(f.name.as_str())) {
                let first = reasons.remove(i);
                reasons.insert(0, first);
            }
            eval.reasons.splice(0..0, reasons);
        } else {
            eval.reasons.extend(reasons);
        }
        self.last = outcomes;
        changed
    }

    /// What the controller does with a failing verdict: the judge's
    /// `on_failing`, or the firing check's tier (the more drastic of the two
    /// when both fail).
    pub fn policy(&self, on_failing: OnFailing) -> OnFailing {
        let from_check = match self.fired.as_ref().map(|f| f.severity) {
            Some(CheckSeverity::AutoRollback) => Some(OnFailing::AutoRollback),
            Some(CheckSeverity::PageAndSuggest) => Some(OnFailing::PageAndSuggest),
            _ => None,
        };
        match (self.judge_failing, from_check) {
            (true, Some(OnFailing::AutoRollback)) => OnFailing::AutoRollback,
            (true, _) | (false, None) => on_failing,
            (false, Some(tier)) => tier,
        }
    }

    /// The audit entry of a decision names the check behind it.
    pub fn audit(&self, parameters: &mut BTreeMap<String, serde_json::Value>) {
        // Named when the check decided: the judge was not failing, or the
        // check's tier is the more drastic one.
        if let Some(f) = self
            .fired
            .as_ref()
            .filter(|f| !self.judge_failing || f.severity == CheckSeverity::AutoRollback)
        {
            parameters.insert("check".into(), serde_json::json!(f.name));
            parameters.insert(
                "check_severity".into(),
                serde_json::json!(f.severity.as_str()),
            );
        }
        if !self.last.is_empty() {
            let all: Vec<serde_json::Value> = self
                .last
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "name": o.name,
                        "state": o.state.to_string(),
                        "value": o.value,
                        "severity": o.severity.as_str(),
                    })
                })
                .collect();
            parameters.insert("checks".into(), serde_json::Value::Array(all));
        }
    }

    /// "The canary is failing" unless a check decided.
    /// The prompt's headline: the firing check's, or `judged` (what the
    /// judge's verdict reads as for this kind of rollout).
    pub fn headline(&self, judged: String) -> String {
        match &self.fired {
            Some(f) if !self.judge_failing => format!("Check `{}` is firing", f.name),
            _ => judged,
        }
    }

    /// The summary's list of checks: every check with its value and state,
    /// in the text (not a field), so every chat platform and the log show it.
    pub fn summary_field(&self, mut msg: crate::chat::Message) -> crate::chat::Message {
        if self.last.is_empty() {
            return msg;
        }
        let lines: Vec<String> = self
            .last
            .iter()
            .map(|o| format!("• {}", o.line()))
            .collect();
        let list = format!("Checks:\n{}", lines.join("\n"));
        msg.text = if msg.text.is_empty() {
            list
        } else {
            format!("{}\n{list}", msg.text)
        };
        msg
    }
}

/// A check's evidence in one short line ("check `crash loops` at 5, limit
/// 3"), for `short_reason`; None for the judge's own signals.
pub fn short(ev: &MetricEvidence) -> Option<String> {
    use crate::judge::checks::fmt_value;
    let name = ev.metric.strip_prefix("check:")?;
    Some(if ev.class == MetricClass::NoData {
        format!("check `{name}` has no data")
    } else if ev.baseline.is_finite() {
        format!(
            "check `{name}` canary {} vs baseline {}",
            fmt_value(ev.canary),
            fmt_value(ev.baseline)
        )
    } else {
        format!(
            "check `{name}` at {}, limit {}",
            fmt_value(ev.canary),
            fmt_value(ev.tolerance)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(service: Option<&str>, track: Option<&str>, value: f64) -> Series {
        Series {
            service: service.map(Into::into),
            track: track.map(Into::into),
            value,
        }
    }

    #[test]
    fn the_slo_is_the_canarys_own_traffic_when_it_has_any_else_the_whole_services() {
        let mut counts = BTreeMap::new();
        for w in slo::windows() {
            let mut t = HashMap::new();
            t.insert("canary".to_string(), (5.0, 100.0));
            t.insert("baseline".to_string(), (1.0, 900.0));
            counts.insert(w, t);
        }
        let own = slo_input(counts.clone(), None);
        assert!(own.canary);
        assert_eq!(own.counts[&300], (5.0, 100.0));
        for t in counts.values_mut() {
            t.insert("canary".to_string(), (0.0, 0.0));
        }
        let whole = slo_input(counts, None);
        assert!(!whole.canary);
        assert_eq!(whole.counts[&300], (1.0, 900.0));
    }

    #[test]
    fn a_shared_query_is_split_by_service_and_track() {
        let answer = vec![
            series(Some("checkout"), Some("canary"), 4.0),
            series(Some("checkout"), Some("baseline"), 1.0),
            series(Some("search"), Some("canary"), 9.0),
        ];
        let mine: Vec<(Option<&str>, f64)> = series_of(&answer, "checkout", None).collect();
        assert_eq!(mine, vec![(Some("canary"), 4.0), (Some("baseline"), 1.0)]);
    }

    fn service(checks: &str) -> Config {
        let text = format!(
            "[backends.sim]\ntype = \"simulated\"\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n{checks}"
        );
        Config::parse(std::path::Path::new("t.toml"), &text).unwrap()
    }

    fn check(name: &str, severity: &str) -> String {
        format!("[[services.checks]]\nname = \"{name}\"\nquery = 'q'\nabove = 3\nfor = \"20s\"\nseverity = \"{severity}\"\n")
    }

    fn healthy(t: f64, rec: Recommendation) -> Evaluation {
        Evaluation::simple(t, Verdict::Healthy, 100.0, rec, "fine".into())
    }

    fn tick(w: &mut CheckWatch, svc: &ServiceConfig, t: f64, values: &[f64]) -> Evaluation {
        w.feed(CheckInputs {
            checks: values
                .iter()
                .map(|v| CheckInput::Value {
                    value: *v,
                    canary: true,
                })
                .collect(),
            slo: None,
        });
        let mut eval = healthy(t, Recommendation::Promote);
        w.apply(&mut eval, svc);
        eval
    }

    #[test]
    fn a_firing_check_picks_the_tier_and_a_pending_one_holds_promotion() {
        let config = service(&format!(
            "{}{}",
            check("crash loops", "page_and_suggest"),
            check("gc pauses", "log_only")
        ));
        let svc = config.service("checkout").unwrap();
        let mut w = CheckWatch::new(svc);
        let first = tick(&mut w, svc, 0.0, &[5.0, 9.0]);
        assert_eq!(first.verdict, Verdict::Healthy, "pending: {first:?}");
        assert_eq!(first.recommendation, Recommendation::None);
        assert!(first
            .reasons
            .contains(&"promotion waits: check `crash loops` is pending".to_string()));
        tick(&mut w, svc, 10.0, &[5.0, 9.0]);
        let fired = tick(&mut w, svc, 20.0, &[5.0, 9.0]);
        assert_eq!(fired.verdict, Verdict::Failing);
        assert!(
            fired.reasons[0].starts_with("check `crash loops`"),
            "{fired:?}"
        );
        // The service's on_failing would roll back: the check asks.
        assert_eq!(w.policy(OnFailing::AutoRollback), OnFailing::PageAndSuggest);
        assert_eq!(
            w.headline(format!("The canary is {}", fired.verdict)),
            "Check `crash loops` is firing"
        );
        let mut audit = BTreeMap::new();
        w.audit(&mut audit);
        assert_eq!(audit["check"], "crash loops");
        assert_eq!(audit["checks"].as_array().unwrap().len(), 2);
        assert!(
            w.last[1].line().ends_with("— firing (log_only)"),
            "{}",
            w.last[1].line()
        );
        // Only the log-only check fires: nothing changes but a line.
        let logged = tick(&mut w, svc, 30.0, &[0.0, 9.0]);
        assert_eq!(logged.verdict, Verdict::Healthy);
        assert_eq!(logged.recommendation, Recommendation::Promote);
        assert_eq!(w.policy(OnFailing::AutoRollback), OnFailing::AutoRollback);
    }

    /// A metric source that answers every fetch and instant query, and
    /// keeps the query texts of each instant it was asked.
    #[derive(Default)]
    struct Counting {
        asked: std::sync::Mutex<Vec<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl MetricSource for Counting {
        fn kind(&self) -> &'static str {
            "counting"
        }

        async fn fetch(
            &self,
            services: &[Watched],
            _at: DateTime<Utc>,
            _window: Duration,
        ) -> Result<crate::metrics::Fetched, MetricError> {
            let sample = crate::judge::TrackSample {
                requests: 1000,
                errors: 1,
                ..Default::default()
            };
            let mut out = crate::metrics::Fetched {
                queries: 3,
                ..Default::default()
            };
            for w in services {
                out.ticks.insert(
                    w.service.clone(),
                    crate::judge::Tick {
                        t: w.t,
                        baseline: Some(sample.clone()),
                        canary: Some(sample.clone()),
                    },
                );
            }
            Ok(out)
        }

        fn runs_queries(&self) -> bool {
            true
        }

        async fn instant(
            &self,
            queries: &[String],
            _at: DateTime<Utc>,
        ) -> Result<Answers, MetricError> {
            self.asked.lock().unwrap().push(queries.to_vec());
            Ok(queries
                .iter()
                .map(|q| (q.clone(), Ok(Vec::new())))
                .collect())
        }
    }

    /// Every rollout's checks and SLO share one query per distinct text
    /// each tick, and the controller's `queries_last_tick` (in /readyz)
    /// counts them with the signals' queries.
    #[tokio::test]
    async fn one_query_per_check_per_tick_for_all_rollouts_and_all_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[store]\npath = \"{}\"\n[metrics]\nsource = \"simulated\"\ninterval = \"10s\"\n[backends.sim]\ntype = \"simulated\"\n",
            dir.path().join("store").display()
        );
        let names = ["checkout", "search", "cart"];
        for name in names {
            text.push_str(&format!(
                "[[services]]\nname = \"{name}\"\nbackend = \"sim\"\nslo = {{ objective = 0.999, window = \"30d\" }}\n[[services.checks]]\nname = \"crash loops\"\nquery = 'sum by (service, track) (increase(restarts_total[$window]))'\nabove = 3\nseverity = \"log_only\"\n"
            ));
        }
        let config = Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        let begin = DateTime::from_timestamp((Utc::now().timestamp() - 3600) / 10 * 10, 0).unwrap();
        let clock = crate::clock::ManualClock::new(begin);
        let rt = crate::runtime::start(
            config,
            &dir.path().join("store"),
            vec![],
            std::sync::Arc::new(clock.clone()),
        )
        .await
        .unwrap();
        let source = std::sync::Arc::new(Counting::default());
        let c = crate::controller::Controller::new(rt.engine.clone(), source.clone());
        let expected = 1 + 2 * slo::windows().len();
        for (n, name) in names.iter().enumerate() {
            // Each rollout starts at this tick's instant, so the tick
            // judges one step (no history to catch up on).
            let at = begin + chrono::Duration::seconds(10 * (n as i64 + 1));
            clock.set(at);
            c.announce(crate::controller::Rollout::watching(
                format!("r{n}"),
                name,
                ("v1".into(), "v2".into()),
                at,
                "test",
            ))
            .await
            .unwrap();
            c.step(at).await;
            let asked = source.asked.lock().unwrap().last().cloned().unwrap();
            let distinct: std::collections::BTreeSet<&String> = asked.iter().collect();
            assert_eq!(
                distinct.len(),
                expected,
                "{} rollouts: one query per check and SLO window: {distinct:?}",
                n + 1
            );
            assert_eq!(
                c.health().queries_last_tick,
                3 + expected,
                "the signals' 3 queries and the checks' and SLO's, with {} rollouts",
                n + 1
            );
        }
    }
}
