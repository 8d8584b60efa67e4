//! A store in a schema of its own: `rollbot bench audit --store postgres`
//! measures on an empty log and drops it afterwards.

use super::{PgLink, PgStore};
use std::sync::Arc;
use std::time::Duration;

/// A store in a schema of its own, for measurements that must start empty
/// and leave nothing behind.
pub struct Scratch {
    url: String,
    schema: String,
    timeout: Duration,
}

/// Opens a store in a new `schema` of the database at `url`.
pub fn open_scratch(
    url: &str,
    schema: &str,
    timeout: Duration,
) -> anyhow::Result<(crate::store::Store, Scratch)> {
    anyhow::ensure!(
        schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "a scratch schema name is letters, digits and _"
    );
    let store = PgStore::open_in(url, timeout, Some(schema))?;
    Ok((
        crate::store::Store::new(Arc::new(store), timeout),
        Scratch {
            url: url.to_string(),
            schema: schema.to_string(),
            timeout,
        },
    ))
}

impl Scratch {
    /// Drops the schema and everything in it.
    pub fn drop_schema(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let link = PgLink::new(&self.url, self.timeout, rt.handle().clone(), None)?;
        let sql = format!("DROP SCHEMA \"{}\" CASCADE", self.schema);
        rt.block_on(async move {
            let c = link.connect().await?;
            c.batch_execute(&sql).await.map_err(|e| link.down(&e))
        })?;
        rt.shutdown_background();
        Ok(())
    }
}
