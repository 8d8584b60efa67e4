//! `rollbot check-config` and `rollbot serve` refuse bad configuration with
//! the file, line, column and what to write instead.

use crate::support::{rollbot, text};

#[test]
fn the_shipped_configs_pass() {
    for f in ["config/rollbot.example.toml", "config/demo.toml"] {
        let o = rollbot(&["check-config", f]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(text(&o).contains(": ok ("), "{}", text(&o));
    }
}

#[test]
fn bad_config_lists_every_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[channels.deploys]\nconsole = \"#d\"\n\n[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"k8s\"\ndeploy_channel = \"deploy\"\n",
    )
    .unwrap();
    let o = rollbot(&["check-config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    let p = path.display();
    assert!(
        t.contains(&format!(
            "{p}:9:11: service `checkout` names backend `k8s`, which is not defined"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:10:18: service `checkout` names channel `deploy`, which is not defined"
        )),
        "{t}"
    );
    assert!(t.contains("help: did you mean `deploys`?"), "{t}");
    assert!(t.contains("2 errors in the configuration"), "{t}");
}

#[test]
fn serve_refuses_to_start_on_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n").unwrap();
    let o = rollbot(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains(":3:1: unknown field `lisen`")
            && t.contains("did you mean `listen`?")
            && t.contains("rollbot did not start"),
        "{t}"
    );
}

#[test]
fn a_missing_file_says_so() {
    let o = rollbot(&["check-config", "/nonexistent/rollbot.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot read the configuration file"),
        "{}",
        text(&o)
    );
}
