//! `rollbot demo`: the whole loop on embedded defaults, with no accounts and
//! no cluster. The console is the chat, the simulated backend is the cluster,
//! and the scenario simulator plays Prometheus: `checkout`'s canary degrades
//! after a few minutes, `search`'s stays healthy.
//!
//! Besides the chat commands, the console understands:
//!   /press N          press button N of a posted message
//!   /as NAME          act as one of the demo config's people (dana, sam, priya, omar, rita, you)
//!   /wait DURATION    let simulated time pass (10 s ticks), e.g. /wait 5m (at most 1d)
//!   /wait until prompt   …until the controller asks a question (at most 30m)
//!   /deploy SERVICE REVISION [--strategy=rolling|blue-green|flag] [--release=NAME] [ID:PHASE[:irreversible]…]
//!                     start a new canary (or a rollout judged after vs
//!                     before) that ran those database migrations (phases
//!                     expand, contract, data; reversible unless marked),
//!                     as part of release NAME (`/rollback release NAME`)
//!   /break SERVICE    the simulated cluster fails SERVICE's next rollback
//!   /quit
//! In a script, lines starting with `#` are comments.

use crate::chat::console::ConsoleSink;
use crate::clock::ManualClock;
use crate::config_file::Config;
use crate::controller::{rollouts, Rollout, RolloutWatch, WatchState};
use crate::domain::{Actor, Platform};
use crate::judge::sim::{Scenario, Simulator};
use crate::runtime::Runtime;
use chrono::{SubsecRound, Utc};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DemoOptions {
    pub script: Option<PathBuf>,
    /// Where to keep the state; `None` starts from a fresh temporary
    /// directory, removed at the end, so one run never changes the next.
    pub data: Option<PathBuf>,
    /// Simulated seconds per real second in interactive mode.
    pub speed: f64,
}

pub const TICK: Duration = Duration::from_secs(10);

/// The longest `/wait`: the simulated scenarios last a day, and a longer
/// wait would only keep the console busy.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `/help` for the console's own commands.
fn demo_help(topic: &str) -> Option<&'static str> {
    Some(match topic {
        "press" => "/press N\nPress button N ([1], [2], …) of the messages above, as the person you act as.\nExample: /press 2",
        "as" => "/as NAME\nAct as one of the demo's people: dana (viewer), sam (deployer), priya (approver), omar (responder), rita (release manager), you (admin).\nExample: /as priya",
        "wait" => "/wait DURATION | /wait until prompt\nLet simulated time pass in 10 s ticks, or until the controller asks a question (at most 1d).\nExample: /wait 5m",
        "deploy" => "/deploy SERVICE REVISION [--strategy=rolling|blue-green|flag] [--release=NAME] [ID:PHASE[:irreversible]…]\nStart a new canary of SERVICE at REVISION; rollbot watches it. With --strategy=rolling (or blue-green, flag; default: the service's strategy) there is no baseline track and rollbot judges the service after the change against its 30 minutes before. With --release=NAME it is part of release NAME, which `/rollback release NAME` rolls back whole, dependents first (depends_on in the config). List the database migrations it ran (phases expand, contract, data; reversible unless marked irreversible): a rollback past an irreversible or contract one is refused with advice.\nExample: /deploy payments v9 2026_12_drop_legacy_sku:contract:irreversible\nExample: /deploy frontend f18 --release=2026-12-07.1",
        "break" => "/break SERVICE\nThe simulated cluster fails the next rollback of SERVICE (its old image cannot be pulled), to see what rollbot does when a rollback fails: a cascade halts there and says which services are rolled back and which are not.\nExample: /break checkout",
        "quit" | "exit" => "/quit\nLeave the demo. With --data DIR its state (the audit log, freezes, rollouts) stays in DIR; without, the temporary state goes with it.",
        _ => return None,
    })
}

/// `/deploy`'s `--strategy=NAME` (the last one wins), and the other words.
fn strategy_flag<'a>(
    words: impl Iterator<Item = &'a str>,
) -> Result<(Option<crate::controller::Strategy>, Vec<&'a str>), String> {
    let (flags, rest): (Vec<&str>, Vec<&str>) = words.partition(|w| w.starts_with("--strategy="));
    match flags.last().map(|f| &f["--strategy=".len()..]) {
        None => Ok((None, rest)),
        Some(name) => match crate::controller::Strategy::parse(name) {
            Some(s) => Ok((Some(s), rest)),
            None => Err(format!(
                "--strategy={name} is not one of canary, rolling, blue-green, flag"
            )),
        },
    }
}

/// `/deploy`'s `--release=NAME` (the last one wins), and the other words.
fn release_flag<'a>(
    words: impl Iterator<Item = &'a str>,
) -> Result<(Option<String>, Vec<&'a str>), String> {
    let (flags, rest): (Vec<&str>, Vec<&str>) = words.partition(|w| w.starts_with("--release="));
    match flags.last().map(|f| &f["--release=".len()..]) {
        None => Ok((None, rest)),
        Some(name) => crate::limits::check_release(name).map(|()| (Some(name.to_string()), rest)),
    }
}

/// The story the metrics tell: `checkout`'s canary starts failing requests
/// seven minutes in, slowly at first.
pub fn checkout_scenario() -> Scenario {
    Scenario::new("demo: checkout canary degrades", false)
        .canary_share(0.1)
        .errors(1.6)
        .onset(300.0)
        .ramp(600.0)
        .horizon(24.0 * 3600.0)
}

pub fn healthy_scenario(name: &str) -> Scenario {
    Scenario::new(name, true)
        .canary_share(0.1)
        .horizon(24.0 * 3600.0)
}

struct Watched {
    watch: RolloutWatch,
    metrics: Simulator,
    /// The rollout as stored, like the server's controller keeps it, so
    /// `rollbot postmortem ID --data DIR` finds the id the summary shows.
    rollout: Rollout,
    /// The verdict last stored: the record is written when it or the
    /// state changes, not every tick.
    stored_verdict: Option<String>,
    /// A rollout judged after vs before: the whole service tick by tick
    /// after the change, instead of `metrics`.
    after: Option<std::vec::IntoIter<(f64, crate::judge::TrackSample)>>,
}

pub struct Demo {
    rt: Runtime,
    console: Arc<ConsoleSink>,
    out: Arc<Mutex<dyn Write + Send>>,
    clock: ManualClock,
    me: Actor,
    watched: Vec<Watched>,
    seed: u64,
}

fn person(name: &str) -> Actor {
    Actor::new(Platform::Console, name, name)
}

impl Demo {
    /// Starts rollbot on the demo config, writing everything to `out`. The
    /// state lives in `data`; `kept` says whether it outlives the demo.
    pub async fn start(
        data: &std::path::Path,
        kept: bool,
        out: Arc<Mutex<dyn Write + Send>>,
    ) -> anyhow::Result<Demo> {
        let config = Config::demo();
        let clock = ManualClock::new(Utc::now().trunc_subsecs(0));
        let console = Arc::new(ConsoleSink::new(out.clone()));
        let rt =
            crate::runtime::start(config, data, vec![console.clone()], Arc::new(clock.clone()))
                .await?;
        let mut demo = Demo {
            rt,
            console,
            out,
            clock,
            me: person("you"),
            watched: Vec::new(),
            seed: 7,
        };
        let earlier = demo.rt.engine.audit().len();
        let state = match (kept, earlier) {
            (false, _) => format!(
                "State: a fresh temporary directory, {}, removed when the demo ends (--data DIR keeps it).",
                data.display()
            ),
            (true, 0) => format!(
                "State: {} (kept; read it later with `rollbot audit list --data {}`).",
                data.display(),
                data.display()
            ),
            (true, n) => format!(
                "State: {}, continuing from an earlier run ({n} audit entries, its freezes and rollbacks). Leave out --data for a fresh start.",
                data.display()
            ),
        };
        demo.say(&format!(
            "rollbot demo — console chat, simulated backend and metrics\n{state}\n\
             You are `you` (admin). Type /help, or /wait 5m to let time pass. Others: /as dana|sam|priya|omar|rita\n"
        ));
        demo.watch("checkout", checkout_scenario(), vec![], None, None)
            .await;
        demo.watch(
            "search",
            healthy_scenario("demo: search canary healthy"),
            vec![],
            None,
            None,
        )
        .await;
        Ok(demo)
    }

    fn say(&self, text: &str) {
        let mut o = self.out.lock().unwrap();
        let _ = writeln!(o, "{text}");
        let _ = o.flush();
    }

    async fn watch(
        &mut self,
        service: &str,
        scenario: Scenario,
        migrations: Vec<crate::migration::Migration>,
        strategy: Option<crate::controller::Strategy>,
        release: Option<String>,
    ) {
        let engine = &self.rt.engine;
        let Some(svc) = engine.config.service(service) else {
            return;
        };
        let backend = self.rt.simulated.get(svc.backend.as_ref()).cloned();
        let (from, to) = match backend {
            Some(b) => {
                use crate::backend::RollbackBackend;
                let t = crate::backend::Target {
                    service: service.into(),
                    environment: svc.environment.clone(),
                    settings: svc.target.clone(),
                };
                match b.status(&t).await {
                    Ok(s) => (
                        s.live_revision.unwrap_or_default(),
                        s.canary_revision.unwrap_or_default(),
                    ),
                    Err(_) => return,
                }
            }
            None => return,
        };
        self.seed += 1;
        let strategy = strategy.unwrap_or(svc.strategy);
        let mut watch = RolloutWatch::new(svc, &from, &to);
        let mut after = None;
        if strategy.before_after() {
            // The whole service, healthy, with its 30 minutes before.
            let sc = crate::judge::sim_before_after::BaScenario {
                horizon: 24.0 * 3600.0,
                ..crate::judge::sim_before_after::BaScenario::new("demo: rolling update", true)
            };
            let run = crate::judge::sim_before_after::simulate(&sc, self.seed);
            watch = watch.judged_before_after(crate::judge::BeforeAfterJudge::new(
                &svc.judge,
                svc.before_after.clone(),
                run.reference,
            ));
            after = Some(run.after.into_iter());
        }
        let rollout = Rollout {
            state: watch.state_text(),
            strategy: strategy.to_string(),
            migrations,
            release,
            ..Rollout::watching(
                watch.id.clone(),
                service,
                (from, to),
                crate::clock::Clock::now(&self.clock),
                "demo",
            )
        };
        let tree = &self.rt.engine.store;
        for w in self
            .watched
            .iter_mut()
            .filter(|w| w.watch.service == service)
        {
            w.rollout.state = format!("replaced by rollout {}", rollout.id);
            save(tree, &w.rollout).await;
        }
        self.watched.retain(|w| w.watch.service != service);
        save(tree, &rollout).await;
        self.watched.push(Watched {
            watch,
            metrics: Simulator::new(&scenario, self.seed),
            rollout,
            stored_verdict: None,
            after,
        });
    }

    /// Lets simulated time pass, one judge tick at a time. With
    /// `until_prompt`, stops after the tick in which the controller asked a
    /// question. Returns the time that passed.
    pub async fn advance(&mut self, d: Duration, until_prompt: bool) -> Duration {
        let ticks = (d.as_secs() / TICK.as_secs()).max(1);
        for i in 1..=ticks {
            self.clock.advance(TICK);
            let mut asked = false;
            for w in &mut self.watched {
                let before = matches!(w.watch.state, WatchState::Asking { .. });
                let next = match &mut w.after {
                    Some(after) => after.next().map(|(t, s)| crate::judge::Tick {
                        t,
                        baseline: None,
                        canary: Some(s),
                    }),
                    None => w.metrics.next_tick(),
                };
                if let Some(mut tick) = next {
                    if matches!(w.watch.state, WatchState::Monitoring(_)) && w.after.is_none() {
                        // Rolled back: the canary no longer gets traffic.
                        tick.canary = None;
                    }
                    if let Some(eval) = w.watch.tick(&self.rt.engine, &tick).await {
                        w.rollout.verdict = Some(eval.verdict.to_string());
                        w.rollout.score = eval.score.is_finite().then_some(eval.score);
                        w.rollout.reasons = eval.reasons;
                    }
                }
                let state = w.watch.state_text();
                if state != w.rollout.state || w.rollout.verdict != w.stored_verdict {
                    w.rollout.state = state;
                    w.stored_verdict = w.rollout.verdict.clone();
                    save(&self.rt.engine.store, &w.rollout).await;
                }
                asked |= !before && matches!(w.watch.state, WatchState::Asking { .. });
            }
            self.rt.engine.notifier.settle().await;
            if until_prompt && asked {
                return TICK * i as u32;
            }
        }
        TICK * ticks as u32
    }

    /// Handles one line of input. Returns false on /quit.
    pub async fn line(&mut self, line: &str) -> bool {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return true;
        }
        self.say(&format!("\n{}> {line}", self.me.display_name));
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "/quit" | "/exit" => return false,
            "/as" => {
                if rest.is_empty() {
                    self.say("usage: /as NAME (dana, sam, priya, omar, rita, you)");
                } else {
                    self.me = person(rest);
                    let roles = self.rt.engine.roles.all_roles(&self.me);
                    let names: Vec<&str> = roles.keys().map(|r| r.name()).collect();
                    self.say(&format!(
                        "now acting as {rest} ({})",
                        if names.is_empty() {
                            "no roles".to_string()
                        } else {
                            names.join(", ")
                        }
                    ));
                }
            }
            "/wait" => {
                // `/wait 5m`, or `/wait until prompt` (at most 30m).
                let until_prompt = rest == "until prompt";
                let text = if until_prompt || rest.is_empty() {
                    if until_prompt {
                        "30m"
                    } else {
                        "1m"
                    }
                } else {
                    rest
                };
                match crate::config::parse_duration(text) {
                    Ok(d) => {
                        if d > MAX_WAIT {
                            self.say(&format!(
                                "waiting {} instead of {}: /wait goes at most {} at a time",
                                crate::domain::human_duration(MAX_WAIT),
                                crate::domain::human_duration(d),
                                crate::domain::human_duration(MAX_WAIT)
                            ));
                        }
                        let passed = self.advance(d.min(MAX_WAIT), until_prompt).await;
                        self.say(&format!(
                            "… {} later ({})",
                            crate::domain::human_duration(passed),
                            self.clock_text()
                        ));
                    }
                    Err(e) => self.say(&format!("{e}; or write /wait until prompt")),
                }
            }
            "/press" => match rest
                .parse::<usize>()
                .ok()
                .and_then(|n| self.console.button(n))
            {
                Some(action_id) => {
                    let o =
                        crate::intake::press(&self.rt.engine, self.me.clone(), &action_id, None)
                            .await;
                    self.reply(o).await;
                }
                None => self
                    .say("no such button; buttons are numbered [1], [2], … in the messages above"),
            },
            "/deploy" => self.deploy(rest).await,
            "/break" => self.break_next_rollback(rest),
            "/help" if rest.is_empty() => {
                self.say(&crate::command::help(None));
                self.say("Demo commands: /press N, /as NAME, /wait DURATION, /wait until prompt, /deploy SERVICE REVISION [--release=NAME] [ID:PHASE[:irreversible]…], /break SERVICE, /quit");
            }
            "/help" if demo_help(&crate::command::help_topic(rest)).is_some() => {
                self.say(demo_help(&crate::command::help_topic(rest)).unwrap_or_default());
            }
            _ => {
                let o =
                    crate::intake::handle_line(&self.rt.engine, self.me.clone(), line, None).await;
                self.reply(o).await;
            }
        }
        true
    }

    /// `/deploy SERVICE REVISION [--strategy=…] [--release=NAME] [MIGRATION…]`:
    /// a new canary in the simulated backend, watched like an announced one.
    async fn deploy(&mut self, rest: &str) {
        let mut parts = rest.split_whitespace();
        let (svc, rev) = (parts.next(), parts.next());
        let (strategy, words) = match strategy_flag(parts) {
            Ok(found) => found,
            Err(e) => {
                self.say(&format!("{e}; nothing was deployed"));
                return;
            }
        };
        let (release, words) = match release_flag(words.into_iter()) {
            Ok(found) => found,
            Err(e) => {
                self.say(&format!("{e}; nothing was deployed"));
                return;
            }
        };
        let migrations = match crate::migration::from_words(&words) {
            Ok(m) => m,
            Err(e) => {
                self.say(&format!("{e}; nothing was deployed"));
                return;
            }
        };
        match (svc, rev) {
            (Some(svc), Some(rev)) if self.rt.engine.config.service(svc).is_some() => {
                let backend = self
                    .rt
                    .engine
                    .config
                    .service(svc)
                    .map(|s| s.backend.as_ref().clone())
                    .unwrap_or_default();
                if let Some(b) = self.rt.simulated.get(&backend) {
                    b.start_canary(svc, rev);
                }
                let part_of = release
                    .as_deref()
                    .map(|r| format!(" in release {r}"))
                    .unwrap_or_default();
                let ran = match migrations.len() {
                    0 => String::new(),
                    _ => format!(
                        " (migrations: {})",
                        migrations
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.watch(
                    svc,
                    healthy_scenario("demo: new canary"),
                    migrations,
                    strategy,
                    release,
                )
                .await;
                let how = match strategy.filter(|s| s.before_after()) {
                    Some(s) => format!(
                        "as a {s} rollout{ran}; rollbot is watching it after vs before"
                    ),
                    None => format!("as a canary{ran}; rollbot is watching it"),
                };
                self.say(&format!("deployed {svc} {rev}{part_of} {how}"));
            }
            _ => self.say("usage: /deploy SERVICE REVISION [ID:PHASE[:irreversible]…], e.g. /deploy payments v9 2026_12_add_orders_idx:expand"),
        }
    }

    /// `/break SERVICE`: the simulated cluster fails the service's next
    /// rollback, as a cluster does when the old image was garbage-collected.
    fn break_next_rollback(&self, service: &str) {
        let backend = self
            .rt
            .engine
            .config
            .service(service)
            .and_then(|s| self.rt.simulated.get(s.backend.as_ref()));
        let Some(b) = backend else {
            let names = self.rt.engine.config.service_names().join(", ");
            self.say(&format!(
                "usage: /break SERVICE, one of {names}; nothing was changed"
            ));
            return;
        };
        // What a rollback goes back to: where the watched rollout started.
        let target = self
            .watched
            .iter()
            .find(|w| w.watch.service == service)
            .map(|w| format!("{service} {}", w.rollout.from_revision))
            .unwrap_or_else(|| format!("{service}'s previous revision"));
        b.inject_failure(
            service,
            "rollback",
            1,
            &format!(
                "pods of {target} stay in ImagePullBackOff: its image is gone from the registry"
            ),
        );
        self.say(&format!(
            "the simulated cluster will fail the next rollback of {service}: the image of {target} is gone from the registry"
        ));
    }

    fn clock_text(&self) -> String {
        use crate::clock::Clock;
        self.clock.now().format("%H:%M:%S UTC").to_string()
    }

    async fn reply(&self, o: crate::engine::Outcome) {
        self.rt.engine.notifier.settle().await;
        // A result already posted in the channel is not repeated.
        if o.announced {
            return;
        }
        let text = self.console.render(
            &format!("(reply to {})", self.me.display_name),
            &o.message,
            "",
        );
        let mut out = self.out.lock().unwrap();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Marks the rollouts still under watch as ended with the demo, so a
    /// `rollbot serve` later opened on the same store does not resume them.
    async fn finish(&mut self) {
        for w in self.watched.iter_mut().filter(|w| w.watch.is_active()) {
            w.rollout.state = format!("ended with the demo ({})", w.watch.state_text());
            save(&self.rt.engine.store, &w.rollout).await;
        }
    }

    pub fn engine(&self) -> &crate::engine::Engine {
        &self.rt.engine
    }
}

/// Stores a rollout's record; the demo goes on without it if the store
/// refuses, and says so in the log.
async fn save(store: &crate::store::Store, r: &Rollout) {
    if let Err(e) = rollouts::save(store, r).await {
        tracing::warn!(rollout = %r.id, error = %e, "could not store the rollout");
    }
}

/// Runs the demo on the terminal or a script.
pub async fn run(o: DemoOptions) -> anyhow::Result<()> {
    let out: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(std::io::stdout()));
    // A fresh directory is removed when `_fresh` is dropped, after the demo.
    let (data, _fresh) = match &o.data {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("rollbot-demo-")
                .tempdir()
                .map_err(|e| anyhow::anyhow!("cannot create a temporary directory for the demo's state ({e}); pass --data DIR"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut demo = Demo::start(&data, o.data.is_some(), out).await?;
    if let Some(path) = o.script {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read script {}: {e}", path.display()))?;
        for line in text.lines() {
            if !demo.line(line).await {
                break;
            }
        }
        demo.finish().await;
        demo.rt.engine.store.flush().await?;
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        while stdin.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if tx.blocking_send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let period = Duration::from_secs_f64(TICK.as_secs_f64() / o.speed.max(0.1));
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(l) => if !demo.line(&l).await { break },
                None => break,
            },
            _ = ticker.tick() => { demo.advance(TICK, false).await; }
        }
    }
    demo.finish().await;
    demo.rt.engine.store.flush().await?;
    Ok(())
}
