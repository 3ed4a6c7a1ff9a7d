//! Viewer transports: how viewers connect and receive their match. `tcp.rs` serves the plain TCP
//! protocols v1 and v2 (SPEC 4), `web.rs` WebSocket and SSE on the HTTP port (SPEC 5); once
//! joined, every viewer is followed by `viewer.rs` and parked at the live edge by `park.rs`, and
//! written to through `write.rs`. Transports see the hub, never the store. This file keeps the
//! viewer ports and their load (viewers that joined a match, nothing else; connections still
//! sending their connect line have their own `crate::budget`); `close.rs` is how every
//! transport closes a connection it ends (without a reset).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::hub::Format;
use crate::locks::{read, write};
use crate::telemetry::{Left, Metrics};
use crate::wire::ByeReason;

pub mod close;
mod park;
pub mod tcp;
pub mod viewer;
pub mod web;
mod write;

/// One viewer port and how many viewers it holds.
#[derive(Debug)]
pub struct Port {
    /// `host:port` as viewers should dial it.
    pub advertised: (String, u16),
    viewers: AtomicUsize,
}

/// The node's viewer ports: their load, for `/1/checkin`, for `full` answers and for metrics.
#[derive(Debug)]
pub struct ViewerPorts {
    ports: Vec<Port>,
    /// Most viewers one port holds: the node's limit shared evenly between its ports.
    per_port: usize,
    /// The other live nodes' ports, with their load, as last reported through the shared
    /// store (empty for a node on its own).
    others: RwLock<Vec<Other>>,
    /// Nodes sending viewers to the others as of the last report: every live node, this one
    /// included (1 while this node drains).
    nodes: AtomicUsize,
    /// WebSocket and SSE viewers (on the HTTP port): they count towards the node's limit, and
    /// are reported spread over its viewer ports.
    web: AtomicUsize,
    /// The node's metrics: viewers by transport are counted by their [`PortGuard`]s.
    pub metrics: Arc<Metrics>,
}

/// Another node's port: its last report, and how many viewers this node has sent it since.
#[derive(Debug)]
struct Other {
    load: PortLoad,
    sent: AtomicUsize,
}

impl Other {
    /// Its load as best known: the report, plus what this node named it for since times the
    /// number of nodes (every node is as likely to be sending it viewers from the same report).
    fn load(&self, nodes: usize) -> usize {
        self.load.viewers + self.sent.load(Ordering::Relaxed) * nodes
    }

    fn has_room(&self, nodes: usize) -> bool {
        self.load(nodes) < self.load.capacity
    }
}

/// A viewer port and its load, as nodes report them to each other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortLoad {
    pub host: String,
    pub port: u16,
    pub viewers: usize,
    /// Most viewers the port takes (its share of its node's limit).
    pub capacity: usize,
}

impl PortLoad {
    /// `host:port`.
    pub fn addr_string(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl ViewerPorts {
    /// `bound`: the listeners' real addresses; `public_host` overrides the host named to viewers.
    pub fn new(
        bound: &[SocketAddr],
        public_host: Option<&str>,
        max_viewers: usize,
        metrics: Arc<Metrics>,
    ) -> ViewerPorts {
        let ports = bound
            .iter()
            .map(|a| Port {
                advertised: (
                    public_host.map_or_else(|| a.ip().to_string(), str::to_owned),
                    a.port(),
                ),
                viewers: AtomicUsize::new(0),
            })
            .collect::<Vec<_>>();
        let per_port = max_viewers.div_ceil(ports.len().max(1));
        ViewerPorts {
            ports,
            per_port,
            others: RwLock::new(Vec::new()),
            nodes: AtomicUsize::new(1),
            web: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The port `/1/checkin` names: the least loaded with room in the whole cluster (this
    /// node's ports win ties). Another node's load is its last report (up to a second old) plus
    /// the viewers this node has named it for since, so that a crowd arriving within one
    /// report spreads instead of all going to the same port. `None` when no port has room.
    pub fn pick_for_checkin(&self) -> Option<(String, u16)> {
        let mine = self
            .ports
            .iter()
            .map(|p| (p.viewers.load(Ordering::Relaxed), p))
            .filter(|(load, _)| *load < self.per_port)
            .min_by_key(|(load, _)| *load);
        let nodes = self.nodes.load(Ordering::Relaxed);
        let others = read(&self.others);
        let other = others.iter().filter(|o| o.has_room(nodes)).min_by_key(|o| o.load(nodes));
        match (mine, other) {
            (Some((load, _)), Some(o)) if o.load(nodes) < load => Some(Self::send_to(o)),
            (Some((_, p)), _) => Some(p.advertised.clone()),
            (None, Some(o)) => Some(Self::send_to(o)),
            (None, None) => None,
        }
    }

    fn send_to(other: &Other) -> (String, u16) {
        other.sent.fetch_add(1, Ordering::Relaxed);
        (other.load.host.clone(), other.load.port)
    }

    /// The least-loaded port of another live node with room, to name in `try` (counted as sent
    /// there, like a checkin).
    pub fn other_node(&self) -> Option<PortLoad> {
        let nodes = self.nodes.load(Ordering::Relaxed);
        let others = read(&self.others);
        let other = others.iter().filter(|o| o.has_room(nodes)).min_by_key(|o| o.load(nodes))?;
        Self::send_to(other);
        Some(other.load.clone())
    }

    /// Replaces what this node knows of the other nodes' ports (a new report). `senders`: how
    /// many nodes are sending viewers to them (every live node, this one included).
    pub fn set_others(&self, others: Vec<PortLoad>, senders: usize) {
        self.nodes.store(senders.max(1), Ordering::Relaxed);
        *write(&self.others) =
            others.into_iter().map(|load| Other { load, sent: AtomicUsize::new(0) }).collect();
    }

    /// Like [`ViewerPorts::set_others`], for a node that drains: the viewers it told goodbye
    /// come back to the port named in their `try` only after their `retry_after_ms` (up to the
    /// drain window and more), long after the next report. So what it sent a port is kept
    /// across reports, less what the port's new report shows arrived since the last, and no
    /// other node's share is assumed (it alone is sending its viewers away).
    pub fn set_others_draining(&self, others: Vec<PortLoad>) {
        self.nodes.store(1, Ordering::Relaxed);
        let mut kept = write(&self.others);
        let carried = others
            .into_iter()
            .map(|load| {
                let sent = kept
                    .iter()
                    .find(|o| o.load.host == load.host && o.load.port == load.port)
                    .map_or(0, |o| {
                        let arrived = load.viewers.saturating_sub(o.load.viewers);
                        o.sent.load(Ordering::Relaxed).saturating_sub(arrived)
                    });
                Other { load, sent: AtomicUsize::new(sent) }
            })
            .collect();
        *kept = carried;
    }

    /// This node's ports and their load, for reporting to the cluster.
    pub fn snapshot(&self) -> Vec<PortLoad> {
        let web = self.web.load(Ordering::Relaxed) / self.ports.len().max(1);
        self.ports
            .iter()
            .map(|p| PortLoad {
                host: p.advertised.0.clone(),
                port: p.advertised.1,
                viewers: p.viewers.load(Ordering::Relaxed) + web,
                capacity: self.per_port,
            })
            .collect()
    }

    /// Viewers of every transport.
    pub fn total(&self) -> usize {
        self.ports.iter().map(|p| p.viewers.load(Ordering::Relaxed)).sum::<usize>()
            + self.web.load(Ordering::Relaxed)
    }

    /// Viewers on one port.
    pub fn load(&self, index: usize) -> usize {
        self.ports.get(index).map_or(0, |p| p.viewers.load(Ordering::Relaxed))
    }

    /// Another port with room, to name in a `full` answer.
    pub fn other_with_room(&self, index: usize) -> Option<&Port> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != index && p.viewers.load(Ordering::Relaxed) < self.per_port)
            .min_by_key(|(_, p)| p.viewers.load(Ordering::Relaxed))
            .map(|(_, p)| p)
    }

    /// Counts a viewer on `index` for as long as the guard lives, if the port is below its
    /// share of the node's limit; `None` when it is full. Checked and counted in one step, so
    /// that viewers joining at once never all pass the check.
    pub fn try_enter(self: &Arc<Self>, index: usize) -> Option<PortGuard> {
        let port = self.ports.get(index)?;
        let room = |n: usize| (n < self.per_port).then_some(n + 1);
        port.viewers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, room).ok()?;
        Some(PortGuard {
            ports: self.clone(),
            index: index as u32,
            joined: None,
            why: Left::Hangup,
        })
    }

    /// Counts a WebSocket or SSE viewer for as long as the guard lives.
    pub fn enter_web(self: &Arc<Self>) -> PortGuard {
        self.web.fetch_add(1, Ordering::Relaxed);
        PortGuard { ports: self.clone(), index: WEB, joined: None, why: Left::Hangup }
    }
}

impl Port {
    /// `host:port`.
    pub fn addr_string(&self) -> String {
        format!("{}:{}", self.advertised.0, self.advertised.1)
    }
}

/// Counts one viewer on a port until dropped, and once it joined a match, one viewer of its
/// transport in the metrics (16 bytes: a parked viewer holds one).
pub struct PortGuard {
    ports: Arc<ViewerPorts>,
    index: u32,
    /// The transport of the match it joined, once it did.
    joined: Option<Format>,
    /// Why it leaves: a hang-up unless told otherwise.
    why: Left,
}

impl PortGuard {
    /// The viewer joined a match over `format`.
    pub fn joined(&mut self, format: Format) {
        if self.joined.is_none() {
            self.joined = Some(format);
            self.ports.metrics.joined(format);
        }
    }

    /// The server ends this viewer for `reason` (counted when the connection is gone).
    pub fn leaving(&mut self, reason: ByeReason) {
        self.why = Left::Bye(reason);
    }
}

/// The index of a [`PortGuard`] that counts a viewer on the HTTP port.
const WEB: u32 = u32::MAX;

impl Drop for PortGuard {
    fn drop(&mut self) {
        if self.index == WEB {
            self.ports.web.fetch_sub(1, Ordering::Relaxed);
        } else if let Some(p) = self.ports.ports.get(self.index as usize) {
            p.viewers.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(format) = self.joined {
            self.ports.metrics.left(format, self.why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkin_names_the_least_loaded_port_of_the_cluster_counting_what_it_sent() {
        let bound = [SocketAddr::from(([127, 0, 0, 1], 9100))];
        let ports = Arc::new(ViewerPorts::new(&bound, None, 100, Metrics::new()));
        let other =
            |port, viewers| PortLoad { host: "10.0.0.2".into(), port, viewers, capacity: 100 };
        // This node's port holds 5; the other node's reported 3 and 100 (full).
        let _held: Vec<PortGuard> = (0..5).map(|_| ports.try_enter(0).unwrap()).collect();
        ports.set_others(vec![other(9200, 3), other(9201, 100)], 2);
        // 9200 is the least loaded until this node has sent it 1 (3 + 1 sent × 2 nodes = 5: a
        // tie, which this node's own port wins; its own load grows only as viewers connect).
        let named: Vec<u16> = (0..3).map(|_| ports.pick_for_checkin().unwrap().1).collect();
        assert_eq!(named, [9200, 9100, 9100]);
        // `try` names the other node's least-loaded port with room (never the full 9201).
        assert_eq!(ports.other_node().map(|o| o.port), Some(9200));
        // A new report replaces the counts.
        ports.set_others(vec![other(9300, 0)], 2);
        assert_eq!(ports.pick_for_checkin().unwrap().1, 9300);
    }

    #[test]
    fn a_draining_node_counts_what_it_sent_until_it_arrives() {
        let bound = [SocketAddr::from(([127, 0, 0, 1], 9100))];
        let ports = Arc::new(ViewerPorts::new(&bound, None, 100, Metrics::new()));
        let other =
            |viewers| PortLoad { host: "10.0.0.2".into(), port: 9200, viewers, capacity: 10 };
        ports.set_others_draining(vec![other(0)]);
        for _ in 0..6 {
            assert_eq!(ports.other_node().map(|o| o.port), Some(9200));
        }
        // A report before any of the 6 arrived: they still count (as sent by this node alone).
        ports.set_others_draining(vec![other(0)]);
        for _ in 0..4 {
            assert!(ports.other_node().is_some());
        }
        assert_eq!(ports.other_node(), None, "10 sent to a port of 10");
        // 7 arrived: 3 still on their way, so 7 + 3 = 10 leaves no room.
        ports.set_others_draining(vec![other(7)]);
        assert_eq!(ports.other_node(), None);
        // Then 2 of them left: room for 2 (the 3 still on their way count).
        ports.set_others_draining(vec![other(5)]);
        assert!(ports.other_node().is_some() && ports.other_node().is_some());
        assert_eq!(ports.other_node(), None);
    }

    #[test]
    fn no_port_with_room_names_nothing() {
        let bound = [SocketAddr::from(([127, 0, 0, 1], 9100))];
        let ports = Arc::new(ViewerPorts::new(&bound, None, 1, Metrics::new()));
        let _held = ports.try_enter(0).unwrap();
        assert!(ports.try_enter(0).is_none(), "its share is 1");
        ports.set_others(vec![PortLoad { host: "h".into(), port: 1, viewers: 7, capacity: 7 }], 2);
        assert_eq!(ports.pick_for_checkin(), None);
        assert_eq!(ports.other_node(), None);
    }
}
