//! `rollbot postmortem ROLLOUT`: a Markdown draft from the audit log: what
//! happened when, what the judge saw, the impact, who did what, and empty
//! sections for the causes and action items people write afterwards.

use super::rollouts::{self, Rollout};
use crate::audit::{Entry, Query};
use crate::store::Store;
use std::fmt::Write as _;

async fn rollout(store: &Store, id: &str) -> anyhow::Result<Rollout> {
    let all = rollouts::load_all(store).await?;
    if let Some(r) = all.iter().find(|r| r.id == id) {
        return Ok(r.clone());
    }
    let known: Vec<String> = all
        .iter()
        .rev()
        .take(10)
        .map(|r| {
            format!(
                "{} ({} {}, {})",
                r.id,
                r.service,
                r.to_revision,
                r.start.format("%Y-%m-%d %H:%M")
            )
        })
        .collect();
    anyhow::bail!(
        "no rollout `{id}` in this store; recent rollouts: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// The Markdown draft for rollout `id`.
pub async fn write(store: &Store, id: &str) -> anyhow::Result<String> {
    let r = rollout(store, id).await?;
    let mut entries: Vec<Entry> = store.audit().query(&Query {
        service: Some(r.service.clone()),
        since: Some(r.start - chrono::Duration::minutes(1)),
        limit: 0,
        ..Default::default()
    })?;
    entries.reverse();
    let verdicts: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.record.action == "verdict"
                && e.record.parameters.get("rollout").and_then(|v| v.as_str()) == Some(id)
        })
        .collect();
    let mut md = String::new();
    summary(&mut md, &r);
    let before_after =
        super::Strategy::parse(&r.strategy).is_some_and(super::Strategy::before_after);
    impact(&mut md, &verdicts, before_after);
    what_the_judge_saw(&mut md, &verdicts);
    timeline(&mut md, &r, &entries);
    who_did_what(&mut md, &r, &entries);
    let _ = writeln!(
        md,
        "\n## Root cause\n\n_To be written._\n\n## Action items\n\n- [ ] _To be written._"
    );
    let _ = writeln!(
        md,
        "\n---\nAudit entries #{}–#{}; check them with `rollbot audit verify`.",
        entries.first().map(|e| e.seq).unwrap_or(0),
        entries.last().map(|e| e.seq).unwrap_or(0)
    );
    Ok(md)
}

/// The title and what the rollout was.
fn summary(md: &mut String, r: &Rollout) {
    let _ = writeln!(
        md,
        "# Postmortem draft: {} {} ({})\n",
        r.service,
        r.to_revision,
        r.start.format("%Y-%m-%d")
    );
    let _ = writeln!(
        md,
        "_Drafted by rollbot from its audit log; edit freely._\n"
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "- Service: **{}**, {} rollout from {} to {}, announced by {}",
        r.service, r.strategy, r.from_revision, r.to_revision, r.announced_by
    );
    let _ = writeln!(md, "- Started: {}", r.start.format("%Y-%m-%d %H:%M:%S UTC"));
    let _ = writeln!(md, "- Outcome: {}", r.state);
    if let Some(v) = &r.verdict {
        let _ = writeln!(
            md,
            "- Last verdict: {v}{}",
            r.score
                .map(|s| format!(" (score {s:.0}/100)"))
                .unwrap_or_default()
        );
    }
}

/// What the canary cost users, from the evidence of its last recorded
/// verdict; a rollout judged after vs before has no canary, so its words
/// are after and before.
fn impact(md: &mut String, verdicts: &[&Entry], before_after: bool) {
    let (now, then, served) = if before_after {
        ("after the change", "before", "since the change")
    } else {
        ("canary", "baseline", "by the canary")
    };
    let _ = writeln!(md, "\n## Impact\n");
    match verdicts
        .last()
        .and_then(|e| e.record.parameters.get("evaluation"))
    {
        Some(eval) => {
            let evidence = eval
                .get("evidence")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            if let Some(err) = evidence.iter().find(|m| m["metric"] == "error_rate") {
                let n = err["canary_n"].as_f64().unwrap_or(0.0);
                let (c, b) = (
                    err["canary"].as_f64().unwrap_or(f64::NAN),
                    err["baseline"].as_f64().unwrap_or(f64::NAN),
                );
                let excess = (n * (c - b)).max(0.0);
                let _ = writeln!(md, "- Requests served {served} before the decision: {n:.0}");
                let _ = writeln!(md, "- 5xx rate {now} {:.3}% vs {then} {:.3}%: about **{excess:.0} excess failed requests**", c * 100.0, b * 100.0);
            }
            for m in evidence.iter().filter(|m| {
                m["metric"] != "error_rate" && m["class"] != "pass" && m["class"] != "no_data"
            }) {
                let _ = writeln!(
                    md,
                    "- {}: {now} {} vs {then} {} ({})",
                    m["metric"].as_str().unwrap_or("?"),
                    m["canary"],
                    m["baseline"],
                    m["class"].as_str().unwrap_or("?")
                );
            }
        }
        None => {
            let _ = writeln!(
                md,
                "- The judge recorded no verdict that led to an action for this rollout."
            );
        }
    }
}

/// Every recorded verdict, with the judge's reasons.
fn what_the_judge_saw(md: &mut String, verdicts: &[&Entry]) {
    let _ = writeln!(md, "\n## What the judge saw\n");
    if verdicts.is_empty() {
        let _ = writeln!(md, "- No decisive verdict was recorded.");
    }
    for e in verdicts {
        let _ = writeln!(
            md,
            "- {} — **{}**",
            e.record.time.format("%H:%M:%S"),
            e.record.reason
        );
        for line in e.record.detail.lines() {
            let _ = writeln!(md, "  - {line}");
        }
    }
}

/// Every audit entry since the start, one table row each.
fn timeline(md: &mut String, r: &Rollout, entries: &[Entry]) {
    let _ = writeln!(md, "\n## Timeline (UTC)\n");
    let _ = writeln!(md, "| time | who | what | outcome | why |");
    let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
    let _ = writeln!(
        md,
        "| {} | {} | rollout of {} started | | |",
        r.start.format("%H:%M:%S"),
        r.announced_by,
        r.to_revision
    );
    for e in entries.iter().filter(|e| e.record.time >= r.start) {
        let rec = &e.record;
        let why = if rec.reason.is_empty() {
            rec.detail.lines().next().unwrap_or("").to_string()
        } else {
            rec.reason.clone()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            rec.time.format("%H:%M:%S"),
            rec.actor.display_name,
            rec.action,
            rec.outcome,
            why.replace('|', "\\|")
        );
    }
}

/// Each person (or system actor) and what they did, in order.
fn who_did_what(md: &mut String, r: &Rollout, entries: &[Entry]) {
    let _ = writeln!(md, "\n## Who did what\n");
    let mut people: Vec<(String, Vec<String>)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.record.time >= r.start && e.record.action != "verdict")
    {
        let who = format!(
            "{} ({})",
            e.record.actor.display_name,
            e.record.actor.qualified_id()
        );
        let what = format!("{} {}", e.record.action, e.record.outcome);
        match people.iter_mut().find(|(w, _)| *w == who) {
            Some((_, list)) => list.push(what),
            None => people.push((who, vec![what])),
        }
    }
    for (who, did) in &people {
        let _ = writeln!(md, "- {who}: {}", did.join(", "));
    }
}
