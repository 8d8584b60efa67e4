//! Config errors that point at the place to fix: file, line, column, what is
//! wrong and what to write instead.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What to write instead, when there is a good suggestion.
    pub help: Option<String>,
    /// The byte offset in the file until [`locate`] turns it into `line`
    /// and `column`.
    offset: Option<usize>,
}

impl ConfigError {
    /// An error at `span` of the config text. Its line and column are filled
    /// in by [`locate`], once for all errors of a file: finding each one from
    /// the start of the file made 20,000 errors take seconds.
    pub fn at(
        file: &Path,
        _source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: message.into(),
            help: None,
            offset: span.map(|s| s.start),
        }
    }

    /// The byte offset this error points at, if any.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// [`ConfigError::help`] when there is one.
    pub fn maybe_help(self, help: Option<String>) -> Self {
        match help {
            Some(h) => self.help(h),
            None => self,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.help {
            write!(f, "\n    help: {h}")?;
        }
        Ok(())
    }
}

/// All errors found in one config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in the configuration",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(source).line_col(offset)
}

/// Where each line of a file starts, to find many positions in one pass.
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map(|t| t.chars().count())
            .unwrap_or(offset - start);
        (line, column + 1)
    }

    /// The byte range of the 1-based `line`, without its newline.
    pub fn line_range(&self, line: usize) -> Range<usize> {
        let start = self.starts[line - 1];
        let end = self
            .starts
            .get(line)
            .map(|n| n - 1)
            .unwrap_or(self.source.len());
        start..end
    }
}

/// Fills in the line and column of every error from its offset.
pub fn locate(errors: &mut [ConfigError], source: &str) {
    let index = LineIndex::new(source);
    for e in errors {
        if let Some(offset) = e.offset {
            (e.line, e.column) = index.line_col(offset);
        }
    }
}

/// The span of a `[section]` header, for errors about a whole table.
pub fn find_span(source: &str, section: &str) -> Option<Range<usize>> {
    for header in [format!("[{section}]"), format!("[[{section}]]")] {
        if let Some(i) = source.find(&header) {
            return Some(i..i + header.len());
        }
    }
    None
}

/// The closest candidates to a misspelt name, best first.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(s, _)| *s >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, c)| c).take(3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 8), (2, 3));
        assert_eq!(line_col(src, src.len()), (3, 1));
        let index = LineIndex::new(src);
        assert_eq!(index.line_range(2), 6..12);
        assert_eq!(&src[index.line_range(1)], "a = 1");
    }

    #[test]
    fn closest_names() {
        let names = ["checkout", "payments", "search"];
        assert_eq!(closest("chekout", names), vec!["checkout"]);
        assert!(closest("zzz", names).is_empty());
    }
}
