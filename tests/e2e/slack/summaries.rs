//! Rollout summaries in Slack: one message updated in place, with its chart.

use super::*;

/// Slack over HTTP with the simulated metric source, and CI announcing a
/// checkout rollout that started 20 minutes ago with a bad canary.
async fn rig_with_a_bad_canary_announced() -> SlackRig {
    let extra = r#"[metrics]
source = "simulated"
interval = "1s"
scenarios = { checkout = "bad: errors 3× at 5%, 1% base" }

[[roles.deployer]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${SLACK_SIGNING_SECRET}"
"#;
    let r = rig_with("http", extra, fake_slack::BOT_TOKEN, &[]).await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    r.api(fake_slack::SIGNING_SECRET)
        .announce("checkout", "v41", "v42", start)
        .await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_is_one_message_updated_in_place() {
    let r = rig_with_a_bad_canary_announced().await;
    let summary = r
        .fake
        .wait_for(30, "the summary updated as the verdict changes", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.text.contains("Canary checkout v42") && !m.updates.is_empty())
        })
        .await;
    let summaries = with_text(r.fake.messages(DEPLOYS), "Canary checkout");
    assert_eq!(summaries.len(), 1, "one summary message per rollout");
    assert!(summary.current_blocks().to_string().contains("rollout"));
    eprintln!(
        "slack summary: posted as {:?}, then {:?}",
        summary.text.lines().next(),
        summary
            .updates
            .iter()
            .map(|u| u.0.lines().next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    );
    assert_ne!(
        summary.text.lines().next(),
        Some(summary.current_text().lines().next().unwrap_or_default())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_arrives_with_its_chart_in_its_thread() {
    let r = rig_with_a_bad_canary_announced().await;
    let file = r
        .fake
        .wait_for(30, "the summary's chart shared", |f| {
            f.files(DEPLOYS).into_iter().next()
        })
        .await;
    let summary = with_text(r.fake.messages(DEPLOYS), "Canary checkout")
        .into_iter()
        .next()
        .expect("the summary");
    assert_eq!(file.thread_ts.as_deref(), Some(summary.ts.as_str()));
    assert!(
        file.filename.starts_with("canary-") && file.filename.ends_with(".png"),
        "{}",
        file.filename
    );
    assert_eq!(&file.bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&file.bytes[12..16], b"IHDR");
    assert_eq!(
        u32::from_be_bytes(file.bytes[16..20].try_into().unwrap()),
        800
    );
    assert_eq!(
        u32::from_be_bytes(file.bytes[20..24].try_into().unwrap()),
        400
    );
    let alt = file.alt_txt.clone().unwrap_or_default();
    assert!(alt.contains("red = canary"), "{alt}");
    assert!(summary
        .current_blocks()
        .to_string()
        .contains("red = canary"));
    // At most one chart per verdict the summary showed, not one per tick.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let summary = with_text(r.fake.messages(DEPLOYS), "Canary checkout")
        .into_iter()
        .next()
        .unwrap();
    let files = r.fake.files(DEPLOYS);
    assert!(
        files.len() <= 1 + summary.updates.len(),
        "{} charts for {} updates",
        files.len(),
        summary.updates.len()
    );
    eprintln!(
        "slack chart: {} bytes, {} chart(s) for {} summary update(s)",
        file.bytes.len(),
        files.len(),
        summary.updates.len()
    );
}
