//! What the hub hands out, encoded once: an event in every wire format, a match's snapshot,
//! and the frames of a match's ring.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::model::{Event, EventKind, Match, Millis, Seq};
use crate::wire::ByeReason;
use crate::wire::{sse, v1, v2, ws};

/// The wire format a viewer speaks; the hub hands it bytes already in that format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TCP v1 text blocks.
    V1,
    /// TCP v2 JSON lines.
    V2,
    /// v2 frames as WebSocket text messages (the whole frame, header included).
    Ws,
    /// v2 frames as Server-Sent Events.
    Sse,
}

impl Format {
    /// Every format, in the order of their discriminants (`Format as usize` indexes arrays).
    pub const ALL: [Format; 4] = [Format::V1, Format::V2, Format::Ws, Format::Sse];
}

/// One event, encoded once per wire format. The TCP forms are built with the event; the
/// WebSocket and SSE forms the first time a viewer of that format needs them, so a node with
/// no browser viewer never builds them.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    pub seq: Seq,
    /// When the server accepted it (for the delivery lag).
    pub ts: Millis,
    pub kind: EventKind,
    pub v1: Bytes,
    pub v2: Bytes,
    ws: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
}

impl EncodedEvent {
    pub(crate) fn new(ev: &Event) -> EncodedEvent {
        EncodedEvent::from_parts(ev.seq, ev.ts, ev.kind, v1::event_block(ev), v2::event_frame(ev))
    }

    /// An event from its TCP forms (the others are derived from v2 when needed).
    pub(crate) fn from_parts(
        seq: Seq,
        ts: Millis,
        kind: EventKind,
        v1: Bytes,
        v2: Bytes,
    ) -> EncodedEvent {
        EncodedEvent { seq, ts, kind, v1, v2, ws: OnceLock::new(), sse: OnceLock::new() }
    }

    /// The bytes of this event in `format`.
    pub(crate) fn bytes(&self, format: Format) -> &Bytes {
        match format {
            Format::V1 => &self.v1,
            Format::V2 => &self.v2,
            Format::Ws => self.ws.get_or_init(|| ws::text(&self.v2)),
            Format::Sse => {
                self.sse.get_or_init(|| sse::event(Some(self.seq), self.kind.as_str(), &self.v2))
            }
        }
    }
}

/// What travels through a match's ring.
#[derive(Debug)]
pub(crate) enum Frame {
    Event(EncodedEvent),
    /// The topic is closed (the match was cancelled, or its log rewound): every viewer is told
    /// goodbye for this reason.
    End(ByeReason),
}

/// A match as of some `seq`, shared by every reader of that moment; its `status` frame is
/// encoded at most once per format.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub state: Arc<Match>,
    v2: OnceLock<Bytes>,
    ws: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
    /// The match as `GET /1/match/<id>` shows it.
    json: OnceLock<Bytes>,
}

impl Snapshot {
    pub(super) fn new(state: Arc<Match>) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            state,
            v2: OnceLock::new(),
            ws: OnceLock::new(),
            sse: OnceLock::new(),
            json: OnceLock::new(),
        })
    }

    /// The match object of `GET /1/match/<id>`, encoded once per snapshot.
    pub(crate) fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| serde_json::to_vec(&*self.state).unwrap_or_default().into())
            .clone()
    }

    /// The v2 `status` frame of this snapshot.
    pub(crate) fn v2_frame(&self) -> Bytes {
        self.v2.get_or_init(|| v2::status_frame(&self.state)).clone()
    }

    /// The snapshot as sent to a viewer of `format` at time `now` (v1 headers carry the time
    /// of sending).
    pub(crate) fn frame(&self, format: Format, now: Millis) -> Bytes {
        match format {
            Format::V1 => v1::status_block(&self.state, now),
            Format::V2 => self.v2_frame(),
            Format::Ws => self.ws.get_or_init(|| ws::text(&self.v2_frame())).clone(),
            Format::Sse => self
                .sse
                .get_or_init(|| sse::event(Some(self.state.seq), "status", &self.v2_frame()))
                .clone(),
        }
    }
}
