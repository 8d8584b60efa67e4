//! `rollbot bench …`: benchmarks that print a table.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchStore {
    Sled,
    Postgres,
}

#[derive(clap::Subcommand)]
enum BenchCmd {
    /// Audit log: durable appends per second, last-50 query, verify time.
    Audit {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Directory for the benchmark's store (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also measure PostgreSQL, next to sled in the same table.
        #[arg(long, value_enum, default_value = "sled")]
        store: BenchStore,
        /// The PostgreSQL database for --store postgres (a schema of its
        /// own is made and dropped); default: $ROLLBOT_BENCH_POSTGRES_URL.
        #[arg(long)]
        postgres_url: Option<String>,
    },
    /// Many active rollouts against a real Prometheus: queries, CPU and
    /// memory per tick.
    Controller {
        #[arg(long, default_value_t = 5000)]
        rollouts: usize,
        /// Minutes of history to judge, one tick every 10 s (the judge's
        /// warm-up is 5 minutes, so measure beyond it).
        #[arg(long, default_value_t = 8)]
        minutes: i64,
    },
    /// Resident memory of `rollbot serve` under a stream of signed Slack
    /// commands (against a stand-in Slack API on 127.0.0.1).
    Memory {
        #[arg(long, default_value_t = 100_000)]
        commands: u64,
        /// Commands per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Idle time before the last sample.
        #[arg(long, default_value = "30s")]
        settle: String,
        /// The server's `[store] cache_mb`.
        #[arg(long, default_value_t = 64)]
        cache_mb: u64,
    },
    /// The canary judge and four reference policies on simulated scenarios:
    /// false rollbacks, detection, time to detect, blast radius, CPU.
    Judge {
        /// Seeds per scenario (1,000 for the figures in the README).
        #[arg(long, default_value_t = 400)]
        seeds: u32,
        /// Also write one CSV row per policy and scenario.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write each scenario (seed 1) as replay JSON Lines into this directory.
        #[arg(long)]
        export: Option<PathBuf>,
        /// The controller's tick length: one table per value, then the
        /// targets across them (e.g. `--tick 10s,20s,30s,60s`; multiples
        /// of 10 s).
        #[arg(long, value_delimiter = ',', default_value = "10s")]
        tick: Vec<String>,
    },
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let table = match args.command {
        BenchCmd::Audit {
            entries,
            dir,
            store,
            postgres_url,
        } => {
            let url = match store {
                BenchStore::Sled => None,
                BenchStore::Postgres => Some(
                    postgres_url
                        .or_else(|| std::env::var("ROLLBOT_BENCH_POSTGRES_URL").ok())
                        .ok_or_else(|| {
                            anyhow::anyhow!("--store postgres needs --postgres-url URL or ROLLBOT_BENCH_POSTGRES_URL")
                        })?,
                ),
            };
            rollbot::audit::bench::run(entries, dir, url).await?
        }
        BenchCmd::Controller { rollouts, minutes } => {
            rollbot::controller::bench::run(rollouts, minutes).await?
        }
        BenchCmd::Memory {
            commands,
            rate,
            settle,
            cache_mb,
        } => {
            let settle = rollbot::config::parse_duration(&settle).map_err(anyhow::Error::msg)?;
            rollbot::server::bench::run(rollbot::server::bench::MemoryOptions {
                commands,
                rate,
                settle,
                cache_mb,
            })
            .await?
        }
        BenchCmd::Judge {
            seeds,
            csv,
            export,
            tick,
        } => {
            let ticks = tick
                .iter()
                .map(|t| {
                    rollbot::config::parse_duration(t)
                        .map(|d| d.as_secs_f64())
                        .map_err(|e| anyhow::anyhow!("--tick {t}: {e}"))
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            let opts = rollbot::judge::bench::BenchOptions {
                seeds,
                csv,
                export,
                ticks,
            };
            // The simulation is CPU-bound; keep it off the async workers.
            tokio::task::spawn_blocking(move || rollbot::judge::bench::run(&opts)).await??
        }
    };
    outln!("{table}");
    Ok(ExitCode::SUCCESS)
}
