//! Reading a config file past its first error. serde stops at the first bad
//! value, so an inline secret would hide a bad member three tables further
//! down. To report every problem, the line at fault is commented out (one
//! byte, so every later position still points into the user's file) and the
//! file is read again, until it reads or an error cannot be stepped over: a
//! syntax error, a table header, a value over several lines.

use super::error::closest;
use super::{ConfigError, LineIndex};
use serde::de::DeserializeOwned;
use std::ops::Range;
use std::path::Path;

/// Each read is a pass over the whole file, so the reads are bounded: at
/// most this many, and at most `READ_BUDGET` bytes read in all (but always
/// two). A file with more errors shows the first ones and says so.
const MAX_READS: usize = 50;
const READ_BUDGET: usize = 4 << 20;

/// A line commented out to read past its error.
pub struct Skipped {
    /// Its key (the last part of a dotted key).
    key: String,
    /// The table it was in, from its header to the next one (byte offsets).
    table: Range<usize>,
}

pub struct Read<T> {
    /// The config with the skipped lines left out, when it could be read.
    pub config: Option<T>,
    pub errors: Vec<ConfigError>,
    pub skipped: Vec<Skipped>,
}

/// Reads `source` as a `T`, stepping over every line whose value is refused.
pub fn read_all<T: DeserializeOwned>(path: &Path, source: &str) -> Read<T> {
    let mut read = Read {
        config: None,
        errors: Vec::new(),
        skipped: Vec::new(),
    };
    // Text that is not TOML has no lines to step over.
    if let Err(e) = toml::from_str::<toml::Table>(source) {
        read.errors.push(from_toml(path, source, &e));
        return read;
    }
    let lines = LineIndex::new(source);
    let mut text = source.to_string();
    let reads = (READ_BUDGET / source.len().max(1)).clamp(2, MAX_READS);
    for _ in 0..reads {
        let e = match toml::from_str::<T>(&text) {
            Ok(c) => {
                read.config = Some(c);
                return read;
            }
            Err(e) => from_toml(path, &text, &e),
        };
        // A required key that is missing because its line was commented
        // out was reported already: the table that needs it goes too (a
        // `[[freeze.windows]]` element, say), so the rest of the file is
        // still read.
        let echo = e.message.starts_with("missing field")
            && read.skipped.iter().any(|s| s.contains(e.offset()));
        if echo {
            let Some(table) = read
                .skipped
                .iter()
                .find(|s| s.contains(e.offset()))
                .map(|s| s.table.clone())
            else {
                return read;
            };
            if !comment_out(&mut text, &lines, table) {
                return read;
            }
            continue;
        }
        let skipped = step_over(&mut text, &lines, e.offset());
        read.errors.push(e);
        match skipped {
            Some(s) => read.skipped.push(s),
            None => return read,
        }
    }
    read.errors.push(
        ConfigError::at(
            path,
            source,
            None,
            format!("reading stopped after the {reads} errors above; there may be more"),
        )
        .help("fix these and run check-config again"),
    );
    read
}

/// Drops what the checks of the whole file say about a line that was
/// commented out ("[chat.slack] needs bot_token" after an inline bot_token).
pub fn drop_echoes(checked: Vec<ConfigError>, skipped: &[Skipped]) -> Vec<ConfigError> {
    checked
        .into_iter()
        .filter(|e| {
            !skipped
                .iter()
                .any(|s| s.contains(e.offset()) && mentions(&e.message, &s.key))
        })
        .collect()
}

impl Skipped {
    fn contains(&self, offset: Option<usize>) -> bool {
        offset.is_some_and(|o| self.table.contains(&o))
    }
}

/// Comments out the `key = value` line at `offset`. Only a line that is a
/// whole `key = value` on its own (no value running on to the next lines)
/// can go without breaking the file.
fn step_over(text: &mut String, lines: &LineIndex, offset: Option<usize>) -> Option<Skipped> {
    let (line, _) = lines.line_col(offset?);
    let range = lines.line_range(line);
    let whole = text.get(range.clone())?;
    let t = whole.trim_start();
    if t.starts_with('[') || !t.starts_with(|c: char| c.is_ascii()) {
        return None;
    }
    toml::from_str::<toml::Table>(t)
        .ok()
        .filter(|kv| kv.len() == 1)?;
    let key = t.split_once('=')?.0.rsplit('.').next()?;
    let key = key.trim().trim_matches(['"', '\'']).to_string();
    let at = range.start + (whole.len() - t.len());
    text.replace_range(at..at + 1, "#");
    Some(Skipped {
        key,
        table: table_around(text, lines, line),
    })
}

/// Comments out every line of `table` that is not one already; false when
/// there was nothing left to comment out.
fn comment_out(text: &mut String, lines: &LineIndex, table: Range<usize>) -> bool {
    let (first, _) = lines.line_col(table.start);
    let (last, _) = lines.line_col(table.end.saturating_sub(1).max(table.start));
    let mut changed = false;
    for n in first..=last {
        let range = lines.line_range(n);
        let Some(line) = text.get(range.clone()) else {
            continue;
        };
        let t = line.trim_start();
        // One ASCII byte replaced, so every later offset still points into
        // the user's file.
        if t.is_empty() || t.starts_with('#') || !t.starts_with(|c: char| c.is_ascii()) {
            continue;
        }
        let at = range.start + (line.len() - t.len());
        text.replace_range(at..at + 1, "#");
        changed = true;
    }
    changed
}

/// The byte range of the table holding `line`: from its header (or the top
/// of the file) to the next header.
fn table_around(text: &str, lines: &LineIndex, line: usize) -> Range<usize> {
    let header = |n: usize| {
        text.get(lines.line_range(n))
            .is_some_and(|l| l.trim_start().starts_with('['))
    };
    let count = lines.line_col(text.len()).0;
    let first = (1..=line).rev().find(|&n| header(n)).unwrap_or(1);
    let end = (line + 1..=count)
        .find(|&n| header(n))
        .map(|n| lines.line_range(n).start)
        .unwrap_or(text.len());
    lines.line_range(first).start..end
}

/// Whether `message` names `key` as a word.
fn mentions(message: &str, key: &str) -> bool {
    !key.is_empty()
        && message.match_indices(key).any(|(i, _)| {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let before = message[..i].chars().next_back();
            let after = message[i + key.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
}

/// Some errors (inside tagged tables such as `[backends.NAME]`) come with the
/// span of the whole table; point at the key or value the message names.
fn narrow(source: &str, span: Range<usize>, message: &str) -> Range<usize> {
    let Some(table) = source.get(span.clone()) else {
        return span;
    };
    if !table.contains('\n') {
        return span;
    }
    let named = message.split('`').nth(1).unwrap_or("");
    if named.is_empty() {
        return span;
    }
    let mut offset = 0;
    for line in table.split_inclusive('\n') {
        let t = line.trim_start();
        let key_hit = t.starts_with(named) && t[named.len()..].trim_start().starts_with('=');
        let value_hit = line.contains(&format!("\"{named}\""));
        if key_hit || value_hit {
            let col = if key_hit {
                line.len() - t.len()
            } else {
                line.find(&format!("\"{named}\"")).unwrap_or(0)
            };
            let start = span.start + offset + col;
            return start..start + named.len();
        }
        offset += line.len();
    }
    span
}

/// Turns a TOML/serde error into a located one, adding a "did you mean"
/// for unknown keys.
fn from_toml(path: &Path, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let span = e.span().map(|s| narrow(source, s, &message));
    let mut err = ConfigError::at(path, source, span, message.clone());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            err = match closest(field, names.iter().copied()).first() {
                Some(best) => err.help(format!("did you mean `{best}`?")),
                None => err.help(format!(
                    "remove `{field}`; allowed keys here: {}",
                    names.join(", ")
                )),
            };
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        // "unknown variant `postgress`, expected `sled` or `postgres`"
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        err = match closest(value, names.iter().copied()).first() {
            Some(best) => err.help(format!("did you mean `{best}`?")),
            None => err.help("use one of the values listed"),
        };
    } else if message.contains("missing field") {
        err = err.help("add the missing key to this table");
    }
    err
}
