//! `/rollback <service> fallback "<name>" [dry-run] [reason…]`: one of a
//! stuck service's configured fallbacks, by name or position.

use super::{err, reason, take_dry_run, Command, ParseError};
use crate::limits;

/// `fallback "<name>" [dry-run] [reason…]` after `/rollback <service>`:
/// a name in double quotes (straight or typographic, as Slack may send
/// them), or one word, or a position.
pub(super) fn fallback(service: String, words: &[&str]) -> Result<Command, ParseError> {
    let usage = || {
        err(
            format!("`fallback` needs the fallback's name, for example `/rollback {service} fallback \"traffic to stable\"` (or its position: `fallback 1`)"),
            "rollback",
        )
    };
    let open = |w: &str| w.starts_with(['"', '“', '”']);
    let close = |w: &str| w.ends_with(['"', '“', '”']);
    let Some(first) = words.first() else {
        return Err(usage());
    };
    let (name, mut rest) = if open(first) {
        let end = words
            .iter()
            .enumerate()
            .position(|(i, w)| close(w) && (i > 0 || w.chars().count() > 1))
            .ok_or_else(|| {
                err(
                    "the fallback's name has no closing double quote",
                    "rollback",
                )
            })?;
        let joined = words[..=end].join(" ");
        let name: String = {
            let mut c = joined.chars();
            c.next();
            c.next_back();
            c.as_str().trim().to_string()
        };
        (name, &words[end + 1..])
    } else {
        (first.to_string(), &words[1..])
    };
    if name.is_empty() {
        return Err(usage());
    }
    limits::check_length(
        "the fallback's name",
        &name,
        crate::config_file::MAX_FALLBACK_NAME,
    )
    .map_err(|e| err(e, "rollback"))?;
    let dry_run = take_dry_run(&mut rest);
    Ok(Command::Fallback {
        service,
        name,
        reason: reason(rest, "rollback")?,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const SERVICES: &[&str] = &["checkout", "payments", "search"];

    #[test]
    fn rollback_fallback_names_a_fallback_in_quotes_or_one_word() {
        let fallback = |name: &str, reason: &str, dry_run: bool| Command::Fallback {
            service: "checkout".into(),
            name: name.into(),
            reason: reason.into(),
            dry_run,
        };
        assert_eq!(
            parse(
                "/rollback checkout fallback \"traffic  to stable\" istio is fine",
                SERVICES
            )
            .unwrap(),
            fallback("traffic to stable", "istio is fine", false)
        );
        // Slack may turn straight quotes into typographic ones.
        assert_eq!(
            parse("/rollback checkout fallback “flag off” dry-run", SERVICES).unwrap(),
            fallback("flag off", "", true)
        );
        assert_eq!(
            parse("/rollback checkout FALLBACK 2 still 5xx", SERVICES).unwrap(),
            fallback("2", "still 5xx", false)
        );
        assert_eq!(
            parse("/rollback checkout fallback \"canary\"", SERVICES).unwrap(),
            fallback("canary", "", false)
        );
        let e = parse("/rollback checkout fallback", SERVICES).unwrap_err();
        assert!(e.message.contains("needs the fallback's name"), "{e}");
        let e = parse("/rollback checkout fallback \"traffic to stable", SERVICES).unwrap_err();
        assert!(e.message.contains("no closing double quote"), "{e}");
        let e = parse("/rollback checkout fallback \"\"", SERVICES).unwrap_err();
        assert!(e.message.contains("needs the fallback's name"), "{e}");
        let long = format!("/rollback checkout fallback \"{}\"", "x".repeat(61));
        assert!(parse(&long, SERVICES).is_err());
    }
}
