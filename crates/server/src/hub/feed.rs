//! A [`Feed`]: every frame of one match, for a group of parked viewers.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{Frame, TopicKey};

/// Every frame of one match, in order, for a group of viewers at the live edge.
pub(crate) struct Feed {
    rx: broadcast::Receiver<Arc<Frame>>,
    key: TopicKey,
}

/// What a [`Feed`] yields.
#[derive(Debug)]
pub(crate) enum FeedItem {
    Frame(Arc<Frame>),
    /// Frames were lost because the group fell a whole ring behind: its viewers must catch up
    /// one by one (through a [`Subscription`]).
    Lagged,
    /// The match is gone (cancelled).
    Closed,
}

impl Feed {
    pub(super) fn new(rx: broadcast::Receiver<Arc<Frame>>, key: TopicKey) -> Feed {
        Feed { rx, key }
    }

    /// The incarnation of the match this feed follows.
    pub(crate) fn key(&self) -> TopicKey {
        self.key.clone()
    }

    /// The next frame. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> FeedItem {
        match self.rx.recv().await {
            Ok(f) => FeedItem::Frame(f),
            Err(RecvError::Lagged(_)) => FeedItem::Lagged,
            Err(RecvError::Closed) => FeedItem::Closed,
        }
    }

    /// The next frame if one is ready.
    pub(crate) fn try_recv(&mut self) -> Option<FeedItem> {
        match self.rx.try_recv() {
            Ok(f) => Some(FeedItem::Frame(f)),
            Err(TryRecvError::Lagged(_)) => Some(FeedItem::Lagged),
            Err(TryRecvError::Closed) => Some(FeedItem::Closed),
            Err(TryRecvError::Empty) => None,
        }
    }
}
