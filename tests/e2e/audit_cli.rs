//! The audit log survives a restart, exports, and `rollbot audit verify`
//! catches an edited byte, a deleted entry and a swapped pair.

use crate::support::audit;
use crate::support::{demo, rollbot, text};
use std::path::{Path, PathBuf};

/// A store with a few entries, written by the demo.
fn store_with_entries(dir: &Path) -> PathBuf {
    let script = dir.join("script.txt");
    std::fs::write(&script, "/as dana\n/rollback checkout\n/as you\n/freeze payments for 1h db migration\n/rollback payments bad deploy\n/promote payments\n/unfreeze payments\n").unwrap();
    let data = dir.join("data");
    let o = demo(&script, &data);
    assert!(o.status.success(), "{}", text(&o));
    data
}

pub(crate) fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn verify(data: &Path) -> (Option<i32>, String) {
    let o = rollbot(&["audit", "verify", "--data", data.to_str().unwrap()]);
    (o.status.code(), text(&o))
}

pub(crate) fn tamper(data: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(data).unwrap();
    let tree = db.open_tree("audit").unwrap();
    f(&tree);
    db.flush().unwrap();
}

pub(crate) fn fresh_copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let sub = dst.join(e.file_name());
            std::fs::create_dir_all(&sub).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

#[test]
fn survives_restart_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_with_entries(dir.path());
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    let n: u64 = out
        .split("intact: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // refused rollback 1, freeze 2, rollback 2, refused promote 1, unfreeze 2
    assert_eq!(n, 8, "{out}");
    // A second run appends after the first run's entries.
    let o = demo(Path::new("/dev/null"), &data);
    assert!(o.status.success());
    let list = audit::list(&data, &["--actor", "console:dana"]);
    assert!(
        list.contains("rollback checkout by dana — refused"),
        "{list}"
    );
    let jsonl = rollbot(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--data",
        data.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8(jsonl.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    let freeze = lines
        .iter()
        .find(|l| l["action"] == "freeze" && l["outcome"] == "succeeded")
        .expect("freeze entry");
    assert_eq!(freeze["reason"], "db migration");
    assert_eq!(freeze["actor"]["id"], "you");
    let csv = String::from_utf8(
        rollbot(&[
            "audit",
            "export",
            "--format",
            "csv",
            "--data",
            data.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    assert!(
        csv.starts_with(
            "seq,time,actor_platform,actor_id,actor_name,action,service,parameters,outcome,reason"
        ),
        "{csv}"
    );
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len() as u64, n);
    assert_eq!(&records[0][0], "1");
    assert_eq!(&records[0][14], lines[0]["hash"].as_str().unwrap());
}

#[test]
fn verify_names_the_first_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_with_entries(dir.path());

    let flipped = fresh_copy(&data, dir.path(), "flipped");
    tamper(&flipped, |t| {
        let mut v = t.get(entry_key(3)).unwrap().unwrap().to_vec();
        let i = v.iter().rposition(|b| *b == b'd').unwrap(); // a letter inside the body
        v[i] = b'D';
        t.insert(entry_key(3), v).unwrap();
    });
    let (code, out) = verify(&flipped);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "first bad entry is #3: its hash does not match its contents (the entry was edited)"
        ),
        "{out}"
    );

    let deleted = fresh_copy(&data, dir.path(), "deleted");
    tamper(&deleted, |t| {
        t.remove(entry_key(5)).unwrap();
    });
    let (code, out) = verify(&deleted);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("first bad entry is #5: missing: the log jumps from #4 to #6"),
        "{out}"
    );

    let swapped = fresh_copy(&data, dir.path(), "swapped");
    tamper(&swapped, |t| {
        let a = t.get(entry_key(6)).unwrap().unwrap();
        let b = t.get(entry_key(7)).unwrap().unwrap();
        t.insert(entry_key(6), b).unwrap();
        t.insert(entry_key(7), a).unwrap();
    });
    let (code, out) = verify(&swapped);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("first bad entry is #6: stored at #6 but its contents say #7"),
        "{out}"
    );

    let truncated = fresh_copy(&data, dir.path(), "truncated");
    tamper(&truncated, |t| {
        let last = t.scan_prefix([b'e']).next_back().unwrap().unwrap().0;
        t.remove(last).unwrap();
    });
    let (code, out) = verify(&truncated);
    assert_eq!(code, Some(1));
    assert!(out.contains("entries deleted from the end"), "{out}");

    // The untouched original still verifies.
    assert_eq!(verify(&data).0, Some(0));
}

/// Runs rollbot with its standard output going to a pipe nobody reads any
/// more, as in `rollbot audit export | head` once `head` has its lines.
fn into_closed_pipe(args: &[&str]) -> std::process::Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors, each owned once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    std::process::Command::new(crate::support::bin())
        .args(args)
        .env("ROLLBOT_LOG", "warn")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap()
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_with_entries(dir.path());
    let data = data.to_str().unwrap();
    for args in [
        vec!["audit", "export", "--data", data],
        vec!["audit", "export", "--format", "csv", "--data", data],
        vec!["audit", "list", "--data", data],
        vec!["audit", "verify", "--data", data],
    ] {
        let o = into_closed_pipe(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {:?} {err}", o.status);
        assert!(err.trim().is_empty(), "{args:?}: {err}");
    }
}
