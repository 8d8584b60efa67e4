//! The value types every part of rollbot's configuration shares: durations,
//! cron lines, globs, time zones, secret references, and errors located at
//! their line and column, with the reading of a TOML file past its first
//! error.
//!
//! This module imports nothing else of rollbot, so every stage can use it
//! for its own section of the file without an import cycle: the file's
//! root (`crate::config_file::Config`) assembles the sections, each stage
//! (`backend`, `roles`, `freeze`, `leader`) owns its section's type and
//! checks. A test below holds that.

mod error;
mod read;
mod secret;
mod values;

pub use error::{closest, find_span, line_col, locate, ConfigError, ConfigErrors, LineIndex};
pub use read::{drop_echoes, read_all, Read, Skipped};
pub use secret::{EnvRef, SecretSource, SecretValue};
pub use values::{
    check_glob, every_service, parse_crontab, parse_duration, CronSchedule, GlobPattern,
    HumanDuration, TimeZone,
};

#[cfg(test)]
mod tests {
    /// The shared values must not depend on the stages that use them
    /// (`backend`, `roles`, `freeze`, `leader`), nor on anything else of
    /// rollbot: that dependency was a cycle, and a new backend had to edit
    /// this module to be configured.
    #[test]
    fn config_imports_nothing_of_the_product() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
        // Spelt in pieces so this test does not find itself.
        let paths = [["crate", "::"].concat(), ["super", "::", "super"].concat()];
        let mut offenders = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if paths.iter().any(|p| code.contains(p.as_str())) {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "src/config/ must not import the backends, roles, freezes, leader election or any \
             other part of rollbot; move the type or check next to its stage:\n{}",
            offenders.join("\n")
        );
    }
}
