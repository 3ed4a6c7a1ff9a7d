//! Viewer transports: how viewers connect and receive their match. `tcp.rs` serves the TCP
//! protocols v1 and v2 (SPEC 4), `web.rs` WebSocket and SSE on the HTTP port (SPEC 5); once
//! joined, a viewer's life (following, parked at the live edge, closing) is `session.rs`'s; its
//! bytes go out through `write.rs` on its connection (`conn.rs`: plain TCP, or TLS with the
//! certificate `tls.rs` serves, SPEC 11). Transports see the hub, never the store. This file keeps the
//! viewer ports and their load (viewers that joined a match, nothing else; connections still
//! sending their connect line have their own `crate::budget`); which port of the cluster
//! `/1/checkin` and `try` name is `crate::cluster`'s, from these counts and the other nodes'
//! reports; `close.rs` is how every transport closes a connection it ends (without a reset).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cluster::{Cluster, Here, Named, PortLoad};
use crate::hub::Format;
use crate::telemetry::{Left, Metrics};
use crate::wire::ByeReason;

pub(crate) mod close;
pub(crate) mod conn;
pub(crate) mod context;
pub(crate) mod session;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod web;
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
    /// WebSocket and SSE viewers (on the HTTP port): they count towards the node's limit, and
    /// are reported spread over its viewer ports.
    web: AtomicUsize,
    /// The HTTP port those connect to, as reported (so that another node's `full` can name it).
    web_port: Option<u16>,
    /// What this node knows of the other nodes, and where it sends a viewer.
    pub cluster: Arc<Cluster>,
    /// The node's metrics: viewers by transport are counted by their [`PortGuard`]s.
    pub metrics: Arc<Metrics>,
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
            cluster: Arc::new(Cluster::new(ports.len())),
            ports,
            per_port,
            web: AtomicUsize::new(0),
            web_port: None,
            metrics,
        }
    }

    /// Reports `port` as the node's HTTP port, where its WebSocket and SSE viewers connect.
    pub fn with_web_port(mut self, port: u16) -> ViewerPorts {
        self.web_port = Some(port);
        self
    }

    /// The port `/1/checkin` names, of every port of the cluster with room (see
    /// [`Cluster::pick_for_checkin`]); `None` when no port has room.
    pub fn pick_for_checkin(&self) -> Option<(String, u16)> {
        let web = self.web.load(Ordering::Relaxed) / self.ports.len().max(1);
        let here: Vec<Here> = self
            .ports
            .iter()
            .map(|p| Here {
                viewers: p.viewers.load(Ordering::Relaxed),
                web,
                capacity: self.per_port,
            })
            .collect();
        match self.cluster.pick_for_checkin(&here)? {
            Named::Here(i) => self.ports.get(i).map(|p| p.advertised.clone()),
            Named::There(host, port) => Some((host, port)),
        }
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
                web_port: self.web_port,
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
mod tests;
