//! WebSocket frames (SPEC 5, RFC 6455): each v2 frame as one unmasked text message, encoded once
//! per event and shared by every WebSocket viewer; the goodbye (a `bye` message and a close frame
//! with its code); keepalive pings; and reading what a client may send (pings, closes, messages
//! that are ignored). Frame headers are tungstenite's; what to send when is the transport's.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::{v2, Bye, ByeReason};

/// The largest client frame payload read: a viewer has nothing to say but pings (at most 125
/// bytes) and closes; a bigger frame is refused with 1009 rather than buffered.
pub(crate) const MAX_CLIENT_FRAME: u64 = 4096;

/// A v2 frame (ending in `\n`) as one WebSocket text message, without the newline.
pub(crate) fn text(v2_frame: &[u8]) -> Bytes {
    let payload = v2_frame.strip_suffix(b"\n").unwrap_or(v2_frame);
    frame(OpCode::Data(Data::Text), payload)
}

/// The goodbye: the `bye` message, then the close frame whose code SPEC 5 gives for its reason.
pub(crate) fn bye(bye: &Bye) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(&text(&v2::bye_frame(bye)));
    out.extend_from_slice(&close(close_code(bye.reason)));
    out.freeze()
}

/// The close code that follows a `bye` (SPEC 5).
pub(crate) fn close_code(reason: ByeReason) -> u16 {
    match reason {
        ByeReason::MatchOver | ByeReason::Cancelled => 1000,
        ByeReason::Shutdown => 1001,
        ByeReason::TooSlow => 1008,
        ByeReason::Full => 1013,
        ByeReason::BadRequest => 1008,
        ByeReason::NotFound => 1008,
    }
}

/// A close frame with `code` and no reason text.
pub(crate) fn close(code: u16) -> Bytes {
    frame(OpCode::Control(Control::Close), &code.to_be_bytes())
}

/// A close frame with `code` and a reason for people (cut at a character boundary to the 123
/// bytes a control frame leaves it, RFC 6455 5.5).
pub(crate) fn close_because(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Control(Control::Close), &payload)
}

/// The keepalive ping (empty payload), the same bytes for everyone.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// The answer to a client's ping.
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload)
}

fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(len, &mut out);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A complete frame a client sent, as far as a viewer cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientFrame {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The client closes (with this code, if it gave one): answer and end the viewer.
    Close(Option<u16>),
    /// A message, a pong or a continuation: ignored.
    Ignored,
}

/// Why the client's input ends the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// Not a WebSocket frame a client may send (unmasked, unknown opcode, reserved bits):
    /// close with 1002.
    Protocol,
    /// A frame larger than [`MAX_CLIENT_FRAME`]: close with 1009.
    TooBig,
}

impl ClientError {
    /// The close code to answer with.
    pub(crate) fn code(&self) -> u16 {
        match self {
            ClientError::Protocol => u16::from(CloseCode::Protocol),
            ClientError::TooBig => u16::from(CloseCode::Size),
        }
    }
}

/// Takes the complete frames at the start of `buf` (leaving an incomplete one in place). An error
/// ends the connection (RFC 6455 7.1.7) and drops the frames before it in `buf`: a close the
/// client sent in the same read as a malformed frame is answered with the error's code.
pub(crate) fn read_client(buf: &mut BytesMut) -> Result<Vec<ClientFrame>, ClientError> {
    let mut frames = Vec::new();
    loop {
        let mut cursor = Cursor::new(&buf[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(frames),
            Err(_) => return Err(ClientError::Protocol),
        };
        // Control frames carry at most 125 bytes and are never fragmented (RFC 6455, 5.5).
        if matches!(header.opcode, OpCode::Control(_)) && (len > 125 || !header.is_final) {
            return Err(ClientError::Protocol);
        }
        if len > MAX_CLIENT_FRAME {
            return Err(ClientError::TooBig);
        }
        let start = cursor.position() as usize;
        let end = start + len as usize;
        if buf.len() < end {
            return Ok(frames);
        }
        let Some(mask) = header.mask else { return Err(ClientError::Protocol) };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ClientError::Protocol);
        }
        let mut payload = buf[start..end].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let _ = buf.split_to(end);
        frames.push(match header.opcode {
            OpCode::Control(Control::Ping) => ClientFrame::Ping(payload),
            OpCode::Control(Control::Close) => ClientFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            OpCode::Control(Control::Pong)
            | OpCode::Data(Data::Text | Data::Binary | Data::Continue) => ClientFrame::Ignored,
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(ClientError::Protocol)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn a_v2_frame_becomes_one_text_message_without_its_newline() {
        let f = text(b"{\"seq\":1}\n");
        assert_eq!(&f[..], b"\x81\x09{\"seq\":1}");
        let long = vec![b'x'; 300];
        let f = text(&long);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
    }

    #[test]
    fn the_goodbye_is_a_bye_message_then_a_close_with_the_reasons_code() {
        let b = bye(&Bye::new(ByeReason::TooSlow));
        let msg = br#"{"kind":"bye","reason":"too_slow"}"#;
        assert_eq!(b[0], 0x81);
        assert_eq!(&b[2..2 + msg.len()], msg);
        assert_eq!(&b[2 + msg.len()..], &[0x88, 2, 0x03, 0xF0]);
        assert_eq!(close_code(ByeReason::Shutdown), 1001);
        assert_eq!(close_code(ByeReason::Full), 1013);
        assert_eq!(close_code(ByeReason::MatchOver), 1000);
    }

    #[test]
    fn a_close_carries_its_reason_within_a_control_frames_125_bytes() {
        assert_eq!(&close_because(1008, "late")[..], b"\x88\x06\x03\xF0late");
        let long = close_because(1008, &"é".repeat(100));
        assert_eq!(long.len(), 2 + 2 + 122, "cut before a character that would not fit");
        assert_eq!(long[1], 124);
    }

    #[test]
    fn client_frames_are_read_whole_and_unmasked() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&masked(0x89, b"hi"));
        buf.extend_from_slice(&masked(0x81, b"ignored"));
        buf.extend_from_slice(&masked(0x88, &[0x03, 0xE8]));
        let partial = masked(0x89, b"later");
        buf.extend_from_slice(&partial[..4]);
        let frames = read_client(&mut buf).unwrap();
        assert_eq!(
            frames,
            [
                ClientFrame::Ping(b"hi".to_vec()),
                ClientFrame::Ignored,
                ClientFrame::Close(Some(1000))
            ]
        );
        assert_eq!(&buf[..], &partial[..4]);
        buf.extend_from_slice(&partial[4..]);
        assert_eq!(read_client(&mut buf).unwrap(), [ClientFrame::Ping(b"later".to_vec())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn unmasked_or_oversized_client_frames_end_the_connection() {
        let mut buf = BytesMut::from(&b"\x89\x02hi"[..]);
        assert_eq!(read_client(&mut buf), Err(ClientError::Protocol));
        let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4][..]);
        assert_eq!(read_client(&mut buf), Err(ClientError::TooBig));
    }

    #[test]
    fn an_error_drops_the_frames_read_with_it() {
        let mut buf = BytesMut::from(&masked(0x88, &[0x03, 0xE8])[..]);
        buf.extend_from_slice(b"\x89\x02hi");
        assert_eq!(read_client(&mut buf), Err(ClientError::Protocol));
    }

    #[test]
    fn control_frames_over_125_bytes_or_fragmented_end_the_connection() {
        let mut buf = BytesMut::from(&masked(0x89, &[b'x'; 125])[..]);
        assert_eq!(read_client(&mut buf), Ok(vec![ClientFrame::Ping(vec![b'x'; 125])]));
        // A ping of 126 bytes (16-bit length), masked with zeros.
        let mut long = vec![0x89u8, 0x80 | 126, 0, 126, 0, 0, 0, 0];
        long.extend_from_slice(&[b'x'; 126]);
        assert_eq!(read_client(&mut BytesMut::from(&long[..])), Err(ClientError::Protocol));
        // A ping without FIN.
        let mut buf = BytesMut::from(&masked(0x09, b"hi")[..]);
        assert_eq!(read_client(&mut buf), Err(ClientError::Protocol));
    }
}
