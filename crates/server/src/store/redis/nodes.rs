//! The cluster's viewer ports, for `/1/checkin`, `full` and `bye shutdown` (SPEC 7): every node
//! reports its ports and their load into one hash, stamped with Redis's own clock (so the
//! nodes' clocks do not matter); a node silent for [`LIVE_FOR`] is no longer named, and its
//! entry is deleted after [`FORGET_AFTER`].

use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{keys, redis_err, Conn};
use crate::store::StoreError;
pub use crate::transport::PortLoad;

/// How often a node reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A node that has not reported for this long is not named any more.
pub const LIVE_FOR: Duration = Duration::from_secs(3);
/// ... and its entry is deleted after this long.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Random per process.
    pub node: String,
    pub ports: Vec<PortLoad>,
    /// Its HTTP address and latest figures, for the operator's views (`/ops`, `top`).
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub sample: Option<crate::ops::Sample>,
}

/// Reports this node and reads the others.
#[derive(Clone)]
pub struct NodesConn {
    conn: Conn,
    report: Script,
    live: Script,
}

impl NodesConn {
    pub(super) fn new(conn: Conn) -> NodesConn {
        NodesConn { conn, report: Script::new(keys::REPORT), live: Script::new(keys::LIVE_NODES) }
    }

    /// Says this node is alive with this load.
    pub async fn report(&self, me: &NodeLoad) -> Result<(), StoreError> {
        let json = serde_json::to_string(me).map_err(|e| StoreError::Backend(e.to_string()))?;
        let _: i64 = self
            .report
            .key(keys::NODES)
            .arg(&me.node)
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    /// Every node that reported within [`LIVE_FOR`], this one included.
    pub async fn live(&self) -> Result<Vec<NodeLoad>, StoreError> {
        let entries: Vec<String> = self
            .live
            .key(keys::NODES)
            .arg(LIVE_FOR.as_millis() as u64)
            .arg(FORGET_AFTER.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(entries.iter().filter_map(|e| serde_json::from_str(e).ok()).collect())
    }

    /// Removes this node from the cluster's view (a node that drains or stops).
    pub async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("HDEL")
            .arg(keys::NODES)
            .arg(node)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(())
    }
}
