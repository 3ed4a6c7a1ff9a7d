//! Viewer transports: how viewers connect and receive their match. `tcp.rs` serves the plain TCP
//! protocols v1 and v2 (SPEC 4); WebSocket and SSE come later beside it. Transports see the hub,
//! never the store. This file keeps what they share: the viewer ports and their load;
//! `close.rs` is how every transport closes a connection it ends (without a reset).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
        ViewerPorts { ports, per_port }
    }

    /// The port holding the fewest viewers.
    pub fn least_loaded(&self) -> Option<&Port> {
        self.ports.iter().min_by_key(|p| p.viewers.load(Ordering::Relaxed))
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
