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

/// What one store measured.
struct Figures {
    single_rate: f64,
    batch_rate: f64,
    last50_median: Duration,
    last50_p99: Duration,
    verify: Duration,
    verified: u64,
    disk: u64,
}

/// The same workload on one store.
async fn measure(store: &Store, entries: u64) -> anyhow::Result<Figures> {
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
    Ok(Figures {
        single_rate,
        batch_rate,
        last50_median: pct(&lat, 0.5),
        last50_p99: pct(&lat, 0.99),
        verify,
        verified: report.checked,
        disk: store.size_on_disk().unwrap_or(0),
    })
}

/// Targets of one store: appends per second in batches, last 50 at the
/// median, verify of 1M entries.
struct Targets {
    batch_rate: f64,
    last50: Duration,
    verify_1m: f64,
}

const SLED_TARGETS: Targets = Targets {
    batch_rate: 20_000.0,
    last50: Duration::from_millis(5),
    verify_1m: 3.0,
};

const POSTGRES_TARGETS: Targets = Targets {
    batch_rate: 5_000.0,
    last50: Duration::from_millis(10),
    verify_1m: 10.0,
};

/// `rollbot bench audit`: sled always; PostgreSQL too when `postgres_url`
/// is given, in a schema of its own that is dropped afterwards.
pub async fn run(
    entries: u64,
    dir: Option<PathBuf>,
    postgres_url: Option<String>,
) -> anyhow::Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("rollbot-bench-")
        .tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    // The settings `serve` uses, with a generous time limit: the bench
    // measures throughput, not the watchdog.
    let opts = StoreOptions {
        timeout: Duration::from_secs(600),
        ..StoreOptions::default()
    };
    let mut columns = Vec::new();
    {
        let store = Store::open_with(tmp.path(), &opts)?;
        columns.push(("sled", measure(&store, entries).await?, &SLED_TARGETS));
    }
    let mut where_ = format!("sled at {}", tmp.path().display());
    if let Some(url) = postgres_url {
        let schema = format!("rollbot_bench_{}", std::process::id());
        let (store, scratch) = tokio::task::spawn_blocking({
            let (url, schema) = (url.clone(), schema.clone());
            move || crate::store::postgres_store::open_scratch(&url, &schema, opts.timeout)
        })
        .await??;
        let figures = measure(&store, entries).await;
        drop(store);
        tokio::task::spawn_blocking(move || scratch.drop_schema()).await??;
        columns.push(("postgres", figures?, &POSTGRES_TARGETS));
        where_.push_str(&format!(", PostgreSQL in schema {schema} (dropped after)"));
    }

    let ok = |b: bool| if b { "met" } else { "NOT met" };
    let mut out = String::new();
    out.push_str(&format!(
        "rollbot bench audit — {entries} entries, {SERVICES} services, {where_}\n\n"
    ));
    out.push_str(&format!("{:<40}", "measure"));
    for (name, _, _) in &columns {
        out.push_str(&format!(" {:>14} {:<13} {:<7}", name, "target", "status"));
    }
    out.push('\n');
    type Row<'a> = (
        String,
        Box<dyn Fn(&Figures) -> String + 'a>,
        Box<dyn Fn(&Figures, &Targets) -> (String, String) + 'a>,
    );
    let rows: Vec<Row> = vec![
        (
            "durable appends, one commit each".into(),
            Box::new(|f| format!("{:.0}/s", f.single_rate)),
            Box::new(|_, _| ("(reported)".into(), "-".into())),
        ),
        (
            format!("durable appends, batches of {BATCH}"),
            Box::new(|f| format!("{:.0}/s", f.batch_rate)),
            Box::new(|f, t| {
                (
                    format!(">= {:.0}/s", t.batch_rate),
                    ok(f.batch_rate >= t.batch_rate).into(),
                )
            }),
        ),
        (
            "last 50 for one service, median".into(),
            Box::new(|f| format!("{:.3}ms", f.last50_median.as_secs_f64() * 1e3)),
            Box::new(|f, t| {
                (
                    format!("<= {} ms", t.last50.as_millis()),
                    ok(f.last50_median <= t.last50).into(),
                )
            }),
        ),
        (
            "last 50 for one service, p99".into(),
            Box::new(|f| format!("{:.3}ms", f.last50_p99.as_secs_f64() * 1e3)),
            Box::new(|_, _| ("(reported)".into(), "-".into())),
        ),
        (
            format!("verify {entries} entries"),
            Box::new(|f| format!("{:.2}s", f.verify.as_secs_f64())),
            Box::new(|f, t| {
                let per_1m = f.verify.as_secs_f64() * 1_000_000.0 / f.verified.max(1) as f64;
                (
                    format!("<= {:.0} s for 1M", t.verify_1m),
                    ok(per_1m <= t.verify_1m).into(),
                )
            }),
        ),
        (
            "size on disk".into(),
            Box::new(|f| format!("{:.1}MB", f.disk as f64 / 1e6)),
            Box::new(|_, _| (String::new(), String::new())),
        ),
    ];
    for (label, value, target) in &rows {
        out.push_str(&format!("{label:<40}"));
        for (_, f, t) in &columns {
            let (goal, status) = target(f, t);
            out.push_str(&format!(" {:>14} {:<13} {:<7}", value(f), goal, status));
        }
        out.push('\n');
    }
    if entries < 1_000_000 {
        out.push_str("(verify targets are for 1,000,000 entries; smaller runs are scaled to it)\n");
    }
    Ok(out)
}
