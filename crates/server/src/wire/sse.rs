//! Server-Sent Events frames (SPEC 5): each v2 frame as `id: <seq>\nevent: <kind>\ndata: <v2
//! JSON>\n\n`, encoded once per event and shared by every SSE viewer; the snapshot (`event:
//! status`, its seq as id), the goodbye (no id) and the keepalive comment.

use bytes::{Bytes, BytesMut};

use super::{v2, Bye};
use crate::model::Seq;

/// A v2 frame (ending in `\n`) as one event. `id`: the event's seq (or the snapshot's).
pub(crate) fn event(id: Option<Seq>, kind: &str, v2_frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(v2_frame.len() + kind.len() + 40);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.to_string().as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // A v2 frame is one line ending in one `\n` (JSON escapes every line break inside it).
    out.extend_from_slice(v2_frame.strip_suffix(b"\n").unwrap_or(v2_frame));
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The goodbye: `event: bye` with no id, so a reconnecting `EventSource` resumes after the
/// last event it saw.
pub(crate) fn bye(bye: &Bye) -> Bytes {
    event(None, "bye", &v2::bye_frame(bye))
}

/// The keepalive comment, so that proxies see traffic on an idle stream.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(b": ping\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ByeReason;

    #[test]
    fn an_event_is_id_event_and_data_lines() {
        let f = event(Some(5), "goal", b"{\"seq\":5,\"kind\":\"goal\"}\n");
        assert_eq!(&f[..], b"id: 5\nevent: goal\ndata: {\"seq\":5,\"kind\":\"goal\"}\n\n");
    }

    #[test]
    fn the_bye_has_no_id() {
        let f = bye(&Bye::new(ByeReason::MatchOver));
        assert_eq!(&f[..], b"event: bye\ndata: {\"kind\":\"bye\",\"reason\":\"match_over\"}\n\n");
    }
}
