//! `[backends.NAME]` with `type = "exec"`: its keys, the checks of the keys
//! that need more than their type (`env`, the names of rollbot's
//! environment variables a program may see; `supports`), the warning about
//! placeholders filled into a shell's `-c` script, and the constructor.

use super::{ExecBackend, PLACEHOLDERS, SET_BY_ROLLBOT, SUPPORTABLE, TARGET_PREFIX};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::config::{ConfigError, HumanDuration};
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

/// Runs a program per action.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Program to run (absolute path or on PATH).
    program: String,
    /// Arguments; `{action}`, `{service}`, `{environment}`, `{revision}`,
    /// `{reason}`, `{actor}`, `{correlation_id}`, `{full}` are filled in
    /// once, from the template only.
    #[serde(default)]
    args: Vec<String>,
    /// Time limit of one run.
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// Actions the program supports besides rollback, among `promote`,
    /// `pause`, `resume`, `preflight`, `verify`, `status`.
    #[serde(default)]
    supports: Vec<String>,
    /// Names of rollbot's environment variables the program sees; it
    /// gets nothing else from rollbot's environment (which holds its
    /// secrets) besides the `ROLLBOT_*` variables of the action.
    /// Default: PATH, HOME, LANG, LC_ALL, TZ.
    #[serde(default)]
    env: Option<Vec<String>>,
}

impl BackendSettings for ExecConfig {
    /// `supports` names actions the backend knows; `env` entries are
    /// variable names rollbot does not set itself.
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for s in &self.supports {
            if !SUPPORTABLE.contains(&s.as_str()) {
                errors.push(
                    cx.error(format!(
                        "`{s}` in `supports` is not an action the exec backend knows"
                    ))
                    .help(format!("use some of: {}", SUPPORTABLE.join(", "))),
                );
            }
        }
        let name = cx.name;
        for var in self.env.iter().flatten() {
            let at = |msg: String| cx.at(env_entry(cx.source, &cx.table, var), msg);
            if !is_variable_name(var) {
                errors.push(
                    at(format!(
                        "backend `{name}`: `{var}` in `env` is not an environment variable name"
                    ))
                    .help("write names such as \"KUBECONFIG\": letters, digits and `_`, not starting with a digit"),
                );
            } else if SET_BY_ROLLBOT.contains(&var.as_str()) || var.starts_with(TARGET_PREFIX) {
                errors.push(
                    at(format!(
                        "backend `{name}`: `{var}` in `env` is set by rollbot for each run"
                    ))
                    .help("leave it out; the program always gets ROLLBOT_ACTION, ROLLBOT_SERVICE, ROLLBOT_REVISION, ROLLBOT_REASON, … and ROLLBOT_TARGET_* for the action"),
                );
            }
        }
        errors
    }

    /// A shell's `-c` script with placeholders in it runs whatever a reason
    /// says as code; an `env` entry naming a variable the config reads a
    /// secret from hands that secret to the program.
    fn warnings(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        let (name, source, table) = (cx.name, cx.source, &cx.table);
        let (program, args) = (&self.program, &self.args);
        if let Some(i) = shell_script(program, args) {
            let found: Vec<&str> = PLACEHOLDERS
                .iter()
                .copied()
                .filter(|p| args[i].contains(&format!("{{{p}}}")))
                .collect();
            if let Some(first) = found.first() {
                let shell = Path::new(program)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(program);
                let listed = found
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let vars = found
                    .iter()
                    .map(|p| format!("\"${}\"", variable_of(p)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let span = find_in(source, table, &format!("{{{first}}}"), "args");
                warnings.push(
                    cx.at(span, format!(
                        "backend `{name}`: {listed} {} filled into the script `{shell} -c` runs, so a reason such as `$(…)` or `'; …` would run as shell code",
                        if found.len() == 1 { "is" } else { "are" }
                    ))
                    .help(format!(
                        "read the values from the environment in the script instead, in double quotes: {vars}"
                    )),
                );
            }
        }
        let secrets = secret_variables(source);
        for var in self.env.iter().flatten() {
            if secrets.contains(var) {
                warnings.push(
                    cx.at(env_entry(source, table, var), format!(
                        "backend `{name}`: `env` passes {var} to the program, and this config reads a secret from it (\"${{{var}}}\")"
                    ))
                    .help("remove it from `env` unless the program needs that secret"),
                );
            }
        }
        warnings
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        let t = self
            .timeout
            .map(|t| t.0)
            .unwrap_or(Duration::from_secs(300));
        let mut exec = ExecBackend::new(
            self.program.clone(),
            self.args.clone(),
            t,
            self.supports.clone(),
        );
        if let Some(env) = &self.env {
            exec = exec.with_env(env.clone());
        }
        exec.into()
    }
}

/// Programs that run their `-c` argument as shell code.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh",
];

fn is_variable_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `ROLLBOT_*` variable holding a placeholder's value.
fn variable_of(placeholder: &str) -> String {
    match placeholder {
        "full" => "ROLLBOT_PROMOTE".into(),
        p => format!("ROLLBOT_{}", p.to_uppercase()),
    }
}

/// The index of the script in `args` when `program` is a shell run with
/// `-c` (alone or in a cluster such as `-ec`), directly or through `env`.
fn shell_script(program: &str, args: &[String]) -> Option<usize> {
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(p)
            .to_string()
    };
    let mut i = 0;
    let mut shell = base(program);
    if shell == "env" {
        while args
            .get(i)
            .is_some_and(|a| a.starts_with('-') || a.contains('='))
        {
            i += 1;
        }
        shell = base(args.get(i)?);
        i += 1;
    }
    if !SHELLS.contains(&shell.as_str()) {
        return None;
    }
    let mut command = false;
    while let Some(a) = args.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        if !(a.starts_with('-') || a.starts_with('+')) || a.len() < 2 {
            break;
        }
        if !a.starts_with("--") && a[1..].contains('c') {
            command = true;
        }
        // `-o pipefail`: the option's value is not the script.
        if matches!(a.as_str(), "-o" | "+o" | "-O" | "+O") {
            i += 1;
        }
        i += 1;
    }
    (command && i < args.len()).then_some(i)
}

/// Names written as `"${NAME}"` in the config: where its secrets come from.
fn secret_variables(source: &str) -> Vec<String> {
    source
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(n, _)| n))
        .filter(|n| is_variable_name(n))
        .map(str::to_string)
        .collect()
}

/// Where `"VAR"` is written in the backend's `env` list.
fn env_entry(source: &str, table: &Range<usize>, var: &str) -> Range<usize> {
    find_in(source, table, &format!("\"{var}\""), "env")
}

/// The first `needle` after `key =` inside the backend's table; else the
/// key; else the table.
fn find_in(source: &str, table: &Range<usize>, needle: &str, key: &str) -> Range<usize> {
    let Some(text) = source.get(table.clone()) else {
        return table.clone();
    };
    let key_at = text
        .match_indices(key)
        .find(|(i, _)| {
            let before = text[..*i].chars().next_back();
            let after = text[i + key.len()..].trim_start();
            before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',')
                && after.starts_with('=')
        })
        .map(|(i, _)| i);
    match key_at {
        Some(k) => match text[k..].find(needle) {
            Some(n) => table.start + k + n..table.start + k + n + needle.len(),
            None => table.start + k..table.start + k + key.len(),
        },
        None => table.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shell_scripts_are_found_behind_options_and_env() {
        assert_eq!(shell_script("sh", &args(&["-c", "x {reason}"])), Some(1));
        assert_eq!(
            shell_script("/bin/bash", &args(&["-e", "-o", "pipefail", "-c", "x"])),
            Some(4)
        );
        assert_eq!(shell_script("bash", &args(&["-ec", "x"])), Some(1));
        assert_eq!(
            shell_script("/usr/bin/env", &args(&["LC_ALL=C", "zsh", "-c", "x"])),
            Some(3)
        );
        assert_eq!(shell_script("sh", &args(&["deploy.sh", "{reason}"])), None);
        assert_eq!(shell_script("bash", &args(&["--rcfile", "x"])), None);
        assert_eq!(shell_script("deploy", &args(&["-c", "{reason}"])), None);
        assert_eq!(shell_script("sh", &args(&["-c"])), None);
    }

    #[test]
    fn variable_names_and_secret_references() {
        assert!(is_variable_name("KUBECONFIG") && is_variable_name("_x1"));
        assert!(!is_variable_name("1X") && !is_variable_name("MY-VAR") && !is_variable_name(""));
        assert_eq!(
            secret_variables("a = \"${SLACK_TOKEN}\"\nb = \"${ bad }\"\nc = \"${API}\""),
            vec!["SLACK_TOKEN", "API"]
        );
        assert_eq!(variable_of("reason"), "ROLLBOT_REASON");
        assert_eq!(variable_of("full"), "ROLLBOT_PROMOTE");
    }
}
