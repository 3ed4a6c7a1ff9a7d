//! Where `/1/checkin` and a `full` answer's `try` send a viewer (SPEC 7: a crowd arriving at
//! once fills the nodes evenly, whichever node it asks): the pure rules, with no clock, lock or
//! socket. `cluster.rs` keeps the counts these rules read (the other nodes' reports, what this
//! node named each port for since; this node's own ports' loads come from the transports) and
//! applies the choice.
//!
//! What a node knows of a port is its load, either exact (its own ports) or as last reported
//! (another node's, up to a second old), plus the viewers it named that port for and that have
//! not shown up yet. It does not know what the other nodes named: assuming they named as many
//! (the rule before this one: "nodes × what I sent") made the others look full to a node that a
//! whole crowd asked, which then filled itself and answered `full` with nothing to `try`.
//! Instead each name counts once. While things are quiet (this node named fewer viewers than
//! there are ports since its picture of them), the port named is the least loaded as this node
//! sees it (the most free places, ties drawn at random: SPEC 3). While a crowd arrives, a port
//! is drawn with a probability proportional to its estimated free places: one node sending
//! alone fills every port evenly, and nodes sending at once from the same reports never all
//! pick the same least-loaded port; together they send each port viewers in proportion to its
//! room, as each does alone. Always naming the least-loaded port spread a crowd worse where
//! every node's picture is a report late: measured with `bench/cluster` (BENCHMARKS.md, "Even
//! crowds"), 15,887 to 19,131 per node against 16,937 to 17,493 for the draw.

use rand::Rng;

/// One port as a node sees it when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// Most viewers it takes.
    pub capacity: usize,
    /// Viewers known to be on it: this node's own count, or the port's last report.
    pub known: usize,
    /// Viewers this node named it for that are not in `known` yet.
    pub pending: usize,
}

impl Seen {
    /// Free places counting what this node named it for.
    pub(super) fn estimated_free(&self) -> usize {
        self.capacity.saturating_sub(self.known.saturating_add(self.pending))
    }

    /// Free places by what is known for certain (the count or the report alone).
    pub(super) fn known_free(&self) -> usize {
        self.capacity.saturating_sub(self.known)
    }
}

/// The index of the port to name: the least loaded while quiet, drawn in proportion to its
/// estimated free places while a crowd arrives (see the module's comment). When every port
/// looks full only because of what this node named (viewers that may never come: a client that
/// checks in and goes elsewhere), by the known free places instead, so that a port with room by
/// every report is never refused; `None` when no port has room.
pub(super) fn choose(ports: &[Seen], rng: &mut impl Rng) -> Option<usize> {
    choose_estimated(ports, rng).or_else(|| pick(ports, Seen::known_free, rng))
}

/// Like [`choose`], by the estimated free places alone: for a `try`, whose viewer does come
/// (it was refused or told goodbye), so that what this node already sent a port counts.
pub(super) fn choose_estimated(ports: &[Seen], rng: &mut impl Rng) -> Option<usize> {
    pick(ports, Seen::estimated_free, rng)
}

/// Viewers named and not arrived (across the ports) from which a crowd is taken to arrive.
const CROWD: usize = 64;

/// While quiet, the least-loaded port; while a crowd arrives (this node named at least
/// [`CROWD`] viewers, and one per port, that its picture of the ports does not show yet), a
/// port drawn in proportion to its free places.
fn pick(ports: &[Seen], free: fn(&Seen) -> usize, rng: &mut impl Rng) -> Option<usize> {
    let named: usize = ports.iter().map(|p| p.pending).sum();
    if named >= ports.len().max(CROWD) {
        weighted(ports, free, rng)
    } else {
        least_loaded(ports, free, rng)
    }
}

fn weighted(ports: &[Seen], free: fn(&Seen) -> usize, rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = ports.iter().map(|p| free(p) as u64).sum();
    if total == 0 {
        return None;
    }
    let mut place = rng.random_range(0..total);
    for (i, p) in ports.iter().enumerate() {
        let room = free(p) as u64;
        if place < room {
            return Some(i);
        }
        place -= room;
    }
    None
}

fn least_loaded(ports: &[Seen], free: fn(&Seen) -> usize, rng: &mut impl Rng) -> Option<usize> {
    let most = ports.iter().map(free).max().filter(|m| *m > 0)?;
    let ties = ports.iter().filter(|p| free(p) == most).count();
    let pick = rng.random_range(0..ties);
    ports.iter().enumerate().filter(|(_, p)| free(p) == most).nth(pick).map(|(i, _)| i)
}

/// What this node named a port for and still counts once a new count or report of the port
/// comes: of `named` (named since the last one) and `carried` (from before it), what the new
/// report does not show arrived (`before` → `now` viewers). Arrivals may be other nodes'
/// viewers too, so this can only err towards counting too little, never towards a port that
/// looks full when it is not. `keep_all`: everything not yet arrived is kept however old (a
/// draining node's goodbyes come back only after their `retry_after_ms`); otherwise no more
/// than was named since the last report, so that names never used (a checkin with no connect
/// after it) are forgotten after one report.
pub(super) fn still_pending(
    named: usize,
    carried: usize,
    before: usize,
    now: usize,
    keep_all: bool,
) -> usize {
    let arrived = now.saturating_sub(before);
    let left = named.saturating_add(carried).saturating_sub(arrived);
    if keep_all {
        left
    } else {
        left.min(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn seen(capacity: usize, known: usize, pending: usize) -> Seen {
        Seen { capacity, known, pending }
    }

    #[test]
    fn while_quiet_the_port_with_the_most_free_places_is_named_ties_at_random() {
        let mut rng = StdRng::seed_from_u64(1);
        // Free places 10, 30, 0 and 30, with 3 named (no crowd): the two with 30, each about
        // half the time.
        let ports = [seen(100, 90, 0), seen(100, 68, 2), seen(100, 100, 0), seen(100, 69, 1)];
        let mut drawn = [0usize; 4];
        for _ in 0..1_000 {
            drawn[choose(&ports, &mut rng).unwrap()] += 1;
        }
        assert_eq!((drawn[0], drawn[2]), (0, 0), "{drawn:?}");
        assert!((400..600).contains(&drawn[1]), "{drawn:?}");
        // Least loaded by count, when capacities are alike.
        let ports = [seen(100, 7, 0), seen(100, 3, 0), seen(100, 5, 0)];
        assert_eq!(choose(&ports, &mut rng), Some(1));
    }

    #[test]
    fn while_a_crowd_arrives_a_port_is_drawn_in_proportion_to_its_free_places() {
        let ports = [seen(100, 90, 0), seen(100, 40, 30), seen(100, 100, 0), seen(100, 0, 100)];
        const { assert!(30 + 100 >= CROWD) };
        let mut rng = StdRng::seed_from_u64(1);
        let mut drawn = [0usize; 4];
        for _ in 0..40_000 {
            drawn[choose(&ports, &mut rng).unwrap()] += 1;
        }
        // Free places 10 and 30 of 40: a quarter and three quarters.
        assert_eq!((drawn[2], drawn[3]), (0, 0), "{drawn:?}");
        assert!((9_000..11_000).contains(&drawn[0]), "{drawn:?}");
        assert!((29_000..31_000).contains(&drawn[1]), "{drawn:?}");
    }

    #[test]
    fn ports_full_only_by_what_was_named_are_drawn_by_their_known_room() {
        let mut rng = StdRng::seed_from_u64(2);
        let ports = [seen(10, 4, 6), seen(10, 10, 0)];
        assert_eq!(choose(&ports, &mut rng), Some(0));
        assert_eq!(choose_estimated(&ports, &mut rng), None, "a try counts what it named");
        assert_eq!(choose(&[seen(10, 10, 0), seen(5, 7, 0)], &mut rng), None);
        assert_eq!(choose(&[], &mut rng), None);
    }

    #[test]
    fn names_stay_pending_until_they_arrive_and_for_one_report_at_most() {
        // 10 named, 4 arrived: 6 still on their way.
        assert_eq!(still_pending(10, 0, 50, 54, false), 6);
        // Arrivals beyond what was named (other nodes' viewers): nothing pending, never less.
        assert_eq!(still_pending(10, 0, 50, 80, false), 0);
        // Viewers that left (the count fell): what was named since the last report stays...
        assert_eq!(still_pending(3, 20, 50, 40, false), 3);
        // ... but a draining node keeps all it named until it arrives.
        assert_eq!(still_pending(3, 20, 50, 40, true), 23);
        assert_eq!(still_pending(3, 20, 50, 60, true), 13);
    }
}
