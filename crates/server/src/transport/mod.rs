//! Viewer transports: how viewers connect and receive their match. `tcp.rs` serves the plain TCP
//! protocols v1 and v2 (SPEC 4); WebSocket and SSE come later beside it. Transports see the hub,
//! never the store. This file keeps what they share: the viewer ports and their load;
//! `close.rs` is how every transport closes a connection it ends (without a reset).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::locks::{read, write};

pub mod close;
pub mod tcp;

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
    others: RwLock<Vec<PortLoad>>,
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
    pub fn new(bound: &[SocketAddr], public_host: Option<&str>, max_viewers: usize) -> ViewerPorts {
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
        ViewerPorts { ports, per_port, others: RwLock::new(Vec::new()) }
    }

    /// The port `/1/checkin` names: one with room anywhere in the cluster, chosen at random in
    /// proportion to its free room. Not simply the least loaded: the others' load is known as of
    /// their last report (up to a second old), and every node would name the same port to a
    /// whole crowd arriving within that second. `None` when no port has room.
    pub fn pick_for_checkin(&self) -> Option<(String, u16)> {
        let mut candidates: Vec<((String, u16), usize)> = self
            .ports
            .iter()
            .map(|p| {
                (
                    p.advertised.clone(),
                    self.per_port.saturating_sub(p.viewers.load(Ordering::Relaxed)),
                )
            })
            .collect();
        candidates.extend(
            read(&self.others)
                .iter()
                .map(|o| ((o.host.clone(), o.port), o.capacity.saturating_sub(o.viewers))),
        );
        weighted_pick(candidates)
    }

    /// Another live node's port with room, chosen like `/1/checkin` chooses, to name in `try`.
    pub fn other_node(&self) -> Option<PortLoad> {
        let others = read(&self.others);
        let candidates = others.iter().map(|o| (o, o.capacity.saturating_sub(o.viewers)));
        weighted_pick(candidates.collect()).cloned()
    }

    /// Replaces what this node knows of the other nodes' ports.
    pub fn set_others(&self, others: Vec<PortLoad>) {
        *write(&self.others) = others;
    }

    /// This node's ports and their load, for reporting to the cluster.
    pub fn snapshot(&self) -> Vec<PortLoad> {
        self.ports
            .iter()
            .map(|p| PortLoad {
                host: p.advertised.0.clone(),
                port: p.advertised.1,
                viewers: p.viewers.load(Ordering::Relaxed),
                capacity: self.per_port,
            })
            .collect()
    }

    /// Viewers on every port.
    pub fn total(&self) -> usize {
        self.ports.iter().map(|p| p.viewers.load(Ordering::Relaxed)).sum()
    }

    /// Viewers on one port.
    pub fn load(&self, index: usize) -> usize {
        self.ports.get(index).map_or(0, |p| p.viewers.load(Ordering::Relaxed))
    }

    /// Is this port at its share of the node's limit?
    pub fn is_full(&self, index: usize) -> bool {
        self.load(index) > self.per_port
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

    /// Counts a viewer on `index` for as long as the guard lives.
    pub fn enter(self: &Arc<Self>, index: usize) -> PortGuard {
        if let Some(p) = self.ports.get(index) {
            p.viewers.fetch_add(1, Ordering::Relaxed);
        }
        PortGuard { ports: self.clone(), index }
    }
}

/// One of `candidates`, at random in proportion to its weight; `None` if all weigh 0.
fn weighted_pick<T>(candidates: Vec<(T, usize)>) -> Option<T> {
    let total: usize = candidates.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut at = rand::random_range(0..total);
    for (item, weight) in candidates {
        if at < weight {
            return Some(item);
        }
        at -= weight;
    }
    None
}

impl Port {
    /// `host:port`.
    pub fn addr_string(&self) -> String {
        format!("{}:{}", self.advertised.0, self.advertised.1)
    }
}

/// Counts one connection on a port until dropped.
pub struct PortGuard {
    ports: Arc<ViewerPorts>,
    index: usize,
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        if let Some(p) = self.ports.ports.get(self.index) {
            p.viewers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weighted_pick_follows_the_weights_and_never_picks_a_zero() {
        assert_eq!(weighted_pick::<u8>(vec![]), None);
        assert_eq!(weighted_pick(vec![('a', 0), ('b', 0)]), None);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            let i = weighted_pick(vec![(0usize, 1), (1, 0), (2, 3)]).unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts[1], 0);
        // Expected 10,000 and 30,000: six standard deviations is ~520.
        assert!((9_400..=10_600).contains(&counts[0]), "{counts:?}");
        assert!((29_400..=30_600).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn checkin_weighs_this_node_and_the_others_by_free_room() {
        let bound = [SocketAddr::from(([127, 0, 0, 1], 9100))];
        let ports = ViewerPorts::new(&bound, None, 100);
        let other =
            |port, viewers| PortLoad { host: "10.0.0.2".into(), port, viewers, capacity: 100 };
        // This node's port has 100 free, the other node's two 50 and 0.
        ports.set_others(vec![other(9200, 50), other(9201, 100)]);
        let mut named = std::collections::HashMap::new();
        for _ in 0..15_000 {
            *named.entry(ports.pick_for_checkin().unwrap().1).or_insert(0u32) += 1;
        }
        assert_eq!(named.get(&9201), None, "a full port is never named");
        assert!((9_500..=10_500).contains(&named[&9100]), "{named:?}");
        assert!((4_500..=5_500).contains(&named[&9200]), "{named:?}");
        assert_eq!(ports.other_node().map(|o| o.port), Some(9200));
    }
}
