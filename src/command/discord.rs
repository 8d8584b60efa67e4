//! The commands as Discord application commands: typed options generated
//! from [`COMMANDS`] and the grammar, and typed option values turned back
//! into [`Command`]s with the grammar's own checks.
//!
//! `commands/discord-commands.json` is generated from [`application_commands`]
//! (`rollbot commands discord-json`); a test fails when it is stale.

use super::{
    automation_duration, checked_reason, err, freeze_duration, help_topic, revision, scope,
    service, unknown_command, Command, ParseError,
};
use super::{COMMANDS, MAX_AUDIT};
use serenity::builder::{CreateCommand, CreateCommandOption};
use serenity::model::application::{CommandOptionType, InstallationContext, InteractionContext};

/// An option's value as Discord sends it.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Str(String),
    Bool(bool),
    Int(i64),
}

/// What an option holds, which decides its Discord type and autocomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// A configured service (autocompleted).
    Service,
    /// A service, a glob such as `prod/*`, or `all` (autocompleted).
    Scope,
    Revision,
    /// A release name such as 2026-12-06.1.
    Release,
    /// A service's fallback, by name (`[[services.fallback]]`).
    Fallback,
    Duration,
    Reason,
    Flag,
    Count,
    CommandName,
}

pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptionKind,
    pub required: bool,
    pub description: &'static str,
}

const fn opt(
    name: &'static str,
    kind: OptionKind,
    required: bool,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        required,
        description,
    }
}

use OptionKind::*;

const ROLLBACK: &[OptionSpec] = &[
    opt(
        "service",
        Service,
        false,
        "The service to roll back (or name a release instead)",
    ),
    opt(
        "revision",
        Revision,
        false,
        "Roll back to this revision (default: the previous one)",
    ),
    opt(
        "force",
        Flag,
        false,
        "Past an irreversible migration (admins; needs a reason and a second person)",
    ),
    opt("reason", Reason, false, "Why; recorded in the audit log"),
    opt(
        "release",
        Release,
        false,
        "Roll back every service of this release, dependents first",
    ),
    opt(
        "dry_run",
        Flag,
        false,
        "Only check and show what would be sent; send nothing",
    ),
    opt(
        "fallback",
        Fallback,
        false,
        "Try this configured fallback instead (when a rollback left the service stuck)",
    ),
];
const PROMOTE: &[OptionSpec] = &[
    opt(
        "service",
        Service,
        true,
        "The service whose canary to promote",
    ),
    opt("full", Flag, false, "Promote fully instead of one step"),
    opt(
        "force",
        Flag,
        false,
        "Promote through a freeze (admins, break-glass; needs a reason)",
    ),
    opt("reason", Reason, false, "Why; recorded in the audit log"),
    opt(
        "dry_run",
        Flag,
        false,
        "Only check and show what would be sent; send nothing",
    ),
];
const PAUSE: &[OptionSpec] = &[
    opt(
        "service",
        Service,
        true,
        "The service whose rollout to pause",
    ),
    opt("reason", Reason, false, "Why; recorded in the audit log"),
];
const RESUME: &[OptionSpec] = &[
    opt(
        "service",
        Service,
        true,
        "The service whose rollout to resume",
    ),
    opt("reason", Reason, false, "Why; recorded in the audit log"),
];
const FREEZE: &[OptionSpec] = &[
    opt(
        "scope",
        Scope,
        true,
        "A service, a glob such as prod/*, or all",
    ),
    opt(
        "duration",
        Duration,
        false,
        "How long, such as 30m, 2h or 1d (default from the config; at most 30d)",
    ),
    opt("reason", Reason, false, "Why; shown to whoever is refused"),
];
const UNFREEZE: &[OptionSpec] = &[opt(
    "scope",
    Scope,
    true,
    "Exactly the scope of the freeze to lift",
)];
const AUTO: &[OptionSpec] = &[
    opt("service", Service, true, "The service"),
    opt(
        "enabled",
        Flag,
        true,
        "true: rollbot acts by itself again; false: it asks instead",
    ),
    opt(
        "duration",
        Duration,
        false,
        "How long it stays off, such as 30m, 2h or 1d (default 1h; at most 7d)",
    ),
    opt(
        "reason",
        Reason,
        false,
        "Why; shown while automation is off",
    ),
];
const STATUS: &[OptionSpec] = &[opt("service", Service, false, "One service (default: all)")];
const AUDIT: &[OptionSpec] = &[
    opt("service", Service, false, "One service (default: all)"),
    opt(
        "last",
        Count,
        false,
        "How many entries (default 10, at most 200)",
    ),
];
const HELP: &[OptionSpec] = &[opt("command", CommandName, false, "One command's help")];

/// The typed options of each command, in the grammar's order
/// (`/rollback <service> [to <revision>] [reason…]` and so on).
pub fn options(command: &str) -> &'static [OptionSpec] {
    match command {
        "rollback" => ROLLBACK,
        "promote" => PROMOTE,
        "pause" => PAUSE,
        "resume" => RESUME,
        "freeze" => FREEZE,
        "unfreeze" => UNFREEZE,
        "auto" => AUTO,
        "status" => STATUS,
        "audit" => AUDIT,
        "help" => HELP,
        _ => &[],
    }
}

/// Discord allows 100 characters in a description: whole sentences that fit.
fn short(description: &str) -> String {
    let mut out = String::new();
    for sentence in description.split_inclusive(". ") {
        if out.len() + sentence.trim_end().len() > 100 {
            break;
        }
        out.push_str(sentence);
    }
    let out = out.trim_end().to_string();
    if out.is_empty() {
        crate::chat::discord::render::clip(description, 100)
    } else {
        out
    }
}

/// The application commands, as sent to Discord's bulk overwrite.
pub fn application_commands() -> serde_json::Value {
    let commands: Vec<serde_json::Value> = COMMANDS
        .iter()
        .map(|c| {
            let mut cmd = CreateCommand::new(c.name)
                .description(short(c.description))
                .contexts(vec![InteractionContext::Guild])
                .integration_types(vec![InstallationContext::Guild]);
            for o in options(c.name) {
                let kind = match o.kind {
                    OptionKind::Flag => CommandOptionType::Boolean,
                    OptionKind::Count => CommandOptionType::Integer,
                    _ => CommandOptionType::String,
                };
                let mut option =
                    CreateCommandOption::new(kind, o.name, o.description).required(o.required);
                option = match o.kind {
                    OptionKind::Service | OptionKind::Scope => option.set_autocomplete(true),
                    OptionKind::Count => option.min_int_value(1).max_int_value(MAX_AUDIT as u64),
                    OptionKind::CommandName => COMMANDS
                        .iter()
                        .fold(option, |o, c| o.add_string_choice(c.name, c.name)),
                    OptionKind::Revision | OptionKind::Release | OptionKind::Duration => {
                        option.max_length(100)
                    }
                    OptionKind::Reason => option.max_length(500),
                    OptionKind::Fallback => {
                        option.max_length(crate::config_file::MAX_FALLBACK_NAME as u16)
                    }
                    OptionKind::Flag => option,
                };
                cmd = cmd.add_option(option);
            }
            let mut v = serde_json::to_value(cmd).expect("builders serialize");
            // Leave out the builder's empty option fields (`choices: []` next
            // to `autocomplete: true`, null limits): Discord's defaults.
            if let Some(opts) = v["options"].as_array_mut() {
                for o in opts.iter_mut().filter_map(|o| o.as_object_mut()) {
                    o.retain(|_, x| !(x.is_null() || x.as_array().is_some_and(|a| a.is_empty())));
                }
            }
            // Everyone may see every command; rollbot's roles decide who may
            // act. A server admin can narrow this in Server Settings →
            // Integrations without touching rollbot.
            v["default_member_permissions"] = serde_json::Value::Null;
            v
        })
        .collect();
    serde_json::Value::Array(commands)
}

/// `commands/discord-commands.json`.
pub fn application_commands_json() -> String {
    let mut s = serde_json::to_string_pretty(&application_commands()).expect("JSON");
    s.push('\n');
    s
}

fn text<'a>(opts: &'a [(String, OptionValue)], name: &str) -> Option<&'a str> {
    opts.iter().find_map(|(n, v)| match v {
        OptionValue::Str(s) if n == name && !s.trim().is_empty() => Some(s.trim()),
        _ => None,
    })
}

fn flag(opts: &[(String, OptionValue)], name: &str) -> bool {
    opts.iter()
        .any(|(n, v)| n == name && *v == OptionValue::Bool(true))
}

/// A Discord command and its typed options as a [`Command`], checked like
/// the text grammar (unknown services, globs, durations, counts).
pub fn to_command(
    name: &str,
    opts: &[(String, OptionValue)],
    services: &[&str],
) -> Result<Command, ParseError> {
    // Discord enforces the options' max_length in its client; the limits
    // are checked here as well, as for text commands.
    let reason = |cmd: &str| -> Result<String, ParseError> {
        let r = text(opts, "reason").unwrap_or_default();
        checked_reason(r, cmd)?;
        Ok(r.to_string())
    };
    let one_word = |what: &str, cmd: &str| -> Result<Option<String>, ParseError> {
        match text(opts, what) {
            Some(w) if w.contains(char::is_whitespace) => {
                Err(err(format!("the {what} is one word, such as v41"), cmd))
            }
            other => Ok(other.map(str::to_string)),
        }
    };
    match name {
        "rollback" if text(opts, "release").is_some() => {
            if text(opts, "service").is_some() || text(opts, "revision").is_some() {
                return Err(err(
                    "name a release or a service (with a revision), not both",
                    "rollback",
                ));
            }
            Ok(Command::RollbackRelease {
                release: super::release(text(opts, "release"))?,
                reason: reason("rollback")?,
            })
        }
        "rollback" if text(opts, "fallback").is_some() => {
            if text(opts, "release").is_some() || text(opts, "revision").is_some() {
                return Err(err(
                    "name a fallback or a revision or a release, not several",
                    "rollback",
                ));
            }
            Ok(Command::Fallback {
                service: service(text(opts, "service"), "rollback", services)?,
                name: text(opts, "fallback").unwrap_or_default().to_string(),
                reason: reason("rollback")?,
                dry_run: flag(opts, "dry_run"),
            })
        }
        "rollback" => Ok(Command::Rollback {
            service: service(text(opts, "service"), "rollback", services)?,
            to: one_word("revision", "rollback")?
                .map(|r| revision(&r, "rollback"))
                .transpose()?,
            force: flag(opts, "force"),
            reason: reason("rollback")?,
            dry_run: flag(opts, "dry_run"),
        }),
        "promote" => Ok(Command::Promote {
            service: service(text(opts, "service"), "promote", services)?,
            full: flag(opts, "full"),
            force: flag(opts, "force"),
            reason: reason("promote")?,
            dry_run: flag(opts, "dry_run"),
        }),
        "pause" => Ok(Command::Pause {
            service: service(text(opts, "service"), "pause", services)?,
            reason: reason("pause")?,
        }),
        "resume" => Ok(Command::Resume {
            service: service(text(opts, "service"), "resume", services)?,
            reason: reason("resume")?,
        }),
        "freeze" => Ok(Command::Freeze {
            scope: scope(text(opts, "scope"), "freeze", services)?,
            duration: text(opts, "duration").map(freeze_duration).transpose()?,
            reason: reason("freeze")?,
        }),
        "unfreeze" => Ok(Command::Unfreeze {
            scope: scope(text(opts, "scope"), "unfreeze", services)?,
        }),
        "auto" => {
            let enabled = flag(opts, "enabled");
            let duration = text(opts, "duration");
            if enabled && duration.is_some() {
                return Err(err(
                    "a duration is for switching automation off; leave it out with enabled = true",
                    "auto",
                ));
            }
            Ok(Command::Auto {
                service: service(text(opts, "service"), "auto", services)?,
                enabled,
                duration: duration.map(automation_duration).transpose()?,
                reason: if enabled {
                    String::new()
                } else {
                    reason("auto")?
                },
            })
        }
        "status" => Ok(Command::Status {
            service: text(opts, "service")
                .map(|s| service(Some(s), "status", services))
                .transpose()?,
        }),
        "audit" => {
            let last = opts
                .iter()
                .find_map(|(n, v)| match v {
                    OptionValue::Int(i) if n == "last" => Some(*i),
                    _ => None,
                })
                .unwrap_or(10);
            if !(1..=MAX_AUDIT as i64).contains(&last) {
                return Err(err(
                    format!("`last` needs a number from 1 to {MAX_AUDIT}"),
                    "audit",
                ));
            }
            Ok(Command::Audit {
                service: text(opts, "service")
                    .map(|s| service(Some(s), "audit", services))
                    .transpose()?,
                last: last as usize,
            })
        }
        "help" => Ok(Command::Help {
            command: text(opts, "command").map(help_topic),
        }),
        other => Err(unknown_command(other)),
    }
}

/// Autocomplete choices for a service or scope option: configured services
/// (and, for scopes, `all` and `ENV/*`) containing what was typed, at most 25.
pub fn complete(kind: OptionKind, typed: &str, services: &[(&str, &str)]) -> Vec<String> {
    let typed = typed.trim().to_lowercase();
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if s.to_lowercase().contains(&typed) && !out.contains(&s) {
            out.push(s);
        }
    };
    for (_, name) in services {
        push(name.to_string());
    }
    if kind == OptionKind::Scope {
        push("all".into());
        for (env, _) in services {
            push(format!("{env}/*"));
        }
    }
    out.truncate(25);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    const SERVICES: &[&str] = &["checkout", "payments"];

    fn s(v: &str) -> OptionValue {
        OptionValue::Str(v.into())
    }

    #[test]
    fn a_release_option_rolls_back_the_release() {
        let o = vec![
            ("release".to_string(), s("2026-12-06.1")),
            ("reason".to_string(), s("errors")),
        ];
        assert_eq!(
            to_command("rollback", &o, SERVICES).unwrap(),
            Command::RollbackRelease {
                release: "2026-12-06.1".into(),
                reason: "errors".into()
            }
        );
        let o = vec![
            ("release".to_string(), s("2026-12-06.1")),
            ("service".to_string(), s("checkout")),
        ];
        assert!(to_command("rollback", &o, SERVICES)
            .unwrap_err()
            .message
            .contains("not both"));
        // Without either, the service is asked for, as before.
        assert!(to_command("rollback", &[], SERVICES)
            .unwrap_err()
            .message
            .contains("/rollback needs a service"));
    }

    #[test]
    fn typed_options_become_commands() {
        let o = vec![
            ("service".to_string(), s("checkout")),
            ("reason".to_string(), s("to be safe")),
        ];
        // A reason starting with "to" is a reason, not a revision.
        assert_eq!(
            to_command("rollback", &o, SERVICES).unwrap(),
            Command::Rollback {
                service: "checkout".into(),
                to: None,
                force: false,
                reason: "to be safe".into(),
                dry_run: false,
            }
        );
        let o = vec![
            ("scope".to_string(), s("prod/*")),
            ("duration".to_string(), s("2h")),
        ];
        assert_eq!(
            to_command("freeze", &o, SERVICES).unwrap(),
            Command::Freeze {
                scope: Scope::Glob("prod/*".into()),
                duration: Some(std::time::Duration::from_secs(7200)),
                reason: String::new()
            }
        );
        let o = vec![
            ("service".to_string(), s("checkout")),
            ("full".to_string(), OptionValue::Bool(true)),
        ];
        assert!(matches!(
            to_command("promote", &o, SERVICES).unwrap(),
            Command::Promote {
                full: true,
                force: false,
                ..
            }
        ));
        let o = vec![
            ("service".to_string(), s("payments")),
            ("reason".to_string(), s("db maintenance")),
        ];
        assert_eq!(
            to_command("pause", &o, SERVICES).unwrap(),
            Command::Pause {
                service: "payments".into(),
                reason: "db maintenance".into()
            }
        );
        assert_eq!(
            to_command("resume", &o[..1], SERVICES).unwrap(),
            Command::Resume {
                service: "payments".into(),
                reason: String::new()
            }
        );
        let e = to_command("rollback", &[("service".into(), s("chekout"))], SERVICES).unwrap_err();
        assert!(e.message.contains("did you mean checkout?"), "{e}");
        let e = to_command(
            "freeze",
            &[("scope".into(), s("all")), ("duration".into(), s("90d"))],
            SERVICES,
        )
        .unwrap_err();
        assert!(e.message.contains("at most 30d"), "{e}");
        let e = to_command("audit", &[("last".into(), OptionValue::Int(0))], SERVICES).unwrap_err();
        assert!(e.message.contains("from 1 to 200"), "{e}");
    }

    #[test]
    fn revisions_and_lengths_are_checked_like_text_commands() {
        let rollback = |revision: &str, reason: &str| {
            to_command(
                "rollback",
                &[
                    ("service".to_string(), s("checkout")),
                    ("revision".to_string(), s(revision)),
                    ("reason".to_string(), s(reason)),
                ],
                SERVICES,
            )
        };
        let e = rollback("--force", "").unwrap_err();
        assert!(e.message.contains("starts with `-`"), "{e}");
        let e = rollback("v41", &"x".repeat(2_001)).unwrap_err();
        assert!(e.message.contains("at most 2,000"), "{e}");
        assert!(rollback("v41", &"x".repeat(2_000)).is_ok());
        let e = to_command(
            "freeze",
            &[
                ("scope".to_string(), s("all")),
                ("reason".to_string(), s(&"y".repeat(2_001))),
            ],
            SERVICES,
        )
        .unwrap_err();
        assert!(e.message.contains("the reason is 2,001 characters"), "{e}");
    }

    #[test]
    fn every_command_has_discord_shaped_definitions() {
        let v = application_commands();
        let cmds = v.as_array().unwrap();
        assert_eq!(cmds.len(), COMMANDS.len());
        for c in cmds {
            let name = c["name"].as_str().unwrap();
            assert!(name.len() <= 32 && name.chars().all(|ch| ch.is_ascii_lowercase()));
            let d = c["description"].as_str().unwrap();
            assert!(!d.is_empty() && d.chars().count() <= 100, "{name}: {d}");
            assert!(c
                .as_object()
                .unwrap()
                .contains_key("default_member_permissions"));
            // Every command takes at least one typed option: a command
            // added to the grammar without its options would be unusable.
            assert!(!options(name).is_empty(), "/{name} has no Discord options");
            let opts = c["options"].as_array().unwrap();
            // Required options come first, as Discord demands.
            let first_optional = opts.iter().position(|o| o["required"] != true);
            if let Some(i) = first_optional {
                assert!(opts[i..].iter().all(|o| o["required"] != true), "{name}");
            }
            for o in opts {
                assert!(o["description"].as_str().unwrap().chars().count() <= 100);
            }
        }
        let rollback = &cmds[0];
        assert_eq!(rollback["options"][0]["name"], "service");
        assert_eq!(rollback["options"][0]["type"], 3);
        assert_eq!(rollback["options"][0]["autocomplete"], true);
    }

    #[test]
    fn every_command_is_understood_from_its_options() {
        for c in COMMANDS {
            // The required options, or the first one where none is
            // required (`/rollback` takes a service or a release).
            let required = options(c.name).iter().any(|o| o.required);
            let o: Vec<(String, OptionValue)> = options(c.name)
                .iter()
                .enumerate()
                .filter(|(i, o)| o.required || (!required && *i == 0 && c.name == "rollback"))
                .map(|(_, o)| {
                    let v = match o.kind {
                        Flag => OptionValue::Bool(false),
                        Count => OptionValue::Int(5),
                        _ => s("checkout"),
                    };
                    (o.name.to_string(), v)
                })
                .collect();
            if let Err(e) = to_command(c.name, &o, SERVICES) {
                panic!("/{} with its required options: {e}", c.name);
            }
        }
    }

    #[test]
    fn the_checked_in_discord_commands_are_current() {
        let file = include_str!("../../commands/discord-commands.json");
        assert_eq!(
            file,
            application_commands_json(),
            "commands/discord-commands.json is stale: run `cargo run -- commands discord-json > commands/discord-commands.json`"
        );
    }

    #[test]
    fn autocomplete_offers_matching_services_and_scopes() {
        let svcs = [
            ("prod", "checkout"),
            ("prod", "payments"),
            ("staging", "search"),
        ];
        assert_eq!(
            complete(OptionKind::Service, "CH", &svcs),
            vec!["checkout", "search"]
        );
        assert_eq!(
            complete(OptionKind::Scope, "", &svcs),
            vec![
                "checkout",
                "payments",
                "search",
                "all",
                "prod/*",
                "staging/*"
            ]
        );
    }
}
