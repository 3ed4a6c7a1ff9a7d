//! A budget of connections, for every listener the public reaches: a permit of a semaphore
//! taken before `accept` (past the total, new connections wait in the kernel's backlog, holding
//! neither a descriptor nor a task) and a count per client address checked after it (past an
//! address's share, the caller tells the connection why and closes it at once). Both are given
//! back when the connection's [`Place`] is dropped. The HTTP listeners hold one for their
//! connections (`http.rs`), the viewer ports one for connections still sending their connect
//! line (`transport/tcp.rs`: SPEC 10, they are no viewers yet).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::locks::lock;

/// Connections of one kind: one budget for all the listeners that share it.
pub(crate) struct Budget {
    slots: Arc<Semaphore>,
    max_per_address: usize,
    waiting: Arc<Waiting>,
}

/// Connections held, by client address (an address is removed at zero, so the map holds only
/// addresses with a connection).
struct Waiting {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Connections held in all (e.g. `matchstream_viewer_handshakes`).
    gauge: Gauge,
}

/// One connection's place in the budget, given back when dropped.
pub(crate) struct Place {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    waiting: Arc<Waiting>,
}

impl Budget {
    pub(crate) fn new(max: usize, max_per_address: usize, gauge: Gauge) -> Budget {
        Budget {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max_per_address,
            waiting: Arc::new(Waiting { per_address: Mutex::default(), gauge }),
        }
    }

    /// Waits for a free slot, to be taken before `accept`. Each listener's accept loop holds
    /// one while it waits for a connection, so with several listeners on one budget up to one
    /// slot per other listener may sit idle: a few out of thousands.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Most connections at once from one address.
    pub(crate) fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A place for a connection from `peer`, or `None` when its address has its share.
    pub(crate) fn enter(&self, permit: OwnedSemaphorePermit, peer: SocketAddr) -> Option<Place> {
        let address = client(peer);
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
        Some(Place { _permit: permit, address, waiting: self.waiting.clone() })
    }
}

/// The client a connection counts for: its IPv4 address (also when it comes mapped into IPv6),
/// or the /64 of an IPv6 one: a single IPv6 client usually holds a whole /64, and would
/// otherwise have as many shares as addresses.
fn client(peer: SocketAddr) -> IpAddr {
    match peer.ip().to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl Drop for Place {
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
    async fn an_address_gets_its_share_and_the_budget_comes_back_when_a_place_is_given_back() {
        let budget = Budget::new(3, 2, Gauge::noop());
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
        // Two addresses of one IPv6 /64 are one client.
        let v6 = |last: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 1, 0, 0, 0, last], 1));
        drop((_b, _d));
        let _e = budget.enter(budget.slot().await, v6(1)).unwrap();
        let _f = budget.enter(budget.slot().await, v6(0xbeef)).unwrap();
        assert!(budget.enter(budget.slot().await, v6(7)).is_none(), "a /64 has one share");
    }
}
