//! What this node knows of the other nodes, and where it sends a viewer (SPEC 7): the other live
//! nodes' viewer ports as last reported, what this node named each port for since, and from
//! those, by the pure rules of `placement.rs`, the port `/1/checkin` names and the other node a
//! `full` answer's or a goodbye's `try` names. `report.rs` is the loop that reports this node's
//! load every second through the shared store and reads the others'. It counts no viewer: the
//! transports do, and hand it their ports' counts when a checkin asks. A node on its own knows
//! no other node.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::locks::{read, write};
use placement::Seen;

mod placement;
mod report;

pub(crate) use report::report_load;

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

/// One of this node's viewer ports as its transport counts it when a checkin asks.
#[derive(Debug, Clone, Copy)]
pub struct Here {
    /// Viewers on the port.
    pub viewers: usize,
    /// Its share of the node's WebSocket and SSE viewers (as reported).
    pub web: usize,
    /// Most viewers it takes.
    pub capacity: usize,
}

/// The port a checkin names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// One of this node's, by its index among them.
    Here(usize),
    /// Another node's, `host` and `port`.
    There(String, u16),
}

/// How long a viewer named by `/1/checkin` counts on this node's own port before it connects:
/// its name is forgotten once a whole window passed without it (a client that checked in and
/// never came), so that such names never make a port look full for long.
const IN_FLIGHT: Duration = Duration::from_secs(1);

/// What this node knows of the cluster's viewer ports, beyond its own counts.
#[derive(Debug)]
pub struct Cluster {
    /// What `/1/checkin` named each of this node's ports for, in the order of its ports.
    here: Vec<Sent>,
    /// When the current [`IN_FLIGHT`] window of this node's ports began (ms since `born`).
    window_ms: AtomicU64,
    born: Instant,
    /// The other live nodes' ports, with their load, as last reported through the shared
    /// store (empty for a node on its own).
    others: RwLock<Vec<Other>>,
}

/// What `/1/checkin` named one of this node's ports for.
#[derive(Debug, Default)]
struct Sent {
    /// Viewers named in the current window (see [`IN_FLIGHT`]).
    named: AtomicUsize,
    /// Of those named before the window, the ones that had not arrived when it began.
    carried: AtomicUsize,
    /// Its viewers when the window began: what arrived since is its viewers less this.
    at_window: AtomicUsize,
}

impl Sent {
    /// The port as `placement` sees it: its viewers (and its share of the web viewers, as
    /// reported) and, with other nodes, the viewers named for it that have not arrived. Alone,
    /// its exact count only: nothing to spread over other nodes, and checkins nobody followed
    /// never make the least-loaded port look busier (SPEC 3).
    fn seen(&self, here: &Here, alone: bool) -> Seen {
        let known = here.viewers + here.web;
        if alone {
            return Seen { capacity: here.capacity, known, pending: 0 };
        }
        let arrived = here.viewers.saturating_sub(self.at_window.load(Ordering::Relaxed));
        let named = self.named.load(Ordering::Relaxed) + self.carried.load(Ordering::Relaxed);
        Seen { capacity: here.capacity, known, pending: named.saturating_sub(arrived) }
    }
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

impl Cluster {
    /// A node with `ports` viewer ports that knows no other node yet.
    pub fn new(ports: usize) -> Cluster {
        Cluster {
            here: (0..ports).map(|_| Sent::default()).collect(),
            window_ms: AtomicU64::new(0),
            born: Instant::now(),
            others: RwLock::new(Vec::new()),
        }
    }

    /// The port `/1/checkin` names, of every port of the cluster with room (`here`: this
    /// node's, as counted now): the least loaded as this node sees it, counting what it named
    /// once, or while a crowd arrives a port drawn in proportion to its room (`placement`), so
    /// that the crowd spreads evenly whichever node it asks. `None` when no port has room.
    pub fn pick_for_checkin(&self, here: &[Here]) -> Option<Named> {
        self.pick_at(here, Instant::now(), &mut rand::rng())
    }

    fn pick_at(&self, here: &[Here], now: Instant, rng: &mut impl Rng) -> Option<Named> {
        self.roll_window(here, now);
        let others = read(&self.others);
        let alone = others.is_empty();
        let mine = here.len().min(self.here.len());
        let seen: Vec<Seen> = self
            .here
            .iter()
            .zip(here)
            .map(|(sent, here)| sent.seen(here, alone))
            .chain(others.iter().map(Other::seen))
            .collect();
        let i = placement::choose(&seen, rng)?;
        if i < mine {
            self.here[i].named.fetch_add(1, Ordering::Relaxed);
            return Some(Named::Here(i));
        }
        let o = &others[i - mine];
        o.sent.fetch_add(1, Ordering::Relaxed);
        Some(Named::There(o.load.host.clone(), o.load.port))
    }

    /// Begins a new [`IN_FLIGHT`] window for this node's ports once the last is over.
    fn roll_window(&self, here: &[Here], now: Instant) {
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
        for (sent, here) in self.here.iter().zip(here) {
            let before = sent.at_window.swap(here.viewers, Ordering::Relaxed);
            let named = sent.named.swap(0, Ordering::Relaxed);
            let carried = sent.carried.load(Ordering::Relaxed);
            let left = placement::still_pending(named, carried, before, here.viewers, false);
            sent.carried.store(left, Ordering::Relaxed);
        }
    }

    /// The HTTP addresses (`host:port`) of the other live nodes, each once: where a page of
    /// this node may be sent by a `try`.
    pub fn web_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> =
            read(&self.others).iter().filter_map(|o| o.load.web_addr_string()).collect();
        addrs.sort();
        addrs.dedup();
        addrs
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

    /// Like [`Cluster::set_others`], for a node that drains: the viewers it told goodbye come
    /// back to the port named in their `try` only after their `retry_after_ms` (up to the drain
    /// window and more), long after the next report. So what it named a port for counts until
    /// the port's reports show it arrived, however many reports that takes.
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
}

#[cfg(test)]
mod tests;
