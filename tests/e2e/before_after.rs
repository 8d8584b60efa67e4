//! Rolling updates judged after vs before against a real Prometheus with
//! backfilled history: the service's 30 minutes before the rollout are the
//! reference. A tenfold error rate is rolled back by itself, a modest one
//! is asked about, a good one is left alone until the watch ends, and a
//! service without history before the rollout is no_data, never a
//! rollback.

use crate::support::api::Api;
use crate::support::audit;
use crate::support::prometheus::{openmetrics, serve_config, Prometheus};
use crate::support::Server;
use rollbot::judge::sim_before_after::{simulate, BaScenario};
use rollbot::judge::Tick;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "ci-token-5b2c";
const IN_FLIGHT: &str = r#"["v41", "v42"]"#;
const COMPLETE: &str = r#"["v42"]"#;

fn config(prom: &str, revisions: &str, service_keys: &str) -> String {
    serve_config(
        prom,
        &format!("{{ checkout = {revisions} }}"),
        &format!("strategy = \"rolling\"\n{service_keys}"),
    )
}

/// The whole service as one track (a rolling update has no canary track):
/// `reference` ticks before the start, then `after` minutes after it.
fn history(sc: &BaScenario, with_reference: bool, after_minutes: usize) -> Vec<Tick> {
    let run = simulate(sc, 5);
    let reference = run.reference.into_iter().filter(|_| with_reference);
    let after = run
        .after
        .into_iter()
        .take(after_minutes * 6)
        .map(|(_, s)| s);
    reference
        .chain(after)
        .map(|s| Tick {
            t: 0.0,
            baseline: Some(s),
            canary: None,
        })
        .collect()
}

/// Prometheus with `ticks` ending now, rollbot watching, and checkout
/// v41 → v42 announced (without a strategy: the service's `rolling`)
/// `after_minutes` ago. The backend's `revisions` end with the live one
/// (two: v42 still in flight; one: the rolling update is complete).
async fn serve(
    dir: &Path,
    ticks: &[Tick],
    after_minutes: i64,
    (revisions, service_keys): (&str, &str),
) -> (Prometheus, Server, Value) {
    let now = chrono::Utc::now().timestamp() / 10 * 10;
    let start = now - after_minutes * 60;
    let first = now - 10 * ticks.len() as i64;
    let prom = Prometheus::with_history(&dir.join("prom"), &openmetrics("checkout", first, ticks));
    let s = Server::start(
        dir,
        &config(&prom.url(), revisions, service_keys),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    let start = chrono::DateTime::from_timestamp(start, 0).unwrap();
    let (code, announced) = Api::new(&s, TOKEN)
        .announce_json(json!({"service": "checkout", "from_revision": "v41",
            "to_revision": "v42", "start_time": start.to_rfc3339()}))
        .await;
    assert_eq!(code, 201, "{announced}");
    assert_eq!(announced["strategy"], "rolling", "the service's default");
    (prom, s, announced)
}

async fn wait_for(s: &Server, what: &str, ok: impl Fn(&Value) -> bool, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let all = Api::new(s, TOKEN).rollouts().await;
        if let Some(r) = all.iter().find(|r| ok(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {all:?}\nlog:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many requests Prometheus answered on `handler`, from its own
/// `/metrics`.
async fn prometheus_calls(prom: &Prometheus, handler: &str) -> u64 {
    let body = reqwest::get(format!("{}/metrics", prom.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains(&format!("handler=\"{handler}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn state(r: &Value) -> &str {
    r["state"].as_str().unwrap_or("")
}

fn reasons(r: &Value) -> String {
    r["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_rolling_update_with_ten_times_the_errors_is_rolled_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let sc = BaScenario::new("bad", false).errors(10.0);
    let ticks = history(&sc, true, 12);
    let (prom, s, _) = serve(dir.path(), &ticks, 12, (IN_FLIGHT, "")).await;
    let r = wait_for(
        &s,
        "rolled back",
        |r| state(r).starts_with("rolled back automatically"),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(r["verdict"], "failing", "{r}");
    // The 30 minutes of reference came in one range query per signal.
    assert_eq!(
        prometheus_calls(&prom, "/api/v1/query_range").await,
        3,
        "requests, errors and latency"
    );
    let why = reasons(&r);
    assert!(
        why.contains("before/after comparison against the 30m before the rollout")
            && why.contains("an outside change")
            && why.contains("the evidence is overwhelming"),
        "{why}"
    );
    let log = s.log_text();
    assert!(
        log.contains("After vs before: checkout v42: failing"),
        "{log}"
    );
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("rollback checkout by rollbot controller — succeeded"))
            .count(),
        1,
        "{list}"
    );
}

#[tokio::test]
async fn a_modest_degradation_after_a_rolling_update_is_asked_about_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let sc = BaScenario::new("bad", false).errors(1.8);
    let ticks = history(&sc, true, 15);
    let (_prom, s, _) = serve(dir.path(), &ticks, 15, (IN_FLIGHT, "")).await;
    let r = wait_for(
        &s,
        "paused and failing",
        |r| state(r).starts_with("paused") && r["verdict"] == "failing",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        reasons(&r).contains("the evidence is not overwhelming"),
        "{}",
        reasons(&r)
    );
    let log = s.log_text();
    assert!(log.contains(" after the change: checkout v42"), "{log}");
    assert!(log.contains("Roll back"), "{log}");
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert!(
        !list.contains("rollback checkout by rollbot controller"),
        "{list}"
    );
}

#[tokio::test]
async fn a_good_rolling_update_is_left_alone_and_the_watch_ends_after_completion() {
    let dir = tempfile::tempdir().unwrap();
    let sc = BaScenario::new("good", true);
    let ticks = history(&sc, true, 14);
    let keys = "[services.before_after]\nwatch_after_completion = \"12m\"\n";
    let (_prom, s, _) = serve(dir.path(), &ticks, 14, (COMPLETE, keys)).await;
    let r = wait_for(
        &s,
        "ended",
        |r| state(r).starts_with("ended"),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        state(&r),
        "ended: watched 12m after the rollout completed, last verdict healthy",
        "{r}"
    );
    assert!(
        reasons(&r).contains("before/after comparison against the 30m"),
        "{}",
        reasons(&r)
    );
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert!(!list.contains("rollback checkout"), "{list}");
    assert!(!list.contains("pause checkout"), "{list}");
}

#[tokio::test]
async fn without_history_before_the_rollout_the_verdict_is_no_data_never_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    // Ten times the errors, but nothing to compare with.
    let sc = BaScenario::new("bad", false).errors(10.0);
    let ticks = history(&sc, false, 10);
    let (_prom, s, _) = serve(dir.path(), &ticks, 10, (IN_FLIGHT, "")).await;
    let r = wait_for(
        &s,
        "judged",
        |r| r["verdict"] == "no_data",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        reasons(&r).contains("no metrics for the service in the 30m before the rollout"),
        "{}",
        reasons(&r)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = &Api::new(&s, TOKEN).rollouts().await[0];
    assert_eq!(state(r), "watching", "{r}");
    assert_eq!(r["verdict"], "no_data", "{r}");
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert!(!list.contains("rollback checkout"), "{list}");
}

#[tokio::test]
async fn metrics_down_when_a_rolling_update_is_announced_delay_its_verdict_and_never_lose_it() {
    let dir = tempfile::tempdir().unwrap();
    let sc = BaScenario::new("bad", false).errors(10.0);
    let ticks = history(&sc, true, 12);
    let now = chrono::Utc::now().timestamp() / 10 * 10;
    let first = now - 10 * ticks.len() as i64;
    let mut prom = Prometheus::with_history(
        &dir.path().join("prom"),
        &openmetrics("checkout", first, &ticks),
    );
    prom.stop();
    let s = Server::start(
        dir.path(),
        &config(&prom.url(), IN_FLIGHT, ""),
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    );
    let start = chrono::DateTime::from_timestamp(now - 12 * 60, 0).unwrap();
    let (code, announced) = Api::new(&s, TOKEN)
        .announce_json(json!({"service": "checkout", "from_revision": "v41",
            "to_revision": "v42", "start_time": start.to_rfc3339()}))
        .await;
    assert_eq!(code, 201, "{announced}");
    let r = wait_for(
        &s,
        "waiting for its reference",
        |r| r["verdict"] == "no_data" && reasons(r).contains("reference not yet available"),
        Duration::from_secs(60),
    )
    .await;
    let why = reasons(&r);
    assert!(
        why.contains("no metrics for the service in the 30m before the rollout started (cannot reach Prometheus")
            && why.contains("trying again in")
            && why.contains("missing data never triggers a rollback"),
        "{why}"
    );
    assert_eq!(state(&r), "watching", "{r}");
    prom.restart();
    // The reference arrives on a later try and the whole rollout is
    // judged from its start: ten times the errors is rolled back.
    let r = wait_for(
        &s,
        "rolled back once the reference arrived",
        |r| state(r).starts_with("rolled back automatically"),
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(r["verdict"], "failing", "{r}");
    assert!(
        reasons(&r).contains("the evidence is overwhelming"),
        "{}",
        reasons(&r)
    );
    assert_eq!(prometheus_calls(&prom, "/api/v1/query_range").await, 3);
    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("rollback checkout by rollbot controller — succeeded"))
            .count(),
        1,
        "{list}"
    );
}

#[tokio::test]
async fn the_slack_summary_of_a_rolling_update_says_after_and_before_and_how_confident() {
    use crate::support::fake_slack::FakeSlack;
    use crate::support::slack_rig::SlackRig;
    const DEPLOYS: &str = "C0DEPLOYS";
    let dir = tempfile::tempdir().unwrap();
    let sc = BaScenario::new("bad", false).errors(1.8);
    let ticks = history(&sc, true, 15);
    let now = chrono::Utc::now().timestamp() / 10 * 10;
    let first = now - 10 * ticks.len() as i64;
    let prom = Prometheus::with_history(
        &dir.path().join("prom"),
        &openmetrics("checkout", first, &ticks),
    );
    let fake = FakeSlack::start().await;
    fake.add_channel(DEPLOYS, true);
    fake.add_channel("C0INCIDNT", true);
    let config = config(&prom.url(), IN_FLIGHT, "")
        .replace("console = \"#deploys\"", &format!("slack = \"{DEPLOYS}\""))
        .replace("console = \"#incidents\"", "slack = \"C0INCIDNT\"");
    let rig = SlackRig::start(
        fake,
        "http",
        DEPLOYS,
        &config,
        &[("ROLLBOT_TEST_TOKEN", TOKEN)],
    )
    .await;
    let start = chrono::DateTime::from_timestamp(now - 15 * 60, 0).unwrap();
    Api::new(&rig.server, TOKEN)
        .announce("checkout", "v41", "v42", start)
        .await;
    let r = wait_for(
        &rig.server,
        "paused and failing",
        |r| state(r).starts_with("paused") && r["verdict"] == "failing",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(r["strategy"], "rolling", "{r}");
    let messages = rig.fake.messages(DEPLOYS);
    let summary = messages
        .iter()
        .find(|m| {
            m.current_blocks()
                .to_string()
                .contains("After vs before: checkout v42")
        })
        .unwrap_or_else(|| panic!("no summary in {DEPLOYS}: {messages:?}"));
    let blocks = summary.current_blocks().to_string();
    for expected in [
        "*error rate*\\nafter ",
        " vs before ",
        "(reference: 30 min before start)",
        "*Confidence*\\nconfidence: before/after comparison against the 30m before the rollout",
        "an outside change",
    ] {
        assert!(
            blocks.contains(expected),
            "missing {expected:?} in {blocks}"
        );
    }
    assert!(!blocks.contains("vs baseline"), "{blocks}");
}

#[test]
fn the_demo_deploys_a_rolling_update_judged_after_vs_before() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(
        &script,
        "/deploy search r9 --strategy=rolling\n/wait 8m\n/deploy search r10 --strategy=rollin\n/quit\n",
    )
    .unwrap();
    let o = crate::support::demo(&script, &dir.path().join("data"));
    let t = crate::support::text(&o);
    assert!(o.status.success(), "{t}");
    for expected in [
        "deployed search r9 as a rolling rollout; rollbot is watching it after vs before",
        "After vs before: search r9: healthy",
        "before/after comparison against the 30m before the rollout",
        "--strategy=rollin is not one of canary, rolling, blue-green, flag; nothing was deployed",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
}
