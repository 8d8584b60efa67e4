//! `rollbot replay`: judges a recorded rollout tick by tick, from a JSON
//! Lines file or from Prometheus.

use super::load;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// One object per tick per track: {"t": 10, "track": "canary", "requests": …}.
    #[arg(long, required_unless_present = "from_prometheus")]
    input: Option<PathBuf>,
    /// Read the ticks from Prometheus instead (base URL).
    #[arg(long, requires_all = ["service", "start"])]
    from_prometheus: Option<String>,
    /// With --from-prometheus: the service (its `service` label).
    #[arg(long)]
    service: Option<String>,
    /// With --from-prometheus: the rollout's start, RFC 3339 or a duration ago (2h).
    #[arg(long)]
    start: Option<String>,
    /// With --from-prometheus: the end (default now).
    #[arg(long)]
    end: Option<String>,
    /// With --from-prometheus: tick length.
    #[arg(long, default_value = "10s")]
    interval: String,
    /// With --from-prometheus: take the service's judge policy and queries from this config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A TOML file holding a judge policy (the keys of [services.judge]).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// One JSON object per evaluation, then a summary object.
    #[arg(long)]
    json: bool,
    /// With --input: predict a controller ticking this often (e.g. 60s):
    /// each tick judges the recording's steps since the last one and acts
    /// at its end. Not shorter than the recording's own steps.
    #[arg(long)]
    tick: Option<String>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    match (&args.input, &args.from_prometheus) {
        (None, Some(url)) => from_prometheus(url, &args).await,
        _ => from_file(&args),
    }
}

/// Ticks from a JSON Lines file (`-` is standard input); an unreadable one
/// is exit status 1.
fn from_file(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let input = args.input.as_deref().unwrap_or(Path::new("-"));
    let tick = match &args.tick {
        Some(t) => Some(
            rollbot::config::parse_duration(t)
                .map_err(|e| anyhow::anyhow!("--tick {t}: {e}"))?
                .as_secs_f64(),
        ),
        None => None,
    };
    match rollbot::judge::replay::run_at(input, args.policy.as_deref(), args.json, tick) {
        Ok(out) => {
            out!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", input.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// Ticks read from Prometheus for one service between two instants.
async fn from_prometheus(url: &str, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    use rollbot::controller::history::{parse_time, HistoryReplay};
    let now = chrono::Utc::now();
    let service = args.service.clone().unwrap_or_default();
    let start =
        parse_time(args.start.as_deref().unwrap_or_default(), now).map_err(anyhow::Error::msg)?;
    let end = match &args.end {
        Some(e) => parse_time(e, now).map_err(anyhow::Error::msg)?,
        None => now,
    };
    let interval = rollbot::config::parse_duration(&args.interval).map_err(anyhow::Error::msg)?;
    let cfg = match &args.config {
        Some(c) => Some(load(c)?),
        None => None,
    };
    let svc = cfg.as_ref().and_then(|c| c.service(&service));
    let mut judge_policy = svc.map(|s| s.judge.clone()).unwrap_or_default();
    if let Some(p) = &args.policy {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        judge_policy = rollbot::judge::JudgePolicy::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    let replay = HistoryReplay {
        url,
        service: &service,
        start,
        end,
        interval,
        policy: judge_policy,
        service_config: svc,
        json: args.json,
    };
    out!("{}", replay.run().await?);
    Ok(ExitCode::SUCCESS)
}
