//! The report loop (SPEC 7): every second this node tells the cluster, through the shared
//! store's directory of nodes (`store::redis::nodes`, which keeps each report as text), which
//! viewer ports it has and how loaded they are, with its latest operator's figures, and learns
//! the other live nodes' reports. What a report holds, and what is done with the others', is
//! decided here; the store only keeps them and says which are live.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Cluster, PortLoad};
use crate::ops::{NodeSample, Ops, Sample};
use crate::store::redis::nodes::NodesConn;

/// How often a node reports (the store forgets a node silent for a few of these).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NodeLoad {
    /// Random per process.
    node: String,
    ports: Vec<PortLoad>,
    /// Its HTTP address and latest figures, for the operator's views (`/ops`, `top`).
    #[serde(default)]
    http: String,
    #[serde(default)]
    sample: Option<Sample>,
}

/// Tells the cluster, every second, which viewer ports this node has and how loaded they are
/// (`here`: as its transports count them now), and learns the other live nodes' (for
/// `/1/checkin`, `full` and `bye shutdown`). Leaves the cluster's view as soon as the node
/// starts stopping (`shutdown`), but goes on learning the others until HTTP stops (`stopped`):
/// a draining node names them in its goodbyes for the whole window, and counts what it sent
/// each until their reports show it arrived.
pub(crate) async fn report_load(
    nodes: NodesConn,
    cluster: Arc<Cluster>,
    here: impl Fn() -> Vec<PortLoad> + Send + 'static,
    ops: Arc<Ops>,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    let me = ops.node.clone();
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut left = false;
    loop {
        tokio::select! {
            biased;
            _ = stopped.cancelled() => break,
            _ = shutdown.cancelled(), if !left => {
                left = true;
                if let Err(e) = nodes.leave(&me).await {
                    tracing::debug!(error = %e, "could not leave the cluster's view");
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if !left {
            let load = NodeLoad {
                node: me.clone(),
                ports: here(),
                http: ops.http.clone(),
                sample: ops.latest(),
            };
            // Failures show on /readyz through the store; the next tick tries again.
            // Meanwhile this node cannot tell which others are alive: it names none.
            let reported = match serde_json::to_string(&load) {
                Ok(json) => nodes.report(&me, &json).await.is_ok(),
                Err(_) => false,
            };
            if !reported {
                cluster.set_others(Vec::new());
                continue;
            }
        }
        if let Ok(live) = nodes.live().await {
            let others: Vec<NodeLoad> = live
                .iter()
                .filter_map(|report| serde_json::from_str::<NodeLoad>(report).ok())
                .filter(|n| n.node != me)
                .collect();
            ops.set_others(
                others
                    .iter()
                    .filter_map(|n| {
                        let sample = n.sample.clone()?;
                        Some(NodeSample { node: n.node.clone(), http: n.http.clone(), sample })
                    })
                    .collect(),
            );
            let others = others.into_iter().flat_map(|n| n.ports).collect();
            if left {
                cluster.set_others_draining(others);
            } else {
                cluster.set_others(others);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written_and_older_reports_still_read() {
        let load = NodeLoad {
            node: "a".into(),
            ports: vec![PortLoad {
                host: "10.0.0.1".into(),
                port: 9100,
                viewers: 3,
                capacity: 10,
                web_port: Some(8080),
            }],
            http: "10.0.0.1:8080".into(),
            sample: Some(Sample { matches_live: 2, ..Default::default() }),
        };
        let json = serde_json::to_string(&load).unwrap();
        assert_eq!(serde_json::from_str::<NodeLoad>(&json).unwrap(), load);
        // A node of an earlier version reports neither its HTTP address nor a sample.
        let old = r#"{"node":"b","ports":[{"host":"h","port":1,"viewers":0,"capacity":5}]}"#;
        let old: NodeLoad = serde_json::from_str(old).unwrap();
        assert_eq!((old.http.as_str(), old.sample, old.ports[0].web_port), ("", None, None));
    }
}
