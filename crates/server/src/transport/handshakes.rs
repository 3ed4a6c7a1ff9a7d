//! The budget of viewer connections still sending their connect line (SPEC 10). Until its line
//! arrives a connection is no viewer (it does not count against `--max-viewers`, so silent
//! sockets never make the node answer `full`), but it holds a descriptor and a task, so it has
//! limits of its own: a permit of `--max-handshakes`, taken before `accept` (past it, new
//! connections wait in the kernel's backlog), and at most `--max-handshakes-per-address` from one
//! client address (past it, a connection is told why and closed at once). Both are given back
//! when its handshake ends: joined, refused (once closed) or timed out. What happens to a
//! connection during its handshake is `tcp.rs`'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::locks::lock;

/// Every viewer port's handshakes: one budget for the node.
pub struct Handshakes {
    slots: Arc<Semaphore>,
    max_per_address: usize,
    waiting: Arc<Waiting>,
}

/// Handshakes under way, by client address (an address is removed at zero, so the map holds
/// only addresses with a connection waiting).
struct Waiting {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// `matchstream_viewer_handshakes`.
    gauge: Gauge,
}

/// One connection's place in the budget, given back when dropped.
pub struct Handshake {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    waiting: Arc<Waiting>,
}

impl Handshakes {
    pub fn new(max: usize, max_per_address: usize, gauge: Gauge) -> Handshakes {
        Handshakes {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max_per_address,
            waiting: Arc::new(Waiting { per_address: Mutex::default(), gauge }),
        }
    }

    /// Waits for a free slot, to be taken before `accept`. Each viewer port's accept loop holds
    /// one while it waits for a connection, so with several ports up to one slot per other port
    /// may sit idle: a few out of thousands.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Most handshakes at once from one address.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A place for a connection from `peer`, or `None` when its address has its share.
    pub fn enter(&self, permit: OwnedSemaphorePermit, peer: SocketAddr) -> Option<Handshake> {
        let address = peer.ip().to_canonical();
        let mut counts = lock(&self.waiting.per_address);
        let count = counts.entry(address).or_default();
        if *count >= self.max_per_address {
            // `entry` may have just inserted it at zero.
            if *count == 0 {
                counts.remove(&address);
            }
            return None;
        }
        *count += 1;
        self.waiting.gauge.increment(1.0);
        Some(Handshake { _permit: permit, address, waiting: self.waiting.clone() })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut counts = lock(&self.waiting.per_address);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
        self.waiting.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: [u8; 4]) -> SocketAddr {
        SocketAddr::from((ip, 4000))
    }

    #[tokio::test]
    async fn an_address_gets_its_share_and_the_budget_comes_back_when_a_handshake_ends() {
        let budget = Handshakes::new(3, 2, Gauge::noop());
        let a = budget.enter(budget.slot().await, addr([10, 0, 0, 1])).unwrap();
        let _b = budget.enter(budget.slot().await, addr([10, 0, 0, 1])).unwrap();
        assert!(budget.enter(budget.slot().await, addr([10, 0, 0, 1])).is_none());
        // The refused one's permit went back with it: another address still gets in.
        let c = budget.enter(budget.slot().await, addr([10, 0, 0, 2])).unwrap();
        // All 3 slots are taken now; one frees when a handshake ends.
        assert!(budget.slots.clone().try_acquire_owned().is_err());
        drop(a);
        let _d = budget.enter(budget.slot().await, addr([10, 0, 0, 1])).unwrap();
        drop(c);
        assert_eq!(lock(&budget.waiting.per_address).len(), 1, "an address at zero is removed");
        // An IPv4 client on an IPv6 socket is the same address.
        let mapped = SocketAddr::from((std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(), 1));
        assert!(budget.enter(budget.slot().await, mapped).is_none());
    }
}
