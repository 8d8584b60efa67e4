//! The controller against a real Prometheus: a bad canary's history is
//! rolled back once, at the time the judge says; a good one is promoted; an
//! outage is no_data, never a rollback.

use crate::support::api::Api;
use crate::support::audit;
use crate::support::prometheus::{openmetrics, serve_config, Prometheus};
use crate::support::{replay_summary, rollbot, text, Server};
use rollbot::judge::replay::judge_ticks;
use rollbot::judge::sim::{Scenario, Simulator};
use rollbot::judge::{JudgePolicy, Recommendation, Tick};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "ci-token-8d1e";

fn config(prom: &str, extra_service: &str) -> String {
    serve_config(
        prom,
        r#"{ checkout = ["v41", "v42"], search = ["r1", "r2"] }"#,
        extra_service,
    )
}

/// Prometheus holding `history` of checkout from `start`, rollbot
/// watching it with `extra_service` keys on checkout, and checkout v41 →
/// v42 announced at `start`: the rollout as announced.
async fn serve_history(
    dir: &Path,
    history: &[Tick],
    start: i64,
    extra_service: &str,
) -> (Prometheus, Server, serde_json::Value) {
    let prom =
        Prometheus::with_history(&dir.join("prom"), &openmetrics("checkout", start, history));
    let s = Server::start(
        dir,
        &config(&prom.url(), extra_service),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    let announced = announce(&s, "checkout", "v41", "v42", start).await;
    (prom, s, announced)
}

fn ticks(scenario: &Scenario, minutes: usize) -> Vec<Tick> {
    let mut sim = Simulator::new(scenario, 3);
    (0..minutes * 6).filter_map(|_| sim.next_tick()).collect()
}

/// A rollout start on the 10 s grid, `minutes` ago.
fn start_ago(minutes: i64) -> i64 {
    let now = chrono::Utc::now().timestamp();
    (now - minutes * 60) / 10 * 10
}

async fn announce(
    s: &Server,
    service: &str,
    from: &str,
    to: &str,
    start: i64,
) -> serde_json::Value {
    let start = chrono::DateTime::from_timestamp(start, 0).unwrap();
    Api::new(s, TOKEN).announce(service, from, to, start).await
}

async fn rollouts(s: &Server) -> Vec<serde_json::Value> {
    Api::new(s, TOKEN).rollouts().await
}

async fn wait_for_state(
    s: &Server,
    service: &str,
    want: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let all = rollouts(s).await;
        if let Some(r) = all.iter().find(|r| {
            r["service"] == service && r["state"].as_str().unwrap_or("").starts_with(want)
        }) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{service} never reached `{want}`: {all:?}\nlog:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn secs(text: &str) -> f64 {
    // "12m40s" or "1h02m10s"
    let (mut total, mut num) = (0.0, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let v: f64 = num.parse().unwrap_or(0.0);
            num.clear();
            total += v * match c {
                'h' => 3600.0,
                'm' => 60.0,
                _ => 1.0,
            };
        }
    }
    total
}

#[tokio::test]
async fn a_bad_canary_in_prometheus_history_is_rolled_back_once_when_the_judge_says() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::new("bad", false).canary_share(0.05).errors(3.0);
    let mut history = ticks(&scenario, 35);
    // After minute 20 the canary gets no traffic (as after a rollback).
    for t in history.iter_mut().skip(20 * 6) {
        t.canary = Some(rollbot::judge::TrackSample {
            latency_buckets: t
                .canary
                .as_ref()
                .unwrap()
                .latency_buckets
                .iter()
                .map(|b| (b.0, 0))
                .collect(),
            ..Default::default()
        });
    }
    let expected = judge_ticks(&history, &JudgePolicy::default())
        .iter()
        .find(|e| e.recommendation == Recommendation::Rollback)
        .expect("the judge rolls this scenario back")
        .t;
    let start = start_ago(35);
    let (prom, s, announced) = serve_history(dir.path(), &history, start, "").await;
    let id = announced["id"].as_str().unwrap().to_string();
    // The listing waits for the catch-up, which rolls back on history.
    let r = wait_for_state(
        &s,
        "checkout",
        "rolled back automatically",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(r["verdict"], "failing", "{r}\n{}", s.log_text());
    let log = s.log_text();
    // Incident status updates, in order.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    assert!(at("Incident: checkout v42 — Identified") < at("Monitoring: checkout v42"));
    // The history after the rollback point was recorded before the
    // rollback was made: it resolves nothing. Only data from after the
    // rollback can, and the recorded history ends now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = &rollouts(&s).await[0];
    assert_eq!(
        r["state"], "rolled back automatically, monitoring recovery",
        "{r}"
    );
    assert!(
        !s.log_text().contains("Resolved: checkout v42"),
        "{}",
        s.log_text()
    );
    assert!(
        log.contains("monitoring until the error rate stays at or below"),
        "{log}"
    );
    assert!(
        log.contains("Canary checkout v42: failing"),
        "summary not posted:\n{log}"
    );
    assert!(
        log.contains("Rolled back checkout v42 → v41") && log.contains("#incidents"),
        "rollback not announced in both channels:\n{log}"
    );
    assert!(s.terminate().success());

    let data = dir.path().join("data");
    let list = audit::list(&data, &["--service", "checkout"]);
    let rollbacks: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("rollback checkout by rollbot controller — succeeded"))
        .collect();
    assert_eq!(rollbacks.len(), 1, "{list}");
    let at = rollbacks[0]
        .split("automatic after ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        (secs(at) - expected).abs() <= 10.0,
        "rolled back at {at}, the judge says {expected}s on the same data:\n{list}"
    );
    assert!(
        list.contains("verdict checkout by rollbot controller — noted (failing after"),
        "{list}"
    );
    // Backtesting the same history from Prometheus finds the same moment.
    assert_the_backtest_rolls_back_at(&prom, start, expected);
    // A postmortem draft from the audit log.
    assert_a_postmortem_draft_of(&data, &id);

    // The evidence is in the audit log.
    let export =
        String::from_utf8(rollbot(&["audit", "export", "--data", data.to_str().unwrap()]).stdout)
            .unwrap();
    let verdict: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["action"] == "verdict" && e["reason"].as_str().unwrap().starts_with("failing"))
        .expect("the failing verdict is recorded");
    let evidence = &verdict["parameters"]["evaluation"]["evidence"];
    let errors = evidence
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "error_rate")
        .expect("error-rate evidence");
    assert_eq!(errors["class"], "failing");
    assert!(errors["effect"].as_f64().unwrap() > 2.0, "{errors}");
}

#[tokio::test]
async fn a_good_canary_is_not_rolled_back_and_auto_promote_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let history = ticks(&Scenario::new("good", true).canary_share(0.05), 40);
    let start = start_ago(42);
    let (_prom, s, _) = serve_history(
        dir.path(),
        &history,
        start,
        "auto_promote = true\nstep_interval = \"1m\"",
    )
    .await;
    let r = wait_for_state(&s, "checkout", "fully promoted", Duration::from_secs(60)).await;
    assert_eq!(r["verdict"], "healthy", "{r}");
    let log = s.log_text();
    assert!(log.contains("Canary checkout v42: healthy"));
    // The first tick's window ends at the start, before the canary's first
    // scrape: a gap that short is no reason to alarm anyone.
    assert!(
        !log.contains("No metrics for checkout") && !log.contains("Metrics for checkout are back"),
        "{log}"
    );
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert!(!list.contains("rollback"), "{list}");
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("promote checkout by rollbot controller — succeeded"))
            .count(),
        3,
        "three steps to 100%: {list}"
    );
}

#[tokio::test]
async fn a_canary_without_series_is_warned_about_once_naming_the_track_and_the_query() {
    let dir = tempfile::tempdir().unwrap();
    // The canary's pods are not scraped with the labels rollbot queries.
    let history: Vec<Tick> = ticks(&Scenario::new("good", true).canary_share(0.05), 10)
        .into_iter()
        .map(|t| Tick { canary: None, ..t })
        .collect();
    let start = start_ago(10);
    let (_prom, s, _) = serve_history(dir.path(), &history, start, "").await;
    wait_until("the warning", Duration::from_secs(60), async || {
        s.log_text().contains("No metrics for checkout v42")
    })
    .await;
    // Every tick since has no canary series: still one warning.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = s.log_text();
    assert_eq!(
        log.matches("No metrics for checkout v42").count(),
        1,
        "{log}"
    );
    let warning = &log[log.find("No metrics for checkout v42").unwrap()..];
    assert!(
        warning.contains("track=\"canary\"")
            && warning.contains("`sum by (service, track) (increase(http_requests_total[10s]))`"),
        "the warning names neither the track nor the query: {warning}"
    );
    assert!(
        !warning[..warning.find("rollbot never acts").unwrap()].contains("track=\"baseline\""),
        "{warning}"
    );
    let r = &rollouts(&s).await[0];
    assert_eq!(r["verdict"], "no_data", "{r}");
    assert_eq!(r["state"], "watching", "{r}");
}

#[tokio::test]
async fn bad_announcements_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::scraping(&dir.path().join("prom"), "127.0.0.1:9");
    let s = Server::start(
        dir.path(),
        &config(&prom.url(), ""),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    let c = reqwest::Client::new();
    for (body, field, words) in [
        (
            serde_json::json!({"service": "checkout", "from_revision": "v1"}),
            "",
            "missing field `to_revision`",
        ),
        (
            serde_json::json!({"service": "chekout", "from_revision": "v1", "to_revision": "v2"}),
            "service",
            "did you mean checkout?",
        ),
        (
            serde_json::json!({"service": "checkout", "from_revision": "v1", "to_revision": 2}),
            "to_revision",
            "invalid type",
        ),
        (
            serde_json::json!({"service": "checkout", "from_revision": "v1", "to_revision": "v2", "start_time": "yesterday"}),
            "start_time",
            "start_time",
        ),
        (
            serde_json::json!({"service": "checkout", "from_revision": "v1", "to_revision": "v2", "strategy": "yolo"}),
            "strategy",
            "not one of canary",
        ),
        // Revisions are names, as in `/rollback … to`, and bounded.
        (
            serde_json::json!({"service": "checkout", "from_revision": "v1", "to_revision": "--force"}),
            "to_revision",
            "starts with `-`",
        ),
        (
            serde_json::json!({"service": "checkout", "from_revision": "v".repeat(101), "to_revision": "v2"}),
            "from_revision",
            "rollbot accepts at most 100",
        ),
    ] {
        let r = c
            .post(s.url("/api/v1/rollouts"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{v}");
    }
    let r = c
        .post(s.url("/api/v1/rollouts"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn an_incident_opened_for_latency_is_resolved_when_latency_recovers_after_the_rollback() {
    use crate::support::app::{App, TrackRates};
    let dir = tempfile::tempdir().unwrap();
    // The canary answers as reliably as the baseline, but slowly.
    let app = App::start(
        "checkout",
        TrackRates::new(300.0, 0.001),
        TrackRates::new(300.0, 0.001).slow(0.6),
    );
    let prom = Prometheus::scraping(&dir.path().join("prom"), &app.target());
    let config = live_config(&prom.url()).replace(
        "deploy_channel = \"deploys\"",
        "deploy_channel = \"deploys\"\nresolve_after = \"6s\"",
    );
    let s = Server::start(dir.path(), &config, &[("ROLLBOT_TEST_TOKEN", TOKEN)]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    announce(&s, "checkout", "v41", "v42", chrono::Utc::now().timestamp()).await;
    wait_for_state(&s, "checkout", "rolled back", Duration::from_secs(90)).await;
    let rolled_back = Instant::now();
    let log = s.log_text();
    // Monitoring names the signal that failed: latency, not the error rate.
    let monitoring = &log[log.find("title=Monitoring: checkout v42").expect(&log)..];
    // Its three lines: what was rolled back, verification, what next.
    let monitoring = monitoring.lines().take(3).collect::<Vec<_>>().join("\n");
    assert!(
        monitoring.contains("the share of requests slower than 100ms stays at or below")
            && !monitoring.contains("error rate"),
        "{monitoring}"
    );
    // This app still sends the canary traffic: the error rate is as low as
    // ever, the latency is not back, so the incident stays open well past
    // resolve_after.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        !s.log_text().contains("Resolved: checkout v42"),
        "resolved while requests were still slow:\n{}",
        s.log_text()
    );
    // The rollback takes effect: the canary gets no more traffic.
    app.set_canary(TrackRates::new(0.0, 0.0));
    let switched = Instant::now();
    wait_until(
        "the incident to resolve",
        Duration::from_secs(40),
        async || s.log_text().contains("Resolved: checkout v42"),
    )
    .await;
    let log = s.log_text();
    let resolved = &log[log.find("Resolved: checkout v42").unwrap()..];
    assert!(
        resolved.contains("share of requests slower than 100ms")
            && resolved.contains("all after the rollback to v41"),
        "{resolved}"
    );
    let after = switched.elapsed();
    eprintln!(
        "incident resolved {:?} after the latency recovered ({:?} after the rollback)",
        after,
        rolled_back.elapsed()
    );
    assert!(after >= Duration::from_secs(4), "resolved after {after:?}");
    assert_eq!(log.matches("Resolved: checkout v42").count(), 1, "{log}");
}

fn live_config(prom: &str) -> String {
    format!(
        r##"
[server]
listen = "127.0.0.1:{{port}}"
[store]
path = "{{data}}"
[engine]
breaker_cooldown = "2s"
breaker_failures = 2
[metrics]
source = "prometheus"
url = "{prom}"
interval = "2s"
timeout = "1s"
[channels.deploys]
console = "#deploys"
[backends.sim]
type = "simulated"
history = {{ checkout = ["v41", "v42"] }}
[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
[services.judge]
warm_up = "6s"
min_canary_requests = 100
sustained_for = "4s"
[[roles.deployer]]
members = ["api:ci"]
[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_TOKEN}}"
"##
    )
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn live_scrape_a_failing_canary_is_rolled_back() {
    use crate::support::app::{App, TrackRates};
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(
        "checkout",
        TrackRates::new(300.0, 0.001),
        TrackRates::new(300.0, 0.08),
    );
    let prom = Prometheus::scraping(&dir.path().join("prom"), &app.target());
    let s = Server::start(
        dir.path(),
        &live_config(&prom.url()),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    announce(&s, "checkout", "v41", "v42", chrono::Utc::now().timestamp()).await;
    let r = wait_for_state(&s, "checkout", "rolled back", Duration::from_secs(90)).await;
    assert_eq!(r["verdict"], "failing", "{r}");
    assert!(
        s.log_text().contains("Rolled back checkout v42 → v41"),
        "{}",
        s.log_text()
    );
}

#[tokio::test]
async fn prometheus_down_is_no_data_one_warning_and_recovery() {
    use crate::support::app::{App, TrackRates};
    let dir = tempfile::tempdir().unwrap();
    let rates = TrackRates::new(200.0, 0.001);
    let app = App::start("checkout", rates, rates);
    let mut prom = Prometheus::scraping(&dir.path().join("prom"), &app.target());
    let s = Server::start(
        dir.path(),
        &live_config(&prom.url()),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    announce(&s, "checkout", "v41", "v42", chrono::Utc::now().timestamp()).await;
    wait_until("a few healthy ticks", Duration::from_secs(30), async || {
        s.get("/readyz").await.1.contains("metrics: ok")
            && rollouts(&s).await[0]["verdict"] == "healthy"
    })
    .await;

    let before = s.log_text().len();
    prom.stop();
    wait_until(
        "readyz to report the outage",
        Duration::from_secs(30),
        async || s.get("/readyz").await.1.contains("metrics: UNAVAILABLE"),
    )
    .await;
    // Several ticks pass without metrics.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let r = &rollouts(&s).await[0];
    assert_eq!(r["state"], "watching", "{r}");
    assert_eq!(r["verdict"], "no_data", "{r}");
    let log = s.log_text()[before..].to_string();
    assert_eq!(
        log.matches("No metrics for checkout v42").count(),
        1,
        "one warning, not one per tick:\n{log}"
    );
    assert!(log.contains("cannot reach Prometheus at"), "{log}");
    assert!(s
        .get("/readyz")
        .await
        .1
        .contains("nothing is rolled back automatically"));

    prom.restart();
    wait_until("metrics to return", Duration::from_secs(60), async || {
        s.get("/readyz").await.1.contains("metrics: ok")
    })
    .await;
    wait_until(
        "the recovery message",
        Duration::from_secs(30),
        async || s.log_text().contains("Metrics for checkout are back"),
    )
    .await;
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &[]);
    assert!(!list.contains("rollback"), "{list}");
    drop(app);
}

/// `rollbot replay --from-prometheus` over the 30 minutes of history from
/// `start` rolls back within 10 s of `expected` (seconds from the start),
/// and names a service with no canary series.
fn assert_the_backtest_rolls_back_at(prom: &Prometheus, start: i64, expected: f64) {
    let from = chrono::DateTime::from_timestamp(start, 0)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp(start + 30 * 60, 0)
        .unwrap()
        .to_rfc3339();
    let summary = replay_summary(&[
        "--from-prometheus",
        &prom.url(),
        "--service",
        "checkout",
        "--start",
        &from,
        "--end",
        &to,
    ]);
    let replayed = summary["first_rollback_t"]
        .as_f64()
        .expect("a rollback in the backtest");
    assert!(
        (replayed - expected).abs() <= 10.0,
        "backtest rolls back at {replayed}s, the judge on the same data at {expected}s"
    );
    let o = rollbot(&[
        "replay",
        "--from-prometheus",
        &prom.url(),
        "--service",
        "nope",
        "--start",
        &from,
        "--end",
        &to,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no canary series for service=\"nope\""),
        "{}",
        text(&o)
    );
}

/// `rollbot postmortem ID` drafts the rollout's postmortem from the audit
/// log in `data`; an unknown ID names the recent ones.
fn assert_a_postmortem_draft_of(data: &Path, id: &str) {
    let pm = rollbot(&["postmortem", id, "--data", data.to_str().unwrap()]);
    let md = text(&pm);
    assert!(pm.status.success(), "{md}");
    for expected in [
        "# Postmortem draft: checkout v42",
        "excess failed requests",
        "| rollbot controller | rollback | succeeded |",
        "## Root cause",
        "- rollbot controller (system:controller): pause requested, pause succeeded",
        "— **failing after ",
    ] {
        assert!(md.contains(expected), "missing {expected:?} in:\n{md}");
    }
    let wrong = rollbot(&["postmortem", "nope", "--data", data.to_str().unwrap()]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains(&format!(
            "no rollout `nope` in this store; recent rollouts: {id} (checkout v42"
        )),
        "{}",
        text(&wrong)
    );
}

/// When the controller rolled `checkout` back, as the audit log says
/// ("automatic after 6m10s: …"), in seconds since the rollout's start.
fn rolled_back_after(data: &Path) -> f64 {
    let list = audit::list(data, &["--service", "checkout"]);
    let line = list
        .lines()
        .find(|l| l.contains("rollback checkout by rollbot controller — succeeded"))
        .unwrap_or_else(|| panic!("no automatic rollback in:\n{list}"));
    secs(
        line.split("automatic after ")
            .nth(1)
            .and_then(|s| s.split(':').next())
            .unwrap_or_else(|| panic!("{line}")),
    )
}

#[tokio::test]
async fn a_controller_ticking_every_minute_rolls_back_at_the_same_step_as_one_ticking_every_10s() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::new("bad", false).canary_share(0.05).errors(3.0);
    let history = ticks(&scenario, 20);
    let start = start_ago(20);
    let prom = Prometheus::with_history(
        &dir.path().join("prom"),
        &openmetrics("checkout", start, &history),
    );
    let mut seen = Vec::new();
    for interval in ["10s", "60s"] {
        let d = dir.path().join(interval);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = config(&prom.url(), "")
            .replace("interval = \"10s\"", &format!("interval = \"{interval}\""));
        let s = Server::start(&d, &cfg, &[("ROLLBOT_TEST_TOKEN", TOKEN)]);
        announce(&s, "checkout", "v41", "v42", start).await;
        // A 60 s controller first looks at its next minute.
        let r = wait_for_state(
            &s,
            "checkout",
            "rolled back automatically",
            Duration::from_secs(150),
        )
        .await;
        assert_eq!(r["verdict"], "failing", "{interval}: {r}");
        assert!(s.terminate().success());
        seen.push(rolled_back_after(&d.join("data")));
    }
    // Both judged the same 10 s evidence steps from history: the same step
    // decided, whatever the tick.
    assert_eq!(
        seen[0], seen[1],
        "rolled back after {}s at 10 s ticks but {}s at 60 s ticks",
        seen[0], seen[1]
    );
}
