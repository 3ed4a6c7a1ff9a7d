//! The directory of the cluster's nodes (SPEC 7), the Redis I/O only: every node's latest
//! report (its viewer ports and their load, for `/1/checkin`, `full` and `bye shutdown`) in one
//! hash, stamped with Redis's own clock (so the nodes' clocks do not matter); a node silent for
//! [`LIVE_FOR`] is no longer live, and its entry is deleted after [`FORGET_AFTER`]. A report is
//! text the store keeps as is: what it holds is `crate::cluster`'s (its report loop).

use std::time::Duration;

use redis::Script;

use super::{keys, redis_err, Conn};
use crate::store::StoreError;

/// A node that has not reported for this long is not live any more (nodes report every second).
const LIVE_FOR: Duration = Duration::from_secs(3);
/// ... and its entry is deleted after this long.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Reports this node and reads the others.
#[derive(Clone)]
pub(crate) struct NodesConn {
    conn: Conn,
    report: Script,
    live: Script,
}

impl NodesConn {
    pub(super) fn new(conn: Conn) -> NodesConn {
        NodesConn { conn, report: Script::new(keys::REPORT), live: Script::new(keys::LIVE_NODES) }
    }

    /// Says this node (`node`) is alive, with its latest report.
    pub(crate) async fn report(&self, node: &str, report: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .report
            .key(keys::NODES)
            .arg(node)
            .arg(report)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    /// The latest report of every node that reported within [`LIVE_FOR`], this one included.
    pub(crate) async fn live(&self) -> Result<Vec<String>, StoreError> {
        let entries: Vec<String> = self
            .live
            .key(keys::NODES)
            .arg(LIVE_FOR.as_millis() as u64)
            .arg(FORGET_AFTER.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(entries)
    }

    /// Removes this node from the cluster's view (a node that drains or stops).
    pub(crate) async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("HDEL")
            .arg(keys::NODES)
            .arg(node)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err)?;
        Ok(())
    }
}
