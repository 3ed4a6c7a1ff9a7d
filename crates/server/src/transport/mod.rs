//! Viewer transports: how viewers connect and receive their match. `tcp.rs` serves the plain TCP
//! protocols v1 and v2 (SPEC 4), `web.rs` WebSocket and SSE on the HTTP port (SPEC 5); once
//! joined, a viewer's life (following, parked at the live edge, closing) is `session.rs`'s; its
//! bytes go out through `write.rs`. Transports see the hub, never the store. This file keeps the
//! viewer ports and their load (viewers that joined a match, nothing else; connections still
//! sending their connect line have their own `crate::budget`), and which port of the cluster
//! `/1/checkin` and `try` name by the rules of `placement.rs`; `close.rs` is how every
//! transport closes a connection it ends (without a reset).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::hub::Format;
use crate::locks::{read, write};
use crate::telemetry::{Left, Metrics};
use crate::wire::ByeReason;
use placement::Seen;

pub mod close;
pub mod context;
pub mod placement;
pub mod session;
pub mod tcp;
pub mod web;
mod write;

/// One viewer port and how many viewers it holds.
#[derive(Debug)]
pub struct Port {
    /// `host:port` as viewers should dial it.
    pub advertised: (String, u16),
    viewers: AtomicUsize,
    /// Viewers `/1/checkin` named this port for in the current window (see [`IN_FLIGHT`]).
    named: AtomicUsize,
    /// Of those named before the window, the ones that had not arrived when it began.
    carried: AtomicUsize,
    /// Its viewers when the window began: what arrived since is `viewers` less this.
    at_window: AtomicUsize,
}

/// How long a viewer named by `/1/checkin` counts on this node's own port before it connects:
/// its name is forgotten once a whole window passed without it (a client that checked in and
/// never came), so that such names never make a port look full for long.
const IN_FLIGHT: Duration = Duration::from_secs(1);

/// The node's viewer ports: their load, for `/1/checkin`, for `full` answers and for metrics.
#[derive(Debug)]
pub struct ViewerPorts {
    ports: Vec<Port>,
    /// Most viewers one port holds: the node's limit shared evenly between its ports.
    per_port: usize,
    /// The other live nodes' ports, with their load, as last reported through the shared
    /// store (empty for a node on its own).
    others: RwLock<Vec<Other>>,
    /// When the ports' current [`IN_FLIGHT`] window began (ms since `born`).
    window_ms: AtomicU64,
    born: Instant,
    /// WebSocket and SSE viewers (on the HTTP port): they count towards the node's limit, and
    /// are reported spread over its viewer ports.
    web: AtomicUsize,
    /// The HTTP port those connect to, as reported (so that another node's `full` can name it).
    web_port: Option<u16>,
    /// The node's metrics: viewers by transport are counted by their [`PortGuard`]s.
    pub metrics: Arc<Metrics>,
}

/// Another node's port: its last report, and the viewers this node named it for that the
/// report does not show yet.
#[derive(Debug)]
struct Other {
    load: PortLoad,
    /// Named since the report.
    sent: AtomicUsize,
    /// Named before it and not arrived by it (see [`placement::still_pending`]).
    carried: usize,
}

impl Other {
    fn seen(&self) -> Seen {
        Seen {
            capacity: self.load.capacity,
            known: self.load.viewers,
            pending: self.carried.saturating_add(self.sent.load(Ordering::Relaxed)),
        }
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
    /// The node's HTTP port, where its WebSocket and SSE viewers connect (on the same host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_port: Option<u16>,
}

impl PortLoad {
    /// `host:port`.
    pub fn addr_string(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host:port` of the node's HTTP port: what a WebSocket or SSE viewer is told to `try`.
    pub fn web_addr_string(&self) -> Option<String> {
        self.web_port.map(|port| format!("{}:{}", self.host, port))
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
                named: AtomicUsize::new(0),
                carried: AtomicUsize::new(0),
                at_window: AtomicUsize::new(0),
            })
            .collect::<Vec<_>>();
        let per_port = max_viewers.div_ceil(ports.len().max(1));
        ViewerPorts {
            ports,
            per_port,
            others: RwLock::new(Vec::new()),
            window_ms: AtomicU64::new(0),
            born: Instant::now(),
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

    /// The port `/1/checkin` names, of every port of the cluster with room: the least loaded as
    /// this node sees it, counting what it named once, or while a crowd arrives a port drawn in
    /// proportion to its room (`placement`), so that the crowd spreads evenly whichever node it
    /// asks. `None` when no port has room.
    pub fn pick_for_checkin(&self) -> Option<(String, u16)> {
        self.pick_at(Instant::now(), &mut rand::rng())
    }

    fn pick_at(&self, now: Instant, rng: &mut impl Rng) -> Option<(String, u16)> {
        self.roll_window(now);
        let others = read(&self.others);
        let alone = others.is_empty();
        let seen: Vec<Seen> = self
            .ports
            .iter()
            .map(|p| self.seen(p, alone))
            .chain(others.iter().map(Other::seen))
            .collect();
        let i = placement::choose(&seen, rng)?;
        match self.ports.get(i) {
            Some(p) => {
                p.named.fetch_add(1, Ordering::Relaxed);
                Some(p.advertised.clone())
            }
            None => {
                let o = &others[i - self.ports.len()];
                o.sent.fetch_add(1, Ordering::Relaxed);
                Some((o.load.host.clone(), o.load.port))
            }
        }
    }

    /// One of this node's ports as `placement` sees it: its viewers (and its share of the web
    /// viewers, as reported) and, with other nodes, the viewers named for it that have not
    /// arrived. Alone, its exact count only: nothing to spread over other nodes, and checkins
    /// nobody followed never make the least-loaded port look busier (SPEC 3).
    fn seen(&self, p: &Port, alone: bool) -> Seen {
        let web = self.web.load(Ordering::Relaxed) / self.ports.len().max(1);
        if alone {
            let viewers = p.viewers.load(Ordering::Relaxed);
            return Seen { capacity: self.per_port, known: viewers + web, pending: 0 };
        }
        let viewers = p.viewers.load(Ordering::Relaxed);
        let arrived = viewers.saturating_sub(p.at_window.load(Ordering::Relaxed));
        let named = p.named.load(Ordering::Relaxed) + p.carried.load(Ordering::Relaxed);
        Seen {
            capacity: self.per_port,
            known: viewers + web,
            pending: named.saturating_sub(arrived),
        }
    }

    /// Begins a new [`IN_FLIGHT`] window for this node's ports once the last is over.
    fn roll_window(&self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.born).as_millis() as u64;
        let began = self.window_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(began) < IN_FLIGHT.as_millis() as u64
            || self
                .window_ms
                .compare_exchange(began, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for p in &self.ports {
            let viewers = p.viewers.load(Ordering::Relaxed);
            let before = p.at_window.swap(viewers, Ordering::Relaxed);
            let named = p.named.swap(0, Ordering::Relaxed);
            let carried = p.carried.load(Ordering::Relaxed);
            let left = placement::still_pending(named, carried, before, viewers, false);
            p.carried.store(left, Ordering::Relaxed);
        }
    }

    /// Another live node's port with room, to name in `try` (drawn like a checkin's, by its
    /// estimated free places, and counted as named there).
    pub fn other_node(&self) -> Option<PortLoad> {
        self.other_node_with(&mut rand::rng())
    }

    fn other_node_with(&self, rng: &mut impl Rng) -> Option<PortLoad> {
        let others = read(&self.others);
        let seen: Vec<Seen> = others.iter().map(Other::seen).collect();
        let other = &others[placement::choose_estimated(&seen, rng)?];
        other.sent.fetch_add(1, Ordering::Relaxed);
        Some(other.load.clone())
    }

    /// Replaces what this node knows of the other nodes' ports (a new report). What it named a
    /// port for since the last report and the new one does not show arrived still counts, for
    /// one more report at most.
    pub fn set_others(&self, others: Vec<PortLoad>) {
        self.replace_others(others, false);
    }

    /// Like [`ViewerPorts::set_others`], for a node that drains: the viewers it told goodbye
    /// come back to the port named in their `try` only after their `retry_after_ms` (up to the
    /// drain window and more), long after the next report. So what it named a port for counts
    /// until the port's reports show it arrived, however many reports that takes.
    pub fn set_others_draining(&self, others: Vec<PortLoad>) {
        self.replace_others(others, true);
    }

    fn replace_others(&self, others: Vec<PortLoad>, keep_all: bool) {
        let mut kept = write(&self.others);
        let carried = others
            .into_iter()
            .map(|load| {
                let carried = kept
                    .iter()
                    .find(|o| o.load.host == load.host && o.load.port == load.port)
                    .map_or(0, |o| {
                        let sent = o.sent.load(Ordering::Relaxed);
                        placement::still_pending(
                            sent,
                            o.carried,
                            o.load.viewers,
                            load.viewers,
                            keep_all,
                        )
                    });
                Other { load, sent: AtomicUsize::new(0), carried }
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
