//! The restart path as a property: a match published through ingest onto SQLite in requests of
//! random sizes (refused events included), then rebuilt by `Ingest::restore` from the reopened
//! store, is exactly the match that was live before (the scripts are the state rules' own,
//! `state::tests::properties`).

use proptest::prelude::*;

use super::*;
use crate::state::tests::properties::{expected, script};
use crate::store::sqlite::SqliteStore;

/// A node's ingest and hub on the SQLite store in `dir`, restored from what it holds.
async fn node(dir: &std::path::Path) -> (Arc<Hub>, Ingest) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).expect("the store opens"));
    let hub = Arc::new(Hub::new(store.clone(), 64, 1_000));
    let ingest = Ingest::restore(store, hub.clone()).await.expect("the store's matches load");
    (hub, ingest)
}

proptest! {
    // Each case writes to SQLite with an fsync per request: few cases, short scripts.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_match_restored_from_the_store_equals_the_live_one(
        script in script(24),
        sizes in prop::collection::vec(1usize..=4, 32),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (live, restored) = runtime.block_on(async {
            let (hub, ingest) = node(dir.path()).await;
            let id = ingest.create(crate::store::memory::tests::info("elp", "tig")).await.unwrap();
            let events = expected(&script);
            let mut sizes = sizes.iter().cycle();
            let mut rest = &events[..];
            while let Some(first) = rest.first() {
                // A refused event alone; accepted ones in requests of up to `size`.
                let size = if first.accepted {
                    let size = *sizes.next().unwrap_or(&1);
                    rest.iter().take(size).take_while(|e| e.accepted).count()
                } else {
                    1
                };
                let (request, tail) = rest.split_at(size);
                rest = tail;
                let inputs: Vec<EventInput> = request.iter().map(|e| e.input.clone()).collect();
                let answer = answer(ingest.publish(&id, &inputs, None).await);
                match answer {
                    Answer::Ok(seqs) => assert!(first.accepted && seqs.len() == size, "{seqs:?}"),
                    Answer::Rejected { index: 0, .. } => assert!(!first.accepted),
                    other => panic!("{} refused with {other:?}", first.input.kind.as_str()),
                }
            }
            // What viewers see (the log view) and what requests validate against (the tip).
            let shown = hub.current(&id).expect("the match is served").1.state.clone();
            let tip = ingest.slot(&id).unwrap().tip.lock().await.state.clone();
            assert_eq!(shown, tip, "the log view and the tip agree");
            drop((hub, ingest));
            let (hub, ingest) = node(dir.path()).await;
            // An ended match is not held after a restart: it is read back when asked for.
            assert!(ingest.revive(&id).await.unwrap(), "the match is known");
            let restored = hub.current(&id).expect("the match is restored").1.state.clone();
            (tip, restored)
        });
        prop_assert_eq!(&*restored, &*live);
        prop_assert_eq!(restored.seq, expected(&script).iter().filter(|e| e.accepted).count() as u64);
    }
}
