//! Rollback KPIs: `rollbot report` reads rollback time, success, time to
//! detect and time to resolve from a real store written by real actions,
//! and `/metrics` serves the same figures.

use crate::support::api::Api;
use crate::support::{demo, rollbot, text, Server};

/// The demo's story: checkout's canary starts failing 5 minutes in (the
/// simulator's onset) and is rolled back automatically; the incident
/// resolves; payments is rolled back by hand, once refused to a viewer.
#[test]
fn report_shows_the_demos_rollbacks_detection_and_incident() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(
        &script,
        "/wait 1h\n/as dana\n/rollback payments\n/as you\n/rollback payments bad deploy\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let o = demo(&script, &data);
    assert!(o.status.success(), "{}", text(&o));

    let o = rollbot(&["report", "--data", data.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Targets: rollback p90 under 15m, success at least 99%, time to detect p90 under 5m, time to resolve p90 under 30m"), "{out}");
    let row = |svc: &str| {
        out.lines()
            .find(|l| l.starts_with(svc))
            .unwrap_or_else(|| panic!("no row for {svc}: {out}"))
            .to_string()
    };
    assert!(
        row("checkout").contains("1 ok, 0 failed, 0 refused  100%"),
        "{out}"
    );
    assert!(
        row("payments").contains("1 ok, 0 failed, 1 refused  100%"),
        "{out}"
    );
    // The automatic rollback decided more than 5 minutes after the onset.
    assert!(
        out.contains("Missing targets:\n  checkout: time to detect p90"),
        "{out}"
    );
    assert!(!out.contains("  payments:"), "{out}");

    let o = rollbot(&[
        "report",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let checkout = &r["services"][0];
    assert_eq!(checkout["service"], "checkout");
    // Onset at 5m (the simulator's), decision at 16m20s.
    let detect = checkout["detect_secs"]["p50"].as_f64().unwrap();
    assert!((600.0..=720.0).contains(&detect), "{r}");
    // Resolved after 5 minutes of healthy data from the rollback on.
    let resolve = checkout["resolve_secs"]["p50"].as_f64().unwrap();
    assert!((300.0..=400.0).contains(&resolve), "{r}");
    assert_eq!(checkout["incidents_open"], 0);
    assert_eq!(checkout["misses"][0]["kpi"], "detect");
    assert_eq!(r["services"][1]["detect_secs"], serde_json::Value::Null);
}

#[test]
fn a_bad_window_is_a_clear_error() {
    let o = rollbot(&["report", "--since", "3x", "--data", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o);
    assert!(
        out.contains("--since `3x` is not a duration; write a number with a unit"),
        "{out}"
    );
}

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[backends.sim]
type = "simulated"

[backends.broken]
type = "exec"
program = "sh"
args = ["-c", "echo registry unreachable >&2; exit 1"]

[[services]]
name = "checkout"
backend = "sim"

[[services]]
name = "payments"
backend = "broken"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"
"##;

/// A rollback that succeeds and one that fails through `rollbot serve`:
/// `/metrics` and `rollbot report` (reading a copy while serve runs) show
/// the same rates and name the service that misses its target.
#[tokio::test]
async fn metrics_and_report_agree_while_serve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_async(dir.path(), CONFIG, &[("ROLLBOT_TEST_TOKEN", "kpi-token-1")]).await;
    let api = Api::new(&s, "kpi-token-1");
    let (code, body) = api.action("/rollback checkout", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = api.action("/rollback payments", None).await;
    assert_eq!(code, 502, "{body}");

    let (code, m) = s.get("/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "rollbot_kpi_rollback_success_ratio{service=\"checkout\"} 1.0",
        "rollbot_kpi_rollback_success_ratio{service=\"payments\"} 0.0",
        "rollbot_kpi_target_met{service=\"checkout\",kpi=\"success\"} 1",
        "rollbot_kpi_target_met{service=\"payments\",kpi=\"success\"} 0",
        "rollbot_kpi_target_met{service=\"checkout\",kpi=\"rollback_time\"} 1",
        "rollbot_kpi_target{kpi=\"rollback_time_seconds\"} 900.0",
        "rollbot_kpi_target{kpi=\"success_ratio\"} 0.99",
    ] {
        assert!(m.contains(series), "{series} missing from:\n{m}");
    }
    assert!(
        m.contains("rollbot_kpi_rollback_seconds{service=\"checkout\",quantile=\"0.9\"}"),
        "{m}"
    );
    // A failed rollback has no rollback time.
    assert!(
        !m.contains("rollbot_kpi_rollback_seconds{service=\"payments\""),
        "{m}"
    );

    let config = s.config.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || rollbot(&["report", "--config", &config]))
        .await
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Missing targets:\n  payments: rollback success 0% (target at least 99%)"),
        "{out}"
    );
    assert!(!out.contains("  checkout:"), "{out}");
    assert!(s.terminate().success());
}
