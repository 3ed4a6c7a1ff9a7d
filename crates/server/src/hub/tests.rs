//! The hub's catch-up: from the events kept in memory without reading the store, from shared
//! store reads when a crowd resumes from further back, and a viewer resuming ahead of a node
//! that has not heard of its events yet.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::MatchInfo;
use crate::store::memory::tests::{after_seq, append, event, info, Counting};

/// A hub over a store holding one match with events 1..=n, all published to the hub.
async fn hub_with_events(ring: usize, n: Seq) -> (Arc<Hub>, Arc<Counting>, MatchId, TopicHandle) {
    let store = Arc::new(Counting::default());
    let m = info("hub", "tig");
    let inc = store.create_match(&m).await.unwrap();
    let hub = Arc::new(Hub::new(store.clone(), ring, 100_000));
    let topic = hub.add(Arc::new(Match::new(m.clone())), inc);
    publish(&hub, &store, &topic, inc, &m, 1..=n).await;
    (hub, store, m.id, topic)
}

/// Stores events `seqs` and publishes them to the hub, as ingest does.
async fn publish(
    hub: &Hub,
    store: &Counting,
    topic: &TopicHandle,
    inc: Incarnation,
    m: &MatchInfo,
    seqs: std::ops::RangeInclusive<Seq>,
) {
    let events: Vec<Event> = seqs.map(event).collect();
    append(store, &m.id, after_seq(inc, events.clone())).await.unwrap();
    let mut state = Match::new(m.clone());
    state.seq = events.last().map_or(0, |e| e.seq);
    hub.publish(topic, &events, Arc::new(state));
}

/// Everything the subscription hands out until it has `until`, as seqs (v2 frames).
async fn seqs_until(sub: &mut Subscription, until: Seq) -> Vec<Seq> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&until) {
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap();
        let Next::Data(bytes) = next else { panic!("ended: {next:?}") };
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    seqs
}

#[tokio::test]
async fn a_viewer_resuming_within_the_kept_events_is_caught_up_without_a_store_read() {
    let (hub, store, id, _topic) = hub_with_events(64, 50).await;
    let (mut sub, _) = hub.join(id.as_str(), Format::V2, Some(20), 0).unwrap();
    assert_eq!(seqs_until(&mut sub, 50).await, (21..=50).collect::<Vec<_>>());
    assert_eq!(store.reads.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_resuming_from_further_back_shares_its_store_reads() {
    // Only the last 4 events kept: 100 viewers resuming from 0..10 all need the store.
    let (hub, store, id, _topic) = hub_with_events(4, 300).await;
    let mut viewers = Vec::new();
    for i in 0..100u64 {
        let (mut sub, _) = hub.join(id.as_str(), Format::V2, Some(i % 10), 0).unwrap();
        viewers.push(tokio::spawn(async move { (i % 10, seqs_until(&mut sub, 300).await) }));
    }
    for v in viewers {
        let (from, seqs) = v.await.unwrap();
        assert_eq!(seqs, (from + 1..=300).collect::<Vec<_>>());
    }
    // Chunks of 256 from seq 0 and from 256 (the last 4 come from memory): a read or two
    // per chunk, not 100 each.
    let reads = store.reads.load(Ordering::Relaxed);
    assert!(reads <= 6, "{reads} store reads for 100 viewers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resuming_ahead_of_a_node_gets_what_follows_not_an_older_snapshot() {
    let store = Arc::new(Counting::default());
    let m = info("ahead", "tig");
    let inc = store.create_match(&m).await.unwrap();
    let hub = Arc::new(Hub::new(store.clone(), 64, 100_000).shared(true));
    let topic = hub.add(Arc::new(Match::new(m.clone())), inc);
    publish(&hub, &store, &topic, inc, &m, 1..=5).await;
    // The viewer saw up to 8 on a node that died; this one hears of 6..=10 a moment later.
    let late = {
        let (hub, store, m) = (hub.clone(), store.clone(), m.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            publish(&hub, &store, &topic, inc, &m, 6..=10).await;
        })
    };
    hub.wait_ready(m.id.as_str(), Some(8)).await;
    let (mut sub, _) = hub.join(m.id.as_str(), Format::V2, Some(8), 0).unwrap();
    assert_eq!(seqs_until(&mut sub, 10).await, vec![9, 10]);
    late.await.unwrap();
    // A node on its own does not wait: it knows everything there is.
    let alone = Hub::new(store.clone(), 64, 100_000);
    let started = std::time::Instant::now();
    alone.wait_ready("zzz-yyy-2011-09-10", Some(3)).await;
    assert!(started.elapsed() < Duration::from_millis(100));
}
