//! The `rollbot` command line.

use clap::{Parser, Subcommand};

// sled allocates per node and per batch; mimalloc keeps that off the
// contended glibc arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rollbot::audit::{export, AuditStore, Query};
use rollbot::config_file::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// `print!` that returns an error instead of panicking when standard
/// output is closed (`rollbot audit export | head`); `main` then ends quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!($($arg)*))?
    };
}

/// `println!` the same way.
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

#[derive(Parser)]
#[command(
    name = "rollbot",
    version,
    about = "ChatOps for progressive delivery: judges canaries, asks humans when in doubt, rolls back when sure, audits everything."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: HTTP endpoints, chat adapters, controller.
    Serve {
        #[arg(long, short, default_value = "rollbot.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and report every problem with its line.
    CheckConfig { file: PathBuf },
    /// Run the whole loop on embedded defaults: console chat, simulated
    /// backend and metrics. Each run starts from a fresh state in a
    /// temporary directory unless --data is given.
    Demo {
        /// Read commands from this file instead of the terminal, then exit.
        #[arg(long)]
        script: Option<PathBuf>,
        /// Keep the state (audit log, freezes, prompts) in this directory,
        /// and continue from what a previous run left there.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Simulated seconds per real second in interactive mode.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
    },
    /// Read, export and verify the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
        /// The config whose store to open (its [store] path).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Or the store directory itself.
        #[arg(long, global = true)]
        data: Option<PathBuf>,
    },
    /// A Markdown postmortem draft for a rollout, from the audit log.
    Postmortem {
        /// The rollout id (from GET /api/v1/rollouts or the summary message).
        rollout: String,
        /// The config whose store to read (its [store] path).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Or the store directory itself.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Judge a recorded rollout tick by tick (JSON Lines), to backtest a policy.
    Replay {
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
    },
    /// Print chat-platform registrations generated from the command definitions.
    Commands {
        #[command(subcommand)]
        command: CommandsCmd,
    },
    /// Benchmarks that print a table.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Entries, newest first.
    List {
        #[arg(long)]
        service: Option<String>,
        /// Platform-qualified actor ID, such as slack:U0123ABCD.
        #[arg(long)]
        actor: Option<String>,
        /// Only entries newer than this (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Every entry, oldest first, to standard output.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: export::Format,
    },
    /// Check the hash chain; exit status 1 names the first bad entry.
    Verify,
}

#[derive(Subcommand)]
enum CommandsCmd {
    /// The command reference in Markdown (commands/reference.md).
    Reference,
    /// Discord application commands as JSON (commands/discord-commands.json).
    DiscordJson,
    /// Register the application commands with Discord (bulk overwrite):
    /// in one server with --guild (at once), else globally (may take up to
    /// an hour to appear everywhere).
    DiscordRegister {
        #[arg(long, short, default_value = "rollbot.toml")]
        config: PathBuf,
        /// A server (guild) ID; repeat for several.
        #[arg(long)]
        guild: Vec<String>,
    },
    /// The Slack app manifest (commands/slack-manifest.yaml).
    SlackManifest {
        /// The public HTTPS address Slack sends commands, buttons and events to.
        #[arg(long, default_value = "https://rollbot.example.com")]
        url: String,
        /// Socket Mode: Slack needs no public URL; rollbot opens the socket.
        #[arg(long)]
        socket: bool,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Audit log: durable appends per second, last-50 query, verify time.
    Audit {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Directory for the benchmark's store (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
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
    },
}

/// mimalloc's `purge_delay` option (see mimalloc.h): freed memory goes back
/// to the OS at once instead of after 10 ms, which keeps the controller's
/// resident memory at what it uses, not at its per-tick peaks.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Logs go to standard error, as text or, with `ROLLBOT_LOG_FORMAT=json`,
/// one JSON object per line for a cluster's log pipeline. `serve` logs every
/// audit entry too (`rollbot::audit` at info), so the pipeline keeps a copy
/// of the log beyond the store's volume; `ROLLBOT_LOG` overrides the filter.
fn init_logging(serve: bool) {
    let default = if serve {
        "warn,rollbot::audit=info"
    } else {
        "warn,rollbot::audit=off"
    };
    // An empty ROLLBOT_LOG (a manifest's placeholder) counts as unset.
    let filter = std::env::var("ROLLBOT_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("ROLLBOT_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    // SAFETY: sets a process-wide allocator option before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // No transparent huge pages: the allocator's arenas are advised for
    // them, and a 2 MiB page made resident for a few small per-rollout
    // objects raised the controller's peak memory by about a third (152 MB
    // against 116 MB with 5,000 rollouts). Faults from here on use 4 KiB.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // One process-wide TLS provider, before any client is built: with more
    // than one compiled in, rustls refuses to pick.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Cmd::Serve { .. }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        // The reader has all it wanted (`| head`): not an error.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| {
        anyhow::anyhow!("{e}\nrollbot did not start; fix the configuration and try again")
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
                outln!(
                    "{}: ok ({} services, {} backends, {} channels)",
                    file.display(),
                    c.services.len(),
                    c.backends.len(),
                    c.channels.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Serve { config } => {
            let c = load(&config)?;
            for w in c.warnings() {
                tracing::warn!("{w}");
            }
            let listen = c.server.listen.clone();
            let store = c.store.path.clone();
            let telemetry = std::sync::Arc::new(rollbot::telemetry::Telemetry::new());
            let slack = rollbot::chat::slack::Slack::from_config(&c)?;
            // Every message is also logged (target rollbot::chat).
            let mut sinks: Vec<std::sync::Arc<dyn rollbot::chat::ChatSink>> =
                vec![std::sync::Arc::new(rollbot::chat::log::LogSink::default())];
            sinks.extend(slack.iter().map(|s| s.sink()));
            let mut discord = None;
            if let Some(d) = &c.chat.discord {
                let rest = discord_rest(d, telemetry.clone())?;
                sinks.push(std::sync::Arc::new(
                    rollbot::chat::discord::DiscordSink::new(rest.clone()),
                ));
                discord = Some(std::sync::Arc::new(
                    rollbot::server::discord::Interactions::new(d, rest)?,
                ));
            }
            let rt = rollbot::runtime::start_with(
                c,
                &store,
                sinks,
                std::sync::Arc::new(rollbot::clock::SystemClock),
                telemetry,
            )
            .await?;
            let mut adapters = rollbot::server::Adapters::default();
            if let Some(s) = slack {
                s.start(rt.engine.clone(), &mut adapters).await?;
            }
            rollbot::server::serve(rt.engine, rt.controller, &listen, adapters, discord).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            script,
            data,
            speed,
        } => {
            rollbot::demo::run(rollbot::demo::DemoOptions {
                script,
                data,
                speed,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Postmortem {
            rollout,
            config,
            data,
        } => {
            let store = rollbot::store::Store::open(&store_dir(data, config)?)?;
            out!(
                "{}",
                rollbot::controller::postmortem::write(&store, &rollout).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit {
            command,
            config,
            data,
        } => {
            let dir = store_dir(data, config)?;
            // Reading tools work on a full disk too: they read a copy.
            let (db, _copy) = rollbot::store::open::open_for_reading(&dir)?;
            rollbot::store::open::no_panic(&dir, || audit(command, db.audit()))?
        }
        Cmd::Replay {
            input: None,
            from_prometheus: Some(url),
            service,
            start,
            end,
            interval,
            config,
            policy,
            json,
        } => {
            let now = chrono::Utc::now();
            let service = service.unwrap_or_default();
            let start = rollbot::controller::history::parse_time(&start.unwrap_or_default(), now)
                .map_err(anyhow::Error::msg)?;
            let end = match end {
                Some(e) => {
                    rollbot::controller::history::parse_time(&e, now).map_err(anyhow::Error::msg)?
                }
                None => now,
            };
            let interval =
                rollbot::config::parse_duration(&interval).map_err(anyhow::Error::msg)?;
            let cfg = match &config {
                Some(c) => Some(load(c)?),
                None => None,
            };
            let svc = cfg.as_ref().and_then(|c| c.service(&service));
            let mut judge_policy = svc.map(|s| s.judge.clone()).unwrap_or_default();
            if let Some(p) = &policy {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                judge_policy = rollbot::judge::JudgePolicy::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            }
            let replay = rollbot::controller::history::HistoryReplay {
                url: &url,
                service: &service,
                start,
                end,
                interval,
                policy: judge_policy,
                service_config: svc,
                json,
            };
            out!("{}", replay.run().await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay {
            input,
            policy,
            json,
            ..
        } => match rollbot::judge::replay::run(
            input.as_deref().unwrap_or(std::path::Path::new("-")),
            policy.as_deref(),
            json,
        ) {
            Ok(out) => {
                out!("{out}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!(
                    "error: {}: {e}",
                    input
                        .as_deref()
                        .unwrap_or(std::path::Path::new("-"))
                        .display()
                );
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Bench {
            command: BenchCmd::Judge { seeds, csv, export },
        } => {
            let opts = rollbot::judge::bench::BenchOptions { seeds, csv, export };
            // The simulation is CPU-bound; keep it off the async workers.
            let table =
                tokio::task::spawn_blocking(move || rollbot::judge::bench::run(&opts)).await??;
            outln!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            command: BenchCmd::Controller { rollouts, minutes },
        } => {
            outln!(
                "{}",
                rollbot::controller::bench::run(rollouts, minutes).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Commands {
            command: CommandsCmd::Reference,
        } => {
            out!("{}", rollbot::command::reference_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Commands {
            command: CommandsCmd::DiscordJson,
        } => {
            out!("{}", rollbot::command::discord::application_commands_json());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Commands {
            command: CommandsCmd::DiscordRegister { config, guild },
        } => {
            let c = load(&config)?;
            let Some(d) = &c.chat.discord else {
                anyhow::bail!(
                    "{} has no [chat.discord] section; add application_id, public_key and bot_token",
                    config.display()
                );
            };
            let rest = discord_rest(d, std::sync::Arc::new(rollbot::telemetry::Telemetry::new()))?;
            let commands = rollbot::command::discord::application_commands();
            let guilds: Vec<Option<u64>> = if guild.is_empty() {
                vec![None]
            } else {
                guild
                    .iter()
                    .map(|g| {
                        g.parse::<u64>()
                            .map(Some)
                            .map_err(|_| anyhow::anyhow!("--guild `{g}` is not a Discord ID"))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            for g in guilds {
                let answer = rest
                    .call(
                        "commands",
                        rollbot::chat::discord::rest::Call::OverwriteCommands { guild: g },
                        Some(&commands),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("Discord refused the commands: {e}"))?;
                let n = answer.as_array().map(|a| a.len()).unwrap_or(0);
                match g {
                    Some(g) => outln!("registered {n} commands in server {g}"),
                    None => outln!(
                        "registered {n} global commands (they may take up to an hour to appear)"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Commands {
            command: CommandsCmd::SlackManifest { url, socket },
        } => {
            out!("{}", rollbot::chat::slack::manifest::manifest(&url, socket));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            command: BenchCmd::Audit { entries, dir },
        } => {
            let table = rollbot::audit::bench::run(entries, dir).await?;
            outln!("{table}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Discord REST client from `[chat.discord]`, with its bot token read.
fn discord_rest(
    d: &rollbot::config_file::DiscordConfig,
    telemetry: std::sync::Arc<rollbot::telemetry::Telemetry>,
) -> anyhow::Result<std::sync::Arc<rollbot::chat::discord::rest::Rest>> {
    let token = d
        .bot_token_source()
        .map_err(anyhow::Error::msg)?
        .resolve()
        .map_err(|e| anyhow::anyhow!("[chat.discord] bot_token: {e}"))?;
    let app: u64 = d
        .application_id
        .parse()
        .map_err(|_| anyhow::anyhow!("[chat.discord] application_id is not a Discord ID"))?;
    rollbot::chat::discord::rest::Rest::new(
        &d.api_url,
        token.expose(),
        app,
        rollbot::chat::discord::rest::RetryPolicy::default(),
        telemetry,
    )
}

/// The store directory from --data, or a config's [store] path.
fn store_dir(data: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match (data, config) {
        (Some(d), _) => d,
        (None, Some(c)) => load(&c)?.store.path,
        (None, None) => PathBuf::from("./rollbot-data"),
    };
    if !dir.exists() {
        anyhow::bail!(
            "no store at {}; pass --data DIR or --config FILE",
            dir.display()
        );
    }
    Ok(dir)
}

fn audit(cmd: AuditCmd, store: &dyn AuditStore) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::List {
            service,
            actor,
            since,
            limit,
        } => {
            let since = match since {
                Some(s) => {
                    let d = rollbot::config::parse_duration(&s).map_err(anyhow::Error::msg)?;
                    Some(chrono::Utc::now() - chrono::Duration::from_std(d)?)
                }
                None => None,
            };
            let entries = store.query(&Query {
                service,
                actor,
                since,
                correlation_id: None,
                limit,
            })?;
            for e in &entries {
                outln!("{}", rollbot::engine::audit_line(e));
            }
            if entries.is_empty() {
                eprintln!("no matching entries");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Export { format } => {
            let mut out = std::io::stdout().lock();
            let n = export::export(store, format, &mut out)?;
            eprintln!("exported {n} entries");
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify => {
            let report = store.verify()?;
            outln!("{report}");
            Ok(if report.first_bad.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
