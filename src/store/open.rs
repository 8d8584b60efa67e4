//! Opening a sled database so that every way it can fail is a clear error:
//! in use by another process, damaged (sled panics while reading a
//! truncated log), or on a full disk.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::Path;

thread_local! {
    /// While set, a panic on this thread is captured here instead of printed.
    static CAPTURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let at = info
                            .location()
                            .map(|l| {
                                let file = Path::new(l.file())
                                    .file_name()
                                    .map(|f| f.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                format!(" in {file}:{}", l.line())
                            })
                            .unwrap_or_default();
                        let msg = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".into());
                        *slot = Some(format!("{msg}{at}"));
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic inside the storage engine into an error that
/// says the store at `path` is damaged and what to do.
pub fn no_panic<T>(path: &Path, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    install_hook();
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    let msg = CAPTURE.with(|c| c.borrow_mut().take().flatten());
    r.map_err(|_| {
        anyhow::anyhow!(
            "the store at {} is damaged: its database cannot be read ({}). rollbot does not act on a damaged store. \
             Restore the directory from a backup; every audit entry is also in rollbot's log (target rollbot::audit, one JSON entry each) if you need to rebuild the trail",
            path.display(),
            msg.unwrap_or_else(|| "the storage engine stopped".into())
        )
    })
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    InUse(String),
}

/// Opens the sled database at `path`.
pub fn open_sled(path: &Path, cache_bytes: u64) -> anyhow::Result<sled::Db> {
    let cfg = super::sled_store::sled_config(path, cache_bytes);
    match no_panic(path, || cfg.open())? {
        Ok(db) => Ok(db),
        Err(sled::Error::Io(io)) if io.raw_os_error() == Some(libc::ENOSPC) => {
            Err(OpenError::DiskFull(format!(
                "the store at {} cannot be opened: the disk is full ({io}). Free space on that disk; `rollbot audit verify` and `audit export` read a copy meanwhile",
                path.display()
            ))
            .into())
        }
        Err(e) => Err(describe(path, e)),
    }
}

/// Opens the store at `path` for a tool that only reads it. sled writes
/// while it opens and allows one process at a time, so on a full disk, or
/// while `rollbot serve` holds the store, a copy in a temporary directory on
/// another file system (memory-backed where there is one) is opened; the
/// store itself is not touched.
pub fn open_for_reading(path: &Path) -> anyhow::Result<(super::Store, Option<tempfile::TempDir>)> {
    match super::Store::open(path) {
        Ok(s) => Ok((s, None)),
        Err(e) if e.downcast_ref::<OpenError>().is_some() => {
            let why = match e.downcast_ref::<OpenError>() {
                Some(OpenError::DiskFull(_)) => "the disk under it is full",
                _ => "a running rollbot holds it",
            };
            let base = [Path::new("/dev/shm"), &std::env::temp_dir()]
                .into_iter()
                .find(|d| d.is_dir())
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir);
            let copy = tempfile::Builder::new()
                .prefix("rollbot-store-copy-")
                .tempdir_in(&base)
                .map_err(|c| {
                    anyhow::anyhow!("{e}; and no room for a copy in {}: {c}", base.display())
                })?;
            copy_dir(path, copy.path()).map_err(|c| {
                anyhow::anyhow!(
                    "{e}; copying it to {} failed too: {c}",
                    copy.path().display()
                )
            })?;
            eprintln!(
                "note: {why}; reading a copy of {} made in {} (the store itself is not changed)",
                path.display(),
                copy.path().display()
            );
            Ok((super::Store::open(copy.path())?, Some(copy)))
        }
        Err(e) => Err(e),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    // The head file first: it must never be newer than the database copied
    // after it, or the copy would look like it lost entries.
    let head = from.join("rollbot-audit-head");
    if head.exists() {
        std::fs::copy(&head, to.join("rollbot-audit-head"))?;
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "rollbot-audit-head" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn describe(path: &Path, e: sled::Error) -> anyhow::Error {
    match e {
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            OpenError::InUse(format!(
                "the store at {} is in use by another rollbot process; stop it or point [store] path elsewhere",
                path.display()
            ))
            .into()
        }
        sled::Error::Corruption { .. } => anyhow::anyhow!(
            "the store at {} is damaged ({e}). rollbot does not act on a damaged store; restore the directory from a backup",
            path.display()
        ),
        other => anyhow::anyhow!("cannot open the store at {}: {other}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_storage_engine_becomes_a_clear_error() {
        let e = no_panic(Path::new("/var/lib/rollbot"), || -> u32 {
            panic!("index out of bounds: the len is 3 but the index is 7")
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("the store at /var/lib/rollbot is damaged"),
            "{e}"
        );
        assert!(e.contains("index out of bounds"), "{e}");
        assert!(e.contains("Restore the directory from a backup"), "{e}");
        // Without a panic the value comes through.
        assert_eq!(no_panic(Path::new("x"), || 7).unwrap(), 7);
    }

    #[test]
    fn a_store_in_use_is_read_through_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let held = super::super::Store::open(dir.path()).unwrap();
        let e = super::super::Store::open(dir.path()).err().unwrap();
        assert!(
            e.to_string().contains("in use by another rollbot process"),
            "{e}"
        );
        let (copy, tmp) = open_for_reading(dir.path()).unwrap();
        assert!(tmp.is_some());
        assert_eq!(copy.audit_len(), 0);
        drop(held);
    }
}
