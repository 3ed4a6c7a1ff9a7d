//! History read in aligned chunks for catching viewers up: one read and one encoding per chunk,
//! shared by every viewer that needs it meanwhile (a crowd resuming after a node loss is not N
//! reads).

use std::sync::Arc;

use super::{Chunk, EncodedEvent, Hub, Topic, CATCH_UP_CHUNK};
use crate::locks::lock;
use crate::model::Seq;
use crate::store::StoreError;

impl Hub {
    /// The chunk of `topic`'s history that holds the event after `last`: read once (at most
    /// [`CATCH_UP_READS`] reads at a time) and encoded once, for every viewer asking meanwhile.
    pub(super) async fn read_chunk(
        &self,
        topic: &Topic,
        last: Seq,
    ) -> Result<Arc<Chunk>, StoreError> {
        let start = last - last % CATCH_UP_CHUNK;
        let key = (topic.id.clone(), topic.inc, start);
        let cell = lock(&self.reads).entry(key.clone()).or_default().clone();
        let result = cell
            .get_or_init(|| async {
                let _permit = self.catch_up_reads.acquire().await;
                let page = self.store.history(&topic.id, start, CATCH_UP_CHUNK as usize).await?;
                let events = page.events.iter().map(EncodedEvent::new).collect();
                Ok(Arc::new(Chunk { inc: page.inc, events }))
            })
            .await
            .clone();
        // Done: whoever asks later reads anew (the chunk may have grown since).
        let mut reads = lock(&self.reads);
        if reads.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            reads.remove(&key);
        }
        result
    }
}
