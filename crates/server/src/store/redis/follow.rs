//! Following the log: a pub/sub subscription to the channel on which every write is announced,
//! turned into [`LogEntry`]s for the node. Announcements are lost while the subscription is
//! down, so each (re)subscription starts with `Resync`, and one more comes every
//! [`RESYNC_EVERY`] (a node that died between its write and its announcement is heard of then).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::codec::entry_from_announcement;
use super::conn::redacted;
use super::{keys, note_outcome, Target};
use crate::store::{LogEntry, StoreError};

/// How often the node compares its view with the store even when nothing seems lost.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Until the node stops listening: subscribe (to each address in turn), forward, resubscribe.
pub(super) async fn run(
    target: Target,
    tx: mpsc::Sender<LogEntry>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let addresses = target.addresses();
    let mut backoff = MIN_BACKOFF;
    for attempt in 0.. {
        let address = &addresses[attempt % addresses.len()];
        let shown = redacted(address);
        match subscribe(&target, address, &shown).await {
            Ok(pubsub) => {
                backoff = MIN_BACKOFF;
                tracing::debug!(address = %shown, "following the log");
                if tx.send(LogEntry::Resync).await.is_err() {
                    return;
                }
                let mut messages = pubsub.into_on_message();
                let mut resync = tokio::time::interval(RESYNC_EVERY);
                resync.tick().await;
                loop {
                    tokio::select! {
                        // The node stopped following (it is stopping).
                        _ = tx.closed() => return,
                        message = messages.next() => match message {
                            Some(m) => {
                                let Some(entry) = entry_from_announcement(m.get_payload_bytes())
                                else {
                                    tracing::warn!("an announcement on the log cannot be read");
                                    continue;
                                };
                                if tx.send(entry).await.is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = resync.tick() => {
                            if tx.send(LogEntry::Resync).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let lost = StoreError::Backend(format!("lost the subscription to {shown}"));
                note_outcome(&failure, Some(&lost));
            }
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                note_outcome(&failure, Some(&e));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes on `address` (`shown`: the same without its password, for errors).
async fn subscribe(
    target: &Target,
    address: &str,
    shown: &str,
) -> Result<redis::aio::PubSub, StoreError> {
    let fail = |e: redis::RedisError| StoreError::Backend(format!("redis at {shown}: {e}"));
    let client = target.client(address).map_err(fail)?;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
        .await
        .map_err(|_| StoreError::Backend(format!("redis at {shown} does not answer")))?
        .map_err(fail)?;
    pubsub.subscribe(keys::CHANNEL).await.map_err(fail)?;
    Ok(pubsub)
}
