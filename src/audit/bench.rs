//! `rollbot bench audit`: durable appends per second (single and group
//! commit), "last 50 entries for one service" latency, and full-chain
//! verification time, measured on a real sled store.

use super::{Outcome, Query, Record};
use crate::domain::{Actor, Platform};
use crate::store::{Store, StoreOptions};
use chrono::Utc;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SERVICES: u64 = 100;
const BATCH: usize = 1000;

fn record(i: u64) -> Record {
    let mut parameters = BTreeMap::new();
    parameters.insert("to".into(), json!(format!("v{}", i % 50)));
    parameters.insert("operation".into(), json!({"op": "rollback", "to": null}));
    Record {
        time: Utc::now(),
        actor: Actor::new(
            Platform::Slack,
            format!("U{:08}", i % 400),
            format!("person {}", i % 400),
        ),
        action: if i.is_multiple_of(3) {
            "promote".into()
        } else {
            "rollback".into()
        },
        service: Some(format!("service-{:03}", i % SERVICES)),
        parameters,
        outcome: if i.is_multiple_of(2) {
            Outcome::Requested
        } else {
            Outcome::Succeeded
        },
        reason: "error rate above baseline after deploy".into(),
        detail: "Rolled back service v42 → v41; canary traffic set to 0%".into(),
        correlation_id: format!("{:012x}", i / 2),
        idempotency_key: None,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(entries: u64, dir: Option<PathBuf>) -> anyhow::Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("rollbot-bench-")
        .tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    // The settings `serve` uses, with a generous time limit: the bench
    // measures throughput, not the watchdog.
    let store = Store::open_with(
        tmp.path(),
        &StoreOptions {
            timeout: Duration::from_secs(600),
            ..StoreOptions::default()
        },
    )?;

    // 1. One durable append at a time: each waits for its own fsync.
    let singles = 500u64.min(entries);
    let t = Instant::now();
    for i in 0..singles {
        store.append(record(i)).await?;
    }
    let single_rate = singles as f64 / t.elapsed().as_secs_f64();

    // 2. Group commit: batches share one fsync.
    let t = Instant::now();
    let mut i = singles;
    while i < entries {
        let n = (entries - i).min(BATCH as u64);
        store.append_batch((i..i + n).map(record).collect()).await?;
        i += n;
    }
    let batched = entries - singles;
    let batch_rate = batched as f64 / t.elapsed().as_secs_f64().max(1e-9);

    // 3. Last 50 entries of one service, over many services.
    let mut lat = Vec::new();
    for k in 0..200u64 {
        let q = Query {
            service: Some(format!("service-{:03}", (k * 37) % SERVICES)),
            limit: 50,
            ..Default::default()
        };
        let t = Instant::now();
        let got = store.audit().query(&q)?;
        lat.push(t.elapsed());
        anyhow::ensure!(
            got.len() == 50.min((entries / SERVICES) as usize),
            "query returned {} entries",
            got.len()
        );
    }
    lat.sort();

    // 4. Verify the whole chain.
    let t = Instant::now();
    let report = store.audit().verify()?;
    let verify = t.elapsed();
    anyhow::ensure!(
        report.first_bad.is_none(),
        "fresh log failed verification: {report}"
    );
    let disk = store.size_on_disk().unwrap_or(0);

    let ok = |b: bool| if b { "met" } else { "NOT met" };
    let mut out = String::new();
    out.push_str(&format!(
        "rollbot bench audit — {} entries, {} services, sled at {}\n\n",
        entries,
        SERVICES,
        tmp.path().display()
    ));
    out.push_str(&format!(
        "{:<44} {:>16}  {:<22} {}\n",
        "measure", "result", "target", "status"
    ));
    out.push_str(&format!(
        "{:<44} {:>13.0}/s  {:<22} {}\n",
        "durable appends, one fsync each", single_rate, "(reported)", "-"
    ));
    out.push_str(&format!(
        "{:<44} {:>13.0}/s  {:<22} {}\n",
        format!("durable appends, group commit of {BATCH}"),
        batch_rate,
        ">= 20,000/s",
        ok(batch_rate >= 20_000.0)
    ));
    out.push_str(&format!(
        "{:<44} {:>14.3}ms  {:<22} {}\n",
        "last 50 for one service, median",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        "<= 5 ms",
        ok(pct(&lat, 0.5) <= Duration::from_millis(5))
    ));
    out.push_str(&format!(
        "{:<44} {:>14.3}ms  {:<22} {}\n",
        "last 50 for one service, p99",
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        "(reported)",
        "-"
    ));
    out.push_str(&format!(
        "{:<44} {:>15.2}s  {:<22} {}\n",
        format!("verify {} entries", report.checked),
        verify.as_secs_f64(),
        if entries >= 1_000_000 {
            "<= 3 s for 1M"
        } else {
            "(1M for the target)"
        },
        ok(verify.as_secs_f64() * 1_000_000.0 / entries.max(1) as f64 <= 3.0)
    ));
    out.push_str(&format!(
        "{:<44} {:>14.1}MB\n",
        "store size on disk",
        disk as f64 / 1e6
    ));
    Ok(out)
}
