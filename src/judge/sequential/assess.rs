//! One evaluation: each signal is assessed in turn (its evidence, its
//! reasons, its class, and whether it stands in the way of a promotion),
//! then the classes make the score and the score the verdict.
//!
//! The order of the signals is the order of the evidence and of the reasons
//! people read: errors, latency, CPU, memory, readiness, circuit breaker.

use super::super::policy::Signal;
use super::super::stats::{histogram_quantile, CountSums, PairSums};
use super::super::{
    fmt_duration, fmt_pct, fmt_ratio, fmt_secs, thousands, EffectKind, Evaluation, MetricClass,
    MetricEvidence, Recommendation, StatisticKind, TrackSample, Verdict,
};
use super::rule::RuleSignal;
use super::signals::{RatioJudgement, RatioSignal, W0};
use super::SequentialJudge;

/// What every signal's assessment shares at one evaluation.
struct Moment {
    t: f64,
    /// How long a failing condition must hold, in seconds.
    sustained: f64,
    /// Whether the canary has served enough requests since warm-up to judge.
    enough: bool,
    /// Canary requests per tick since warm-up (for "how much more data").
    per_tick_canary: f64,
    /// Length of this tick: a rule seen on one tick has lasted that long.
    tick_len: f64,
}

/// What the signals assessed so far have found.
struct Findings {
    evidence: Vec<MetricEvidence>,
    reasons: Vec<String>,
    /// Each signal's class, for the score.
    factors: Vec<(Signal, MetricClass)>,
    /// No signal so far stands in the way of a promotion.
    promote_ok: bool,
}

/// How a saturation or rule signal is named in the evidence and reasons.
struct Named {
    signal: Signal,
    /// The evidence's metric name.
    metric: &'static str,
    /// What the reasons call it.
    label: &'static str,
    critical: bool,
}

impl SequentialJudge {
    /// Judges every signal at `t` (after the tick's data has been added) and
    /// turns their classes into a score, a verdict and a recommendation.
    pub(super) fn assess(&mut self, t: f64, c: &TrackSample) -> Evaluation {
        let now = self.moment(t);
        let mut found = Findings {
            evidence: Vec::new(),
            reasons: Vec::new(),
            factors: Vec::new(),
            promote_ok: true,
        };
        self.assess_errors(&now, &mut found);
        self.assess_latency(&now, &mut found);
        self.assess_cpu(&now, &mut found);
        self.assess_memory(&now, &mut found);
        self.assess_readiness(&now, &mut found);
        self.assess_circuit_breaker(&now, &mut found);
        let score = self.score(&found.factors);
        if !now.enough {
            let why = self.not_enough_data(&now);
            found.reasons.insert(0, why);
        }
        self.baseline_self_check(&mut found);
        let (verdict, recommendation) = self.verdict(&now, score, &mut found);
        if verdict == Verdict::Healthy && now.enough && found.reasons.is_empty() {
            let all_clear = self.all_clear(&found.evidence[0]);
            found.reasons.push(all_clear);
        }
        if c.requests == 0 {
            found
                .reasons
                .push("the canary served no requests this tick".into());
        }
        Evaluation {
            t,
            verdict,
            score,
            recommendation,
            evidence: found.evidence,
            reasons: found.reasons,
        }
    }

    fn moment(&self, t: f64) -> Moment {
        Moment {
            t,
            sustained: self.policy.sustained_for.secs(),
            enough: self.canary_requests >= self.policy.min_canary_requests,
            per_tick_canary: self.canary_requests as f64 / self.post_ticks.max(1) as f64,
            tick_len: match self.prev_t {
                Some(prev) if t > prev => t - prev,
                _ => 10.0,
            },
        }
    }

    /// 5xx out of requests.
    fn assess_errors(&mut self, now: &Moment, found: &mut Findings) {
        let p = &self.policy;
        let crit = p.is_critical(Signal::Errors);
        let tau = p.tolerance.errors;
        let j = self
            .errors
            .tests
            .judge(now.t, tau, self.log_thr, now.sustained, now.enough);
        let (ca, ba) = (j.mean_a, j.mean_b);
        let effect = ca / ba;
        let degraded = self.err_watch.degraded;
        found.evidence.push(j.evidence(
            "error_rate",
            crit,
            tau,
            (self.canary_requests, self.baseline_requests),
            degraded,
        ));
        let head = format!(
            "canary 5xx rate {} vs baseline {} ({}, interval {}) after {} canary requests{}",
            fmt_pct(ca),
            fmt_pct(ba),
            fmt_ratio(effect),
            fmt_interval(j.interval),
            thousands(self.canary_requests),
            since_note(&j, p.warm_up.secs())
        );
        found.reasons.extend(j.reason(&head, tau, crit));
        if j.class == MetricClass::Pass {
            let more = self.errors.tests.full().and_then(|s| {
                more_needed(s, tau, self.log_thr + (1.0 / W0).ln(), now.per_tick_canary)
            });
            if let Some(more) = more {
                found.reasons.push(format!(
                    "5xx rate looks {} the baseline's but is not conclusive yet; about {} more canary requests should settle it",
                    fmt_ratio(effect),
                    thousands(more)
                ));
            }
        }
        if degraded {
            found.reasons.push(format!(
                "the baseline is degraded too (5xx {} over the last minute vs its usual {}): likely an external fault such as a shared dependency; the canary is judged only on how it differs from the baseline",
                fmt_pct(self.err_watch.recent_rate()),
                fmt_pct(self.err_watch.usual())
            ));
        }
        // No errors at all on either track cannot bound the ratio, yet rules
        // out harm just as well.
        let zero_errors = j.mean_a == 0.0 && j.mean_b == 0.0;
        if !(zero_errors || j.interval.1 < p.promote_margin) || j.class != MetricClass::Pass {
            found.promote_ok = false;
        }
        found.factors.push((Signal::Errors, j.class));
    }

    /// Requests slower than each tested histogram bound; the signal's class
    /// is its worst bound's.
    fn assess_latency(&mut self, now: &Moment, found: &mut Findings) {
        let k = self.latency.len().max(1) as f64;
        // Bonferroni across bounds keeps the latency signal's own α.
        let log_thr = self.log_thr + k.ln();
        let bounds = self.bounds.clone().unwrap_or_default();
        let mut worst = if bounds.is_empty() {
            MetricClass::NoData
        } else {
            MetricClass::Pass
        };
        for (i, &le) in bounds.iter().enumerate() {
            let class = self.assess_latency_bound(i, le, log_thr, now, found);
            worst = worse(worst, class);
        }
        if self.lat_watch.degraded {
            found.reasons.push(format!(
                "the baseline is slower too (requests over {}: {} over the last minute vs its usual {}): likely an external fault; the canary is judged only on how it differs from the baseline",
                fmt_secs(*bounds.last().unwrap_or(&f64::NAN)),
                fmt_pct(self.lat_watch.recent_rate()),
                fmt_pct(self.lat_watch.usual())
            ));
        }
        found.factors.push((Signal::Latency, worst));
    }

    /// The share of requests slower than the `i`-th bound, `le` seconds.
    fn assess_latency_bound(
        &mut self,
        i: usize,
        le: f64,
        log_thr: f64,
        now: &Moment,
        found: &mut Findings,
    ) -> MetricClass {
        let crit = self.policy.is_critical(Signal::Latency);
        let tau = self.policy.tolerance.latency;
        let j = self.latency[i]
            .tests
            .judge(now.t, tau, log_thr, now.sustained, now.enough);
        let (ca, ba) = (j.mean_a, j.mean_b);
        found.evidence.push(j.evidence(
            &format!("latency_above_{}", fmt_bound(le)),
            crit,
            tau,
            (self.canary_requests, self.baseline_requests),
            self.lat_watch.degraded,
        ));
        let head = format!(
            "canary requests slower than {}: {} vs baseline {} ({}, interval {}){}; {}",
            fmt_secs(le),
            fmt_pct(ca),
            fmt_pct(ba),
            fmt_ratio(ca / ba),
            fmt_interval(j.interval),
            since_note(&j, self.policy.warm_up.secs()),
            self.quantile_summary()
        );
        found.reasons.extend(j.reason(&head, tau, crit));
        if j.interval.1.is_nan()
            || j.interval.1 >= self.policy.promote_margin
            || j.class != MetricClass::Pass
        {
            found.promote_ok = false;
        }
        j.class
    }

    fn assess_cpu(&mut self, now: &Moment, found: &mut Findings) {
        let named = self.named(Signal::Cpu, "cpu", "CPU");
        let tau = self.policy.tolerance.cpu;
        assess_saturation(&mut self.cpu, &named, tau, self.log_thr, now, found);
    }

    fn assess_memory(&mut self, now: &Moment, found: &mut Findings) {
        let named = self.named(Signal::Memory, "memory", "memory");
        let tau = self.policy.tolerance.memory;
        assess_saturation(&mut self.memory, &named, tau, self.log_thr, now, found);
    }

    fn assess_readiness(&self, now: &Moment, found: &mut Findings) {
        let named = self.named(
            Signal::Readiness,
            "readiness_failures",
            "readiness-probe failures",
        );
        assess_rule(&self.ready, &named, self.post_ticks, now, found);
    }

    fn assess_circuit_breaker(&self, now: &Moment, found: &mut Findings) {
        let named = self.named(
            Signal::CircuitBreaker,
            "circuit_breaker",
            "circuit breaker open",
        );
        assess_rule(&self.circuit, &named, self.post_ticks, now, found);
    }

    fn named(&self, signal: Signal, metric: &'static str, label: &'static str) -> Named {
        Named {
            signal,
            metric,
            label,
            critical: self.policy.is_critical(signal),
        }
    }

    /// 100 × Π(1 − weight × badness): a critical signal failing takes it to
    /// 0, a non-critical one halves it.
    fn score(&self, factors: &[(Signal, MetricClass)]) -> f64 {
        let mut score = 100.0;
        for (signal, class) in factors {
            let weight = if self.policy.is_critical(*signal) {
                1.0
            } else {
                0.5
            };
            let badness = match class {
                MetricClass::Failing => 1.0,
                MetricClass::Borderline => 0.5,
                _ => 0.0,
            };
            score *= 1.0 - weight * badness;
        }
        score
    }

    /// "not enough data yet: …", with how long more traffic should take.
    fn not_enough_data(&self, now: &Moment) -> String {
        let p = &self.policy;
        let missing = p.min_canary_requests - self.canary_requests;
        let rps = now.per_tick_canary / now.tick_len;
        let eta = if rps > 0.0 {
            format!(
                " (about {} more at current traffic)",
                fmt_duration(missing as f64 / rps)
            )
        } else {
            String::new()
        };
        format!(
            "not enough data yet: {} of the {} canary requests needed after warm-up{eta}",
            thousands(self.canary_requests),
            thousands(p.min_canary_requests)
        )
    }

    /// A degraded baseline (an external fault) blurs the comparison: no
    /// promotion then, and a promotion already recommended is withdrawn.
    fn baseline_self_check(&mut self, found: &mut Findings) {
        if self.err_watch.degraded || self.lat_watch.degraded {
            found.promote_ok = false;
            self.promoted = false;
        }
    }

    fn verdict(
        &mut self,
        now: &Moment,
        score: f64,
        found: &mut Findings,
    ) -> (Verdict, Recommendation) {
        let p = &self.policy;
        let since_warm = now.t - p.warm_up.secs();
        let promote_after = p.promote_after.secs();
        let (rollback_below, pause_below) = (p.rollback_below, p.pause_below);
        if score < pause_below {
            self.promoted = false;
        }
        if score < rollback_below {
            (Verdict::Failing, Recommendation::Rollback)
        } else if score < pause_below {
            (Verdict::Borderline, Recommendation::Pause)
        } else if (self.promoted && all_pass(&found.factors))
            || (now.enough && found.promote_ok && since_warm >= promote_after)
        {
            // Once recommended, keep recommending while nothing turns bad,
            // instead of flapping as intervals wobble.
            self.promoted = true;
            found.reasons.push(format!(
                "every critical signal rules out a {} degradation after {} canary requests: ready to promote",
                fmt_ratio(self.policy.promote_margin),
                thousands(self.canary_requests)
            ));
            (Verdict::Healthy, Recommendation::Promote)
        } else {
            (Verdict::Healthy, Recommendation::None)
        }
    }

    /// The one reason of a healthy canary nothing else had to say about.
    fn all_clear(&self, errors: &MetricEvidence) -> String {
        format!(
            "no signal shows the canary worse: 5xx rate {} vs {}, {}, after {} canary requests",
            fmt_pct(errors.canary),
            fmt_pct(errors.baseline),
            self.quantile_summary(),
            thousands(self.canary_requests)
        )
    }

    /// "p50 85 ms vs 80 ms, p95 …" from the histograms since warm-up.
    fn quantile_summary(&self) -> String {
        let mut parts = Vec::new();
        for q in [0.5, 0.95, 0.99] {
            if let (Some(c), Some(b)) = (
                histogram_quantile(q, &self.hist_c),
                histogram_quantile(q, &self.hist_b),
            ) {
                parts.push(format!(
                    "p{:.0} {} vs {}",
                    q * 100.0,
                    fmt_secs(c),
                    fmt_secs(b)
                ));
            }
        }
        if parts.is_empty() {
            "no latency histogram".into()
        } else {
            format!("latency {}", parts.join(", "))
        }
    }
}

/// CPU or memory: continuous, so a paired t-test, and judged only once it
/// has three ticks. Nothing is said before the first.
fn assess_saturation(
    sig: &mut RatioSignal<PairSums>,
    named: &Named,
    tau: f64,
    log_thr: f64,
    now: &Moment,
    found: &mut Findings,
) {
    let n = sig.n();
    if n == 0 {
        return;
    }
    let j = sig.judge(now.t, tau, log_thr, now.sustained, now.enough && n >= 3);
    let (ca, ba) = (j.mean_a, j.mean_b);
    found
        .evidence
        .push(j.evidence(named.metric, named.critical, tau, (n, n), false));
    if matches!(j.class, MetricClass::Borderline | MetricClass::Failing) {
        let confirm = if named.critical {
            String::new()
        } else {
            "; on its own this only asks a human (it needs errors or latency to confirm a rollback)"
                .into()
        };
        found.reasons.push(format!(
            "canary {} {:.0}% vs baseline {:.0}% ({}, interval {}){confirm}",
            named.label,
            ca * 100.0,
            ba * 100.0,
            fmt_ratio(ca / ba),
            fmt_interval(j.interval)
        ));
    }
    found.factors.push((named.signal, j.class));
}

/// Readiness failures or an open circuit breaker. Nothing is said until
/// the canary reports it at all.
fn assess_rule(
    rule: &RuleSignal,
    named: &Named,
    post_ticks: u64,
    now: &Moment,
    found: &mut Findings,
) {
    let (t, sustained) = (now.t, now.sustained);
    let class = rule.class(t, sustained);
    if class == MetricClass::NoData {
        return;
    }
    found.evidence.push(MetricEvidence {
        metric: named.metric.into(),
        critical: named.critical,
        canary: rule.last_canary as f64,
        baseline: f64::NAN,
        effect: rule.canary_count as f64,
        effect_kind: EffectKind::Count,
        interval: (f64::NAN, f64::NAN),
        tolerance: 0.0,
        statistic: rule.since.map(|s| t - s).unwrap_or(0.0),
        statistic_kind: StatisticKind::Rule,
        threshold: sustained,
        canary_n: post_ticks,
        baseline_n: post_ticks,
        class,
        baseline_degraded: rule.baseline_too,
    });
    if let Some(s) = rule.since {
        let why = if rule.baseline_too {
            "the baseline shows it too, so it is likely external and not blamed on the canary"
                .to_string()
        } else if class == MetricClass::Failing {
            "the baseline does not".to_string()
        } else {
            format!("waiting until it has lasted {}", fmt_duration(sustained))
        };
        found.reasons.push(format!(
            "canary {} for {}: {why}",
            named.label,
            fmt_duration(t - s + now.tick_len)
        ));
    }
    if class != MetricClass::Pass {
        found.promote_ok = false;
    }
    found.factors.push((named.signal, class));
}

impl RatioJudgement {
    /// The evidence of a ratio signal (canary / baseline).
    pub(super) fn evidence(
        &self,
        metric: &str,
        critical: bool,
        tolerance: f64,
        (canary_n, baseline_n): (u64, u64),
        baseline_degraded: bool,
    ) -> MetricEvidence {
        MetricEvidence {
            metric: metric.to_string(),
            critical,
            canary: self.mean_a,
            baseline: self.mean_b,
            effect: self.mean_a / self.mean_b,
            effect_kind: EffectKind::Ratio,
            interval: self.interval,
            tolerance,
            statistic: self.log_e_fail.exp(),
            statistic_kind: StatisticKind::EValue,
            threshold: self.log_thr.exp(),
            canary_n,
            baseline_n,
            class: self.class,
            baseline_degraded,
        }
    }

    /// The reason a ratio signal is failing or borderline, after `head`
    /// (what was measured); none while it passes.
    pub(super) fn reason(&self, head: &str, tau: f64, critical: bool) -> Option<String> {
        let thr = self.log_thr.exp();
        match self.class {
            MetricClass::Failing => Some(format!(
                "{head}: beyond the {} tolerance (e-value {:.0}, needed {:.0}){}",
                fmt_ratio(tau),
                self.log_e_fail.exp().min(1e12),
                thr,
                if critical {
                    ""
                } else {
                    "; not critical, needs confirmation"
                }
            )),
            MetricClass::Borderline => {
                let why = match self.pending_for {
                    Some(d) => format!(
                        "beyond the {} tolerance for {} so far; rollback once sustained",
                        fmt_ratio(tau),
                        fmt_duration(d)
                    ),
                    None => format!(
                        "worse than baseline (e-value {:.0}) but not shown beyond the {} tolerance",
                        self.log_e_any.exp().min(1e12),
                        fmt_ratio(tau)
                    ),
                };
                Some(format!("{head}: {why}"))
            }
            _ => None,
        }
    }
}

/// Whether every signal still passes (or has no data).
fn all_pass(factors: &[(Signal, MetricClass)]) -> bool {
    factors
        .iter()
        .all(|(_, c)| matches!(c, MetricClass::Pass | MetricClass::NoData))
}

fn worse(a: MetricClass, b: MetricClass) -> MetricClass {
    let rank = |c: MetricClass| match c {
        MetricClass::NoData => 0,
        MetricClass::Pass => 1,
        MetricClass::NotEnoughData => 2,
        MetricClass::Borderline => 3,
        MetricClass::Failing => 4,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// " (data since 15m)" when the evidence shown comes from a restarted test.
fn since_note(j: &RatioJudgement, warm_up: f64) -> String {
    if j.since.is_finite() && j.since > warm_up + 1.0 {
        format!(" (data since {})", fmt_duration(j.since))
    } else {
        String::new()
    }
}

fn fmt_interval((lo, hi): (f64, f64)) -> String {
    if lo.is_nan() {
        "not yet computable".into()
    } else {
        format!("{}–{}", fmt_ratio(lo), fmt_ratio(hi))
    }
}

/// How a latency bound appears in metric names (`latency_above_250ms`).
pub fn fmt_bound(le: f64) -> String {
    if le < 1.0 {
        format!("{}ms", (le * 1000.0).round())
    } else {
        format!("{le}s")
    }
}

/// Canary requests still needed, at the current estimated effect, for the
/// evidence to reach the threshold (None when there is no sign of harm or it
/// would take far longer than a rollout).
fn more_needed(s: &CountSums, tau: f64, log_thr: f64, per_tick: f64) -> Option<u64> {
    if s.n < 2 || s.log_e_worse(tau) >= log_thr || s.mean_a() <= tau * s.mean_b() {
        return None;
    }
    // At a fixed effect every sum grows in proportion to the ticks.
    let mut k = 1.0f64;
    while k < 400.0 {
        k *= 1.25;
        if s.log_e_worse_projected(tau, k) >= log_thr {
            return Some(((k - 1.0) * s.n as f64 * per_tick).round() as u64);
        }
    }
    None
}
