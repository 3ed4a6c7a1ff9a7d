//! Reaching Redis: one server (a connection manager that reconnects by itself) or a Redis
//! Cluster, behind one connection type, with timeouts that make a Redis that is down fail calls
//! fast.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Value};

use super::redis_err;
use crate::store::StoreError;

/// How long a command may take before the call fails (Redis down or stuck).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The two ways to reach Redis, behind one connection type.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis URL as it may be shown in a log line or an error (its passwords masked).
pub(super) use crate::config::redacted_url as redacted;

/// The addresses to reach, parsed from the URL.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, StoreError> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|hp| format!("redis://{}", hp.trim_end_matches('/')))
                .collect();
            if nodes.is_empty() {
                return Err(StoreError::Backend(format!(
                    "--redis {}: name at least one cluster node (redis+cluster://host:port,...)",
                    redacted(url)
                )));
            }
            Ok(Target::Cluster(nodes))
        } else if url.starts_with("redis://") {
            Ok(Target::Single(url.to_owned()))
        } else {
            Err(StoreError::Backend(format!(
                "--redis {}: expected redis://host:port or redis+cluster://host:port,...",
                redacted(url)
            )))
        }
    }

    /// Every address a pub/sub connection may use, in order of preference.
    pub(super) fn addresses(&self) -> Vec<String> {
        match self {
            Target::Single(url) => vec![url.clone()],
            Target::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// Connects to one server (reconnecting by itself) or to a cluster.
pub(super) async fn connect(target: &Target) -> Result<Conn, StoreError> {
    match target {
        Target::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(redis_err)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let conn = client.get_connection_manager_with_config(config).await.map_err(|e| {
                StoreError::Backend(format!("cannot reach redis at {}: {e}", redacted(url)))
            })?;
            Ok(Conn::Single(conn))
        }
        Target::Cluster(nodes) => {
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2)
                .build()
                .map_err(redis_err)?;
            let conn = client.get_async_connection().await.map_err(|e| {
                StoreError::Backend(format!(
                    "cannot reach the redis cluster {}: {e}",
                    redacted(&nodes.join(","))
                ))
            })?;
            Ok(Conn::Cluster(conn))
        }
    }
}
