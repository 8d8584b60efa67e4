//! The source stays easy to extend: the shared config values import no
//! stage, no file grows past 1,000 lines and no function past 150, and a
//! backend is listed in one place. These read the source tree as text.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn shared_config_values_import_no_stage() {
    let stages = [
        "crate::backend",
        "crate::roles",
        "crate::freeze",
        "crate::leader",
    ];
    let mut found = Vec::new();
    for f in rust_files(&src().join("config")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(s) = stages.iter().find(|s| line.contains(*s)) {
                found.push(format!("{}:{}: {s}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/config imports a stage:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_over_1000_lines_and_no_function_over_150() {
    let mut long = Vec::new();
    for f in rust_files(&src()) {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > 1000 {
            long.push(format!("{}: {} lines", f.display(), lines.len()));
        }
        // A function runs from its `fn` line to the first `}` at the same
        // indentation, as rustfmt lays it out.
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            let is_fn = ["fn ", "pub fn ", "async fn ", "pub async fn "]
                .iter()
                .chain(&["pub(crate) fn ", "pub(super) fn ", "pub(crate) async fn "])
                .any(|p| body.starts_with(p));
            if !is_fn || body.ends_with(';') {
                continue;
            }
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
                if end + 2 > 150 {
                    long.push(format!("{}:{}: {} lines", f.display(), i + 1, end + 2));
                }
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}

#[test]
fn each_backend_type_is_named_once_in_the_factory_list() {
    // The list in backend/mod.rs declares the module, the `type` and the
    // settings; nothing else under src/ may list backend types again.
    let list = std::fs::read_to_string(src().join("backend/mod.rs")).unwrap();
    let types: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_once(": \"")?.1.split_once("\" =>"))
        .map(|(t, _)| t)
        .collect();
    assert!(types.len() >= 9, "factory list not found: {types:?}");
    for t in ["kubernetes-deployment", "argo-rollouts", "istio", "unleash"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let mut elsewhere = Vec::new();
    for f in rust_files(&src()) {
        if f.ends_with("backend/mod.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("pub mod argo_rollouts;") || text.contains("\"argo-rollouts\" =>") {
            elsewhere.push(f.display().to_string());
        }
    }
    assert!(
        elsewhere.is_empty(),
        "backend types listed again in {elsewhere:?}"
    );
}
