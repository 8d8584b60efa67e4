//! What people may send: the longest reason, revision, scope, command,
//! idempotency key and API body rollbot accepts, and what a revision may
//! look like. Everything over a limit is refused with the limit named,
//! before the engine sees it, so nothing oversized reaches the audit log.

/// A reason: enough for a paragraph and a link to the incident document.
pub const MAX_REASON: usize = 2_000;
/// A revision: a tag, a commit or an image reference (Discord's option
/// limit is the same).
pub const MAX_REVISION: usize = 100;
/// A service name or a freeze scope (a glob such as `prod/*`).
pub const MAX_SCOPE: usize = 200;
/// A whole command's text (`/rollback checkout to v41 reason…`), as Slack,
/// Discord and `POST /api/v1/actions` deliver it.
pub const MAX_COMMAND: usize = 4_000;
/// An idempotency key sent to `POST /api/v1/actions`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;
/// The body of `POST /api/v1/actions` and `POST /api/v1/rollouts`, in bytes.
pub const MAX_API_BODY: usize = 64 * 1024;

/// `1,234`: limits and lengths as people read them.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Refuses `text` when it has more than `max` characters; `what` names it
/// in the message ("the reason").
pub fn check_length(what: &str, text: &str, max: usize) -> Result<(), String> {
    // Counting stops just past the limit, so a huge text costs no more.
    let n = text.chars().take(max + 1).count();
    if n > max {
        let total = text.chars().count();
        return Err(format!(
            "{what} is {} characters long; rollbot accepts at most {}",
            thousands(total),
            thousands(max)
        ));
    }
    Ok(())
}

/// Characters a revision may have besides ASCII letters and digits.
pub const REVISION_PUNCTUATION: &str = "._-:/@+";

/// A revision is a name (`v41`, `1.2.3+build.7`, `a1b2c3d`,
/// `registry/app@sha256:…`), never an option or shell text: letters,
/// digits and `. _ - : / @ +`, not starting with `-`. Programs and
/// commits get it as one argument, so `--force` must not get through.
/// A release is a name such as `2026-12-06.1`: letters, digits and
/// `. _ - :`, at most [`MAX_REVISION`] characters, not starting with `-`.
pub fn check_release(release: &str) -> Result<(), String> {
    check_length("the release", release, MAX_REVISION)?;
    let shown: String = release.chars().take(40).collect();
    if release.is_empty() {
        return Err("the release is empty; name one, such as 2026-12-06.1".into());
    }
    if release.starts_with('-')
        || !release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(format!(
            "the release `{shown}` is not a release name; write letters, digits and . _ - : (not starting with -), such as 2026-12-06.1"
        ));
    }
    Ok(())
}

pub fn check_revision(revision: &str) -> Result<(), String> {
    check_length("the revision", revision, MAX_REVISION)?;
    let shown: String = revision.chars().take(40).collect();
    if revision.is_empty() {
        return Err("the revision is empty; name one, such as v41".into());
    }
    if revision.starts_with('-') {
        return Err(format!(
            "the revision `{shown}` starts with `-`, like an option; a revision is a name such as v41, a tag or a commit"
        ));
    }
    if let Some(bad) = revision
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || REVISION_PUNCTUATION.contains(*c)))
    {
        let bad = if bad.is_whitespace() || bad.is_control() {
            format!("{:?}", bad)
        } else {
            format!("`{bad}`")
        };
        return Err(format!(
            "the revision `{shown}` contains {bad}; a revision has only letters, digits and . _ - : / @ +"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_names_not_options() {
        for ok in [
            "v41",
            "1.2.3+build.7",
            "a1b2c3d",
            "ghcr.io/acme/app@sha256:0f3a",
            "release_2024-11",
        ] {
            assert_eq!(check_revision(ok), Ok(()), "{ok}");
        }
        let e = check_revision("--force").unwrap_err();
        assert!(e.contains("starts with `-`"), "{e}");
        let e = check_revision("v41;reboot").unwrap_err();
        assert!(e.contains("contains `;`"), "{e}");
        let e = check_revision("{reason}").unwrap_err();
        assert!(e.contains("contains `{`"), "{e}");
        let e = check_revision("v4\n1").unwrap_err();
        assert!(e.contains("'\\n'"), "{e}");
        let e = check_revision(&"v".repeat(101)).unwrap_err();
        assert_eq!(
            e,
            "the revision is 101 characters long; rollbot accepts at most 100"
        );
    }

    #[test]
    fn lengths_are_counted_in_characters_and_named() {
        assert_eq!(
            check_length("the reason", &"é".repeat(2_000), MAX_REASON),
            Ok(())
        );
        assert_eq!(
            check_length("the reason", &"é".repeat(2_345), MAX_REASON).unwrap_err(),
            "the reason is 2,345 characters long; rollbot accepts at most 2,000"
        );
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(65_536), "65,536");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
