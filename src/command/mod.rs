//! The command grammar, one parser for every chat platform and the console:
//!
//! ```text
//! /rollback <service> [to <revision>] [force] [dry-run] [reason…]
//! /rollback release <release> [reason…]
//! /rollback <service> fallback "<name>" [dry-run] [reason…]
//! /promote  <service> [full] [force] [dry-run] [reason…]
//! /pause    <service> [reason…]
//! /resume   <service> [reason…]
//! /freeze   <scope> [for <duration>] [reason…]
//! /unfreeze <scope>
//! /auto     <service> off [for <duration>] [reason…]
//! /auto     <service> on
//! /status   [service]
//! /audit    [service] [last N]
//! /help     [command]
//! ```
//! A scope is a service, a glob such as `prod/*`, or `all`. The parser never
//! panics: every input ends in a `Command` or a `ParseError` that says what
//! to write.
//!
//! Lengths and revisions are checked here, where every platform's text
//! passes (Slack, Discord, the console, `POST /api/v1/actions`), so an
//! oversized reason or a revision such as `--force` is refused before the
//! engine sees it: nothing runs and nothing is written to the audit log.

pub mod discord;
mod fallback;
pub mod form;

use crate::config::closest;
use crate::domain::Scope;
use crate::limits::{self, MAX_COMMAND, MAX_REASON, MAX_SCOPE};
use std::fmt;
use std::time::Duration;

/// The longest ad hoc freeze; longer ones belong in scheduled windows.
pub const MAX_FREEZE: Duration = Duration::from_secs(30 * 86_400);
pub const MAX_AUDIT: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Rollback {
        service: String,
        to: Option<String>,
        /// Past the migration guard: admins, with a reason, approved by a
        /// second person.
        force: bool,
        reason: String,
        /// `dry-run`: check and show what would be sent, send nothing.
        dry_run: bool,
    },
    /// One of the service's fallbacks (`[[services.fallback]]`), by name
    /// (in double quotes when it has spaces) or position.
    Fallback {
        service: String,
        name: String,
        reason: String,
        dry_run: bool,
    },
    /// Every service of a release, dependents first.
    RollbackRelease {
        release: String,
        reason: String,
    },
    Promote {
        service: String,
        full: bool,
        force: bool,
        reason: String,
        dry_run: bool,
    },
    /// Hold the service's rollout where it is (the backend's pause).
    Pause {
        service: String,
        reason: String,
    },
    /// Let a paused rollout go on.
    Resume {
        service: String,
        reason: String,
    },
    Freeze {
        scope: Scope,
        duration: Option<Duration>,
        reason: String,
    },
    Unfreeze {
        scope: Scope,
    },
    /// Switch the controller's automatic actions on a service off or on.
    Auto {
        service: String,
        enabled: bool,
        duration: Option<Duration>,
        reason: String,
    },
    Status {
        service: Option<String>,
    },
    Audit {
        service: Option<String>,
        last: usize,
    },
    Help {
        command: Option<String>,
    },
}

impl Command {
    /// Makes the command a dry run (`"dry_run": true` in the API); false
    /// for a command that has none.
    pub fn make_dry_run(&mut self) -> bool {
        match self {
            Command::Rollback { dry_run, .. }
            | Command::Promote { dry_run, .. }
            | Command::Fallback { dry_run, .. } => {
                *dry_run = true;
                true
            }
            _ => false,
        }
    }
}

/// One command's definition: the source of `/help`, the Slack manifest and
/// the Discord application commands.
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub description: &'static str,
    pub example: &'static str,
}

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "rollback", usage: "/rollback <service> [to <revision>] [force] [dry-run] [reason…] | release <release> [reason…] | <service> fallback \"<name>\" [dry-run] [reason…]", description: "Roll a service back to its previous (or a named) revision, or every service of a release, dependents first, halting at the first step that fails. `fallback \"<name>\"` tries one of the service's configured fallbacks (traffic to stable, a flag off) when a rollback left it stuck. Never blocked by a freeze. Past an irreversible or contract migration it is refused with roll-forward advice; `force` (admins, with a reason) asks a second person. `dry-run` shows what would be sent and sends nothing.", example: "/rollback checkout to v41 5xx spike after deploy" },
    CommandSpec { name: "promote", usage: "/promote <service> [full] [force] [dry-run] [reason…]", description: "Promote the canary one step, or fully with `full`. `force` (admins) promotes through a freeze, with a reason. `dry-run` shows what would be sent and sends nothing.", example: "/promote checkout full metrics look good" },
    CommandSpec { name: "pause", usage: "/pause <service> [reason…]", description: "Pause the service's rollout where it is. A backend that cannot pause refuses and says why.", example: "/pause checkout waiting for the database team" },
    CommandSpec { name: "resume", usage: "/resume <service> [reason…]", description: "Resume a paused rollout; for a Flagger canary, open its confirm-rollout gate.", example: "/resume checkout database is fine again" },
    CommandSpec { name: "freeze", usage: "/freeze <scope> [for <duration>] [reason…]", description: "Refuse promotions for a service, a glob such as prod/*, or all, for a while (30m, 2h, 1d).", example: "/freeze prod/* for 2h code freeze for launch" },
    CommandSpec { name: "unfreeze", usage: "/unfreeze <scope>", description: "Lift an ad hoc freeze on exactly that scope.", example: "/unfreeze prod/*" },
    CommandSpec { name: "auto", usage: "/auto <service> off [for <duration>] [reason…] | on", description: "Switch rollbot's automatic rollback, pause and promotion of a service off for a while (default 1h, at most 7d), or back on. While off, rollbot asks instead.", example: "/auto checkout off for 2h database maintenance" },
    CommandSpec { name: "status", usage: "/status [service]", description: "Revisions, canary weight, freezes, open prompts and circuit breakers.", example: "/status checkout" },
    CommandSpec { name: "audit", usage: "/audit [service] [last N]", description: "The latest audit log entries (default 10, at most 200).", example: "/audit checkout last 20" },
    CommandSpec { name: "help", usage: "/help [command]", description: "This help, or one command's.", example: "/help freeze" },
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    /// The usage line of the command concerned, when known.
    pub usage: Option<&'static str>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(u) = self.usage {
            write!(f, "\nUsage: {u}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

fn spec(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn err(message: impl Into<String>, command: &str) -> ParseError {
    ParseError {
        message: message.into(),
        usage: spec(command).map(|s| s.usage),
    }
}

/// Parses a whole line such as `/rollback checkout bad deploy`.
pub fn parse(line: &str, services: &[&str]) -> Result<Command, ParseError> {
    let line = line.trim();
    let (cmd, rest) = match line.split_once(char::is_whitespace) {
        Some((c, r)) => (c, r),
        None => (line, ""),
    };
    parse_parts(cmd, rest, services)
}

/// Parses a command name (with or without `/`) and its text, the way Slack
/// and Discord deliver them.
pub fn parse_parts(command: &str, text: &str, services: &[&str]) -> Result<Command, ParseError> {
    let name = command.trim().trim_start_matches('/').to_ascii_lowercase();
    if let Err(e) = limits::check_length("the command", text, MAX_COMMAND) {
        return Err(err(
            format!(
                "{e}; write a shorter reason (at most {} characters) and link to details",
                limits::thousands(MAX_REASON)
            ),
            &name,
        ));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    match name.as_str() {
        "rollback" => rollback(&words, services),
        "promote" => promote(&words, services),
        "pause" => Ok(Command::Pause {
            service: service(words.first().copied(), "pause", services)?,
            reason: reason(words.get(1..).unwrap_or(&[]), "pause")?,
        }),
        "resume" => Ok(Command::Resume {
            service: service(words.first().copied(), "resume", services)?,
            reason: reason(words.get(1..).unwrap_or(&[]), "resume")?,
        }),
        "freeze" => freeze(&words, services),
        "unfreeze" => {
            let scope = scope(words.first().copied(), "unfreeze", services)?;
            if words.len() > 1 {
                return Err(err(
                    format!(
                        "/unfreeze takes only a scope; remove `{}`",
                        words[1..].join(" ")
                    ),
                    "unfreeze",
                ));
            }
            Ok(Command::Unfreeze { scope })
        }
        "auto" => auto(&words, services),
        "status" => match words.as_slice() {
            [] => Ok(Command::Status { service: None }),
            [s] => Ok(Command::Status {
                service: Some(service(Some(s), "status", services)?),
            }),
            _ => Err(err("/status takes at most one service", "status")),
        },
        "audit" => audit(&words, services),
        "help" => match words.as_slice() {
            [] => Ok(Command::Help { command: None }),
            // Help on anything is help: an unknown topic gets the list.
            [c] => Ok(Command::Help {
                command: Some(help_topic(c)),
            }),
            _ => Err(err("/help takes at most one command name", "help")),
        },
        "" => Err(ParseError {
            message: "empty command; type /help for the list".into(),
            usage: None,
        }),
        other => Err(unknown_command(other)),
    }
}

fn unknown_command(name: &str) -> ParseError {
    let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    let shown: String = name.chars().take(40).collect();
    let hint = match closest(name, names.iter().copied()).first() {
        Some(best) => format!("did you mean /{best}? "),
        None => String::new(),
    };
    ParseError {
        message: format!(
            "unknown command /{shown}; {hint}commands: {}",
            names
                .iter()
                .map(|n| format!("/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        usage: None,
    }
}

/// Checks a service name against the configured ones.
fn service(word: Option<&str>, command: &str, services: &[&str]) -> Result<String, ParseError> {
    let Some(w) = word else {
        return Err(err(
            format!(
                "/{command} needs a service; known services: {}",
                services.join(", ")
            ),
            command,
        ));
    };
    limits::check_length("the service name", w, MAX_SCOPE).map_err(|e| err(e, command))?;
    let bare = w.rsplit('/').next().unwrap_or(w);
    if services.is_empty() || services.contains(&w) || services.contains(&bare) {
        return Ok(w.to_string());
    }
    let shown: String = w.chars().take(60).collect();
    match closest(bare, services.iter().copied()).first() {
        Some(best) => Err(err(
            format!("there is no service `{shown}`; did you mean {best}?"),
            command,
        )),
        None => Err(err(
            format!(
                "there is no service `{shown}`; known services: {}",
                services.join(", ")
            ),
            command,
        )),
    }
}

fn scope(word: Option<&str>, command: &str, services: &[&str]) -> Result<Scope, ParseError> {
    let Some(w) = word else {
        return Err(err(
            format!("/{command} needs a scope: a service, a glob such as prod/*, or all"),
            command,
        ));
    };
    limits::check_length("the scope", w, MAX_SCOPE).map_err(|e| err(e, command))?;
    match Scope::parse(w) {
        Scope::Glob(g) => {
            crate::config::check_glob(&g).map_err(|e| err(e, command))?;
            Ok(Scope::Glob(g))
        }
        Scope::Service(s) => Ok(Scope::Service(service(Some(&s), command, services)?)),
        Scope::All => Ok(Scope::All),
    }
}

/// The rest of the line, at most [`MAX_REASON`] characters.
fn reason(words: &[&str], command: &str) -> Result<String, ParseError> {
    let r = words.join(" ");
    checked_reason(&r, command)?;
    Ok(r)
}

fn checked_reason(r: &str, command: &str) -> Result<(), ParseError> {
    limits::check_length("the reason", r, MAX_REASON).map_err(|e| {
        err(
            format!("{e}; shorten it and link to the incident or ticket for details"),
            command,
        )
    })
}

/// A revision is a name, never an option (see [`limits::check_revision`]).
fn revision(word: &str, command: &str) -> Result<String, ParseError> {
    limits::check_revision(word).map_err(|e| err(format!("{e}; nothing was done"), command))?;
    Ok(word.to_string())
}

fn rollback(words: &[&str], services: &[&str]) -> Result<Command, ParseError> {
    // `release` is a keyword unless a service has that name.
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("release"))
        && !services.iter().any(|s| s.eq_ignore_ascii_case("release"))
    {
        return Ok(Command::RollbackRelease {
            release: release(words.get(1).copied())?,
            reason: reason(words.get(2..).unwrap_or(&[]), "rollback")?,
        });
    }
    let svc = service(words.first().copied(), "rollback", services)?;
    let mut rest = words.get(1..).unwrap_or(&[]);
    if rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("fallback"))
    {
        return fallback::fallback(svc, &rest[1..]);
    }
    let (mut to, mut force, mut dry_run) = (None, false, false);
    // `to <revision>`, `force` and `dry-run`, in any order, then the reason.
    loop {
        match rest.first() {
            Some(w) if w.eq_ignore_ascii_case("to") && to.is_none() => match rest.get(1) {
                Some(rev) => {
                    to = Some(revision(rev, "rollback")?);
                    rest = &rest[2..];
                }
                None => {
                    return Err(err(
                        "`to` needs a revision, for example `/rollback checkout to v41`",
                        "rollback",
                    ))
                }
            },
            Some(w) if w.eq_ignore_ascii_case("force") && !force => {
                force = true;
                rest = &rest[1..];
            }
            Some(_) if !dry_run && take_dry_run(&mut rest) => dry_run = true,
            _ => break,
        }
    }
    Ok(Command::Rollback {
        service: svc,
        to,
        force,
        reason: reason(rest, "rollback")?,
        dry_run,
    })
}

/// A release name, such as `2026-12-06.1` (see [`limits::check_release`]).
fn release(word: Option<&str>) -> Result<String, ParseError> {
    let Some(w) = word else {
        return Err(err(
            "`release` needs the release's name, for example `/rollback release 2026-12-06.1`",
            "rollback",
        ));
    };
    limits::check_release(w).map_err(|e| err(format!("{e}; nothing was done"), "rollback"))?;
    Ok(w.to_string())
}

/// Takes a leading `dry-run` (or `dryrun`) off `rest`.
fn take_dry_run(rest: &mut &[&str]) -> bool {
    let found = rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("dry-run") || w.eq_ignore_ascii_case("dryrun"));
    if found {
        *rest = &rest[1..];
    }
    found
}

fn promote(words: &[&str], services: &[&str]) -> Result<Command, ParseError> {
    let svc = service(words.first().copied(), "promote", services)?;
    let mut rest = words.get(1..).unwrap_or(&[]);
    let (mut full, mut force, mut dry_run) = (false, false, false);
    while let Some(w) = rest.first() {
        if w.eq_ignore_ascii_case("full") {
            full = true;
        } else if w.eq_ignore_ascii_case("force") {
            force = true;
        } else if w.eq_ignore_ascii_case("dry-run") || w.eq_ignore_ascii_case("dryrun") {
            dry_run = true;
        } else {
            break;
        }
        rest = &rest[1..];
    }
    Ok(Command::Promote {
        service: svc,
        full,
        force,
        reason: reason(rest, "promote")?,
        dry_run,
    })
}

fn freeze(words: &[&str], services: &[&str]) -> Result<Command, ParseError> {
    let scope = scope(words.first().copied(), "freeze", services)?;
    let mut rest = words.get(1..).unwrap_or(&[]);
    let mut duration = None;
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("for")) {
        let Some(d) = rest.get(1) else {
            return Err(err(
                "`for` needs a duration such as 30m, 2h or 1d",
                "freeze",
            ));
        };
        duration = Some(freeze_duration(d)?);
        rest = &rest[2..];
    }
    Ok(Command::Freeze {
        scope,
        duration,
        reason: reason(rest, "freeze")?,
    })
}

/// A freeze's length: a duration no longer than [`MAX_FREEZE`].
fn freeze_duration(d: &str) -> Result<Duration, ParseError> {
    let d = crate::config::parse_duration(d).map_err(|e| err(e, "freeze"))?;
    if d > MAX_FREEZE {
        return Err(err("an ad hoc freeze lasts at most 30d; for longer periods add a scheduled window to the config", "freeze"));
    }
    Ok(d)
}

fn auto(words: &[&str], services: &[&str]) -> Result<Command, ParseError> {
    let svc = service(words.first().copied(), "auto", services)?;
    let rest = words.get(1..).unwrap_or(&[]);
    match rest.first().map(|w| w.to_ascii_lowercase()).as_deref() {
        Some("on") => {
            if rest.len() > 1 {
                return Err(err(
                    format!(
                        "`/auto {svc} on` takes nothing more; remove `{}`",
                        rest[1..].join(" ")
                    ),
                    "auto",
                ));
            }
            Ok(Command::Auto {
                service: svc,
                enabled: true,
                duration: None,
                reason: String::new(),
            })
        }
        Some("off") => {
            let mut rest = &rest[1..];
            let mut duration = None;
            if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("for")) {
                let Some(d) = rest.get(1) else {
                    return Err(err("`for` needs a duration such as 30m, 2h or 1d", "auto"));
                };
                duration = Some(automation_duration(d)?);
                rest = &rest[2..];
            }
            Ok(Command::Auto {
                service: svc,
                enabled: false,
                duration,
                reason: reason(rest, "auto")?,
            })
        }
        _ => Err(err(
            format!("say `off` or `on`: `/auto {svc} off for 2h <reason>` or `/auto {svc} on`"),
            "auto",
        )),
    }
}

/// How long automation stays off: at most [`crate::engine::MAX_AUTOMATION_OFF`].
fn automation_duration(d: &str) -> Result<Duration, ParseError> {
    let d = crate::config::parse_duration(d).map_err(|e| err(e, "auto"))?;
    if d > crate::engine::MAX_AUTOMATION_OFF {
        return Err(err("`/auto … off` lasts at most 7d; for longer, set `automation = false` on the service in the config", "auto"));
    }
    Ok(d)
}

fn audit(words: &[&str], services: &[&str]) -> Result<Command, ParseError> {
    let mut rest = words;
    let mut svc = None;
    if let Some(w) = rest.first() {
        if !w.eq_ignore_ascii_case("last") {
            svc = Some(service(Some(w), "audit", services)?);
            rest = &rest[1..];
        }
    }
    let last = match rest {
        [] => 10,
        [l, n] if l.eq_ignore_ascii_case("last") => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_AUDIT).contains(&n) => n,
            _ => {
                return Err(err(
                    format!("`last` needs a number from 1 to {MAX_AUDIT}"),
                    "audit",
                ))
            }
        },
        _ => return Err(err("write `/audit [service] [last N]`", "audit")),
    };
    Ok(Command::Audit { service: svc, last })
}

/// A `/help` topic as typed (`/Freeze`, `freeze`) → `freeze`, at most 40
/// characters.
pub fn help_topic(word: &str) -> String {
    word.trim_start_matches('/')
        .to_ascii_lowercase()
        .chars()
        .take(40)
        .collect()
}

/// `/help` text: one command's, or the list (with a word on why, when the
/// topic is not a command).
pub fn help(command: Option<&str>) -> String {
    if let Some(s) = command.and_then(spec) {
        return format!("{}\n{}\nExample: {}", s.usage, s.description, s.example);
    }
    let mut t = String::new();
    if let Some(topic) = command {
        let names = COMMANDS.iter().map(|c| c.name);
        let near = match closest(topic, names).first() {
            Some(best) => format!(" Did you mean /{best}?"),
            None => String::new(),
        };
        t.push_str(&format!(
            "There is no command /{topic}.{near} `/help COMMAND` explains one of these:\n"
        ));
    }
    t.push_str("rollbot commands:\n");
    for c in COMMANDS {
        t.push_str(&format!("{:<45} {}\n", c.usage, c.description));
    }
    t.push_str(
        "Buttons on prompts (Approve / Roll back) are answered by people with the approver role.",
    );
    t
}

/// The command reference in Markdown; `commands/reference.md` is generated
/// from it (`rollbot commands reference`).
pub fn reference_markdown() -> String {
    let mut t = String::from("# rollbot commands\n\nGenerated by `rollbot commands reference` from rollbot's own command definitions; do not edit by hand.\n\nThe same grammar works in Slack, Discord, the console demo and the HTTP API (`POST /api/v1/actions`).\n");
    for c in COMMANDS {
        t.push_str(&format!(
            "\n## /{}\n\n`{}`\n\n{}\n\nExample: `{}`\n",
            c.name, c.usage, c.description, c.example
        ));
    }
    t.push_str("\n## Scopes and durations\n\nA scope is a service name (`checkout`), an environment-qualified name (`prod/checkout`), a glob over `environment/name` (`prod/*`) or over names (`check*`), or `all`. Durations are a number and a unit: `90s`, `30m`, `2h`, `1d`.\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SERVICES: &[&str] = &["checkout", "payments", "search"];

    #[test]
    fn dry_run_forms() {
        let dry = |line: &str| match parse(line, SERVICES).unwrap() {
            Command::Rollback {
                dry_run,
                to,
                reason,
                ..
            } => (dry_run, to, reason),
            Command::Promote {
                dry_run, reason, ..
            } => (dry_run, None, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            dry("/rollback checkout dry-run"),
            (true, None, String::new())
        );
        assert_eq!(
            dry("/rollback checkout to v41 DRY-RUN bad deploy"),
            (true, Some("v41".into()), "bad deploy".into())
        );
        assert_eq!(
            dry("/rollback checkout dry-run to v41"),
            (true, Some("v41".into()), String::new())
        );
        assert_eq!(
            dry("/promote checkout full dry-run looks fine"),
            (true, None, "looks fine".into())
        );
        assert_eq!(
            dry("/rollback checkout bad deploy"),
            (false, None, "bad deploy".into())
        );
    }

    #[test]
    fn rollback_forms() {
        assert_eq!(
            parse("/rollback checkout to v41 5xx spike", SERVICES).unwrap(),
            Command::Rollback {
                service: "checkout".into(),
                to: Some("v41".into()),
                force: false,
                reason: "5xx spike".into(),
                dry_run: false,
            }
        );
        assert_eq!(
            parse("/rollback checkout bad deploy", SERVICES).unwrap(),
            Command::Rollback {
                service: "checkout".into(),
                to: None,
                force: false,
                reason: "bad deploy".into(),
                dry_run: false,
            }
        );
        assert_eq!(
            parse(
                "/rollback checkout to v41 force drops a column v41 reads",
                SERVICES
            )
            .unwrap(),
            Command::Rollback {
                service: "checkout".into(),
                to: Some("v41".into()),
                force: true,
                reason: "drops a column v41 reads".into(),
                dry_run: false,
            }
        );
        assert_eq!(
            parse("/rollback checkout force to v41 x", SERVICES).unwrap(),
            parse("/rollback checkout to v41 force x", SERVICES).unwrap()
        );
        assert!(parse("/rollback checkout to", SERVICES)
            .unwrap_err()
            .message
            .contains("needs a revision"));
    }

    #[test]
    fn rollback_release_names_a_release() {
        assert_eq!(
            parse(
                "/rollback release 2026-12-06.1 payments broke checkout",
                SERVICES
            )
            .unwrap(),
            Command::RollbackRelease {
                release: "2026-12-06.1".into(),
                reason: "payments broke checkout".into()
            }
        );
        let e = parse("/rollback release", SERVICES).unwrap_err();
        assert!(e.message.contains("needs the release's name"), "{e}");
        let e = parse("/rollback release --all", SERVICES).unwrap_err();
        assert!(
            e.message.contains("is not a release name") && e.message.contains("nothing was done"),
            "{e}"
        );
        // A service called `release` is still a service.
        assert_eq!(
            parse("/rollback release", &["release"]).unwrap(),
            Command::Rollback {
                service: "release".into(),
                to: None,
                force: false,
                dry_run: false,
                reason: String::new()
            }
        );
    }

    #[test]
    fn promote_flags_in_any_order() {
        assert_eq!(
            parse("/promote checkout force full launch day", SERVICES).unwrap(),
            Command::Promote {
                service: "checkout".into(),
                full: true,
                force: true,
                reason: "launch day".into(),
                dry_run: false,
            }
        );
    }

    #[test]
    fn freeze_scopes_and_durations() {
        assert_eq!(
            parse("/freeze prod/* for 2h code freeze for launch", SERVICES).unwrap(),
            Command::Freeze {
                scope: Scope::Glob("prod/*".into()),
                duration: Some(Duration::from_secs(7200)),
                reason: "code freeze for launch".into()
            }
        );
        assert_eq!(
            parse("/freeze all", SERVICES).unwrap(),
            Command::Freeze {
                scope: Scope::All,
                duration: None,
                reason: String::new()
            }
        );
        assert!(parse("/freeze all for soon", SERVICES)
            .unwrap_err()
            .message
            .contains("not a duration"));
        assert!(parse("/freeze all for 90d", SERVICES)
            .unwrap_err()
            .message
            .contains("at most 30d"));
        assert!(parse("/freeze prod/[x", SERVICES)
            .unwrap_err()
            .message
            .contains("not a valid glob"));
    }

    #[test]
    fn unknown_service_suggests_the_closest() {
        let e = parse("/rollback chekout", SERVICES).unwrap_err();
        assert_eq!(
            e.message,
            "there is no service `chekout`; did you mean checkout?"
        );
        assert_eq!(
            e.usage,
            Some("/rollback <service> [to <revision>] [force] [dry-run] [reason…] | release <release> [reason…] | <service> fallback \"<name>\" [dry-run] [reason…]")
        );
        let e = parse("/status zzz", SERVICES).unwrap_err();
        assert!(e
            .message
            .contains("known services: checkout, payments, search"));
    }

    #[test]
    fn revisions_are_names_and_free_text_is_bounded() {
        let e = parse("/rollback checkout to --force", SERVICES).unwrap_err();
        assert!(
            e.message.contains("starts with `-`") && e.message.contains("nothing was done"),
            "{e}"
        );
        assert!(parse("/rollback checkout to v41;reboot", SERVICES).is_err());
        assert!(parse(
            "/rollback checkout to ghcr.io/acme/app@sha256:0f3a",
            SERVICES
        )
        .is_ok());
        // A reason may say anything, including what looks like an option.
        assert!(parse("/rollback checkout --force", SERVICES).is_ok());

        let long = "x".repeat(2_001);
        for line in [
            format!("/rollback checkout {long}"),
            format!("/promote checkout full {long}"),
            format!("/freeze all for 1h {long}"),
            format!("/auto checkout off {long}"),
        ] {
            let e = parse(&line, SERVICES).unwrap_err();
            assert!(
                e.message.starts_with(
                    "the reason is 2,001 characters long; rollbot accepts at most 2,000"
                ),
                "{e}"
            );
        }
        assert!(parse(
            &format!("/rollback checkout {}", "x".repeat(2_000)),
            SERVICES
        )
        .is_ok());
        let e = parse(&format!("/freeze {}*", "p".repeat(300)), SERVICES).unwrap_err();
        assert!(e.message.contains("the scope is 301 characters"), "{e}");
        let e = parse(&format!("/status {}", "x".repeat(6_000)), SERVICES).unwrap_err();
        assert!(e.message.contains("the command is 6,000 characters"), "{e}");
    }

    #[test]
    fn the_checked_in_reference_is_current() {
        let file = include_str!("../../commands/reference.md");
        assert_eq!(file, reference_markdown(), "commands/reference.md is stale: run `cargo run -- commands reference > commands/reference.md`");
    }

    #[test]
    fn auto_off_and_on() {
        assert_eq!(
            parse("/auto checkout off for 2h db maintenance", SERVICES).unwrap(),
            Command::Auto {
                service: "checkout".into(),
                enabled: false,
                duration: Some(Duration::from_secs(7200)),
                reason: "db maintenance".into()
            }
        );
        assert_eq!(
            parse("/auto checkout ON", SERVICES).unwrap(),
            Command::Auto {
                service: "checkout".into(),
                enabled: true,
                duration: None,
                reason: String::new()
            }
        );
        assert!(parse("/auto checkout", SERVICES)
            .unwrap_err()
            .message
            .contains("say `off` or `on`"));
        assert!(parse("/auto checkout off for 8d", SERVICES)
            .unwrap_err()
            .message
            .contains("at most 7d"));
        assert!(parse("/auto checkout on now", SERVICES).is_err());
    }

    #[test]
    fn pause_and_resume_take_a_service_and_a_reason() {
        assert_eq!(
            parse("/pause checkout waiting for the db team", SERVICES).unwrap(),
            Command::Pause {
                service: "checkout".into(),
                reason: "waiting for the db team".into()
            }
        );
        assert_eq!(
            parse("/resume payments", SERVICES).unwrap(),
            Command::Resume {
                service: "payments".into(),
                reason: String::new()
            }
        );
        let e = parse("/pause", SERVICES).unwrap_err();
        assert!(e.message.contains("/pause needs a service"), "{e}");
        assert_eq!(e.usage, Some("/pause <service> [reason…]"));
        assert!(parse("/resume chekout", SERVICES)
            .unwrap_err()
            .message
            .contains("did you mean checkout?"));
        assert!(help(None).contains("/pause <service>"));
        assert!(help(None).contains("/resume <service>"));
        assert!(help(Some("resume")).contains("Example: /resume checkout"));
    }

    #[test]
    fn audit_and_help() {
        assert_eq!(
            parse("/audit checkout last 20", SERVICES).unwrap(),
            Command::Audit {
                service: Some("checkout".into()),
                last: 20
            }
        );
        assert_eq!(
            parse("/audit last 5", SERVICES).unwrap(),
            Command::Audit {
                service: None,
                last: 5
            }
        );
        assert!(parse("/audit checkout last 0", SERVICES).is_err());
        assert!(parse("/audit checkout last 201", SERVICES).is_err());
        assert!(parse("/rolback checkout", SERVICES)
            .unwrap_err()
            .message
            .contains("did you mean /rollback?"));
        assert!(help(Some("freeze")).contains("/freeze <scope>"));
        // Help on something that is not a command still helps.
        assert_eq!(
            parse("/help /Press", SERVICES).unwrap(),
            Command::Help {
                command: Some("press".into())
            }
        );
        let t = help(Some("press"));
        assert!(t.starts_with("There is no command /press."), "{t}");
        for c in COMMANDS {
            assert!(t.contains(c.usage), "{t}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,80}") {
            let _ = parse(&line, SERVICES);
        }

        #[test]
        fn never_panics_on_command_shaped_input(
            cmd in prop::sample::select(vec!["/rollback", "/promote", "/pause", "/resume", "/auto", "/freeze", "/unfreeze", "/status", "/audit", "/help", "/x"]),
            words in prop::collection::vec(prop::sample::select(vec!["checkout", "to", "for", "last", "full", "force", "off", "on", "2h", "0", "-1", "all", "prod/*", "[", "999999999999999999999", "1d", "ß", ""]), 0..6)
        ) {
            let line = format!("{cmd} {}", words.join(" "));
            let _ = parse(&line, SERVICES);
        }
    }
}
