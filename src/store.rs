//! The embedded store: one sled database holding the audit log and the state
//! that must survive a restart (freezes, prompts, idempotency records, actions
//! in flight).

use crate::audit::SledAuditStore;
use anyhow::Context;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;

pub struct Store {
    pub db: sled::Db,
    pub audit: Arc<SledAuditStore>,
    pub freezes: sled::Tree,
    pub prompts: sled::Tree,
    pub idempotency: sled::Tree,
    /// Actions between `requested` and their result, keyed by correlation id.
    pub inflight: sled::Tree,
    /// Per-service switches and other small state.
    pub settings: sled::Tree,
}

/// sled settings for rollbot's store, shared by `serve`, the CLI and the
/// benchmark so measured figures are the ones users get.
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        // sled's page cache (an upper bound, not an allocation).
        .cache_capacity(512 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let db = sled_config(path)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
                    anyhow::anyhow!(
                        "the store at {} is in use by another rollbot process; stop it or point [store] path elsewhere",
                        path.display()
                    )
                }
                other => anyhow::anyhow!("cannot open the store at {}: {other}", path.display()),
            })?;
        let audit = Arc::new(SledAuditStore::open(&db).context("opening the audit log")?);
        Ok(Store {
            freezes: db.open_tree("freezes")?,
            prompts: db.open_tree("prompts")?,
            idempotency: db.open_tree("idempotency")?,
            inflight: db.open_tree("inflight")?,
            settings: db.open_tree("settings")?,
            audit,
            db,
        })
    }

    pub async fn flush(&self) -> anyhow::Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// JSON values in a sled tree.
pub fn put<T: Serialize>(tree: &sled::Tree, key: &str, value: &T) -> anyhow::Result<()> {
    tree.insert(key.as_bytes(), serde_json::to_vec(value)?)?;
    Ok(())
}

pub fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> anyhow::Result<Option<T>> {
    match tree.get(key.as_bytes())? {
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        None => Ok(None),
    }
}

pub fn all<T: DeserializeOwned>(tree: &sled::Tree) -> anyhow::Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        out.push((
            String::from_utf8_lossy(&k).into_owned(),
            serde_json::from_slice(&v)?,
        ));
    }
    Ok(out)
}
