//! Reading what a viewer sent, without waiting, in every state: the one loop that drains a
//! socket's input, keeping it (a WebSocket client's frames) or dropping it (TCP and SSE viewers
//! have nothing to say after their request), and telling whether the peer hung up.

use std::io;

use bytes::BytesMut;

/// Most bytes read from one viewer at a time when its input is dropped or set aside: a viewer
/// has little to say, so this only bounds the work a chatty one costs per turn (it is told
/// again when more is waiting).
pub(super) const INPUT_DRAIN: usize = 16 * 1024;

/// What draining a socket found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// Nothing more to read now (or `limit` reached): the peer is still there.
    Open,
    /// The peer hung up (end of stream) or the socket failed.
    Ended,
}

/// Reads with `read` (a non-blocking socket's read) until it would block, the peer hangs up or
/// `limit` bytes were read; appends what it read to `keep`, or drops it when `keep` is `None`.
pub(super) fn drain_input(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    mut keep: Option<&mut BytesMut>,
    limit: usize,
) -> Drained {
    let mut sink = [0u8; 4096];
    let mut left = limit;
    while left > 0 {
        let room = left.min(sink.len());
        match read(&mut sink[..room]) {
            Ok(0) => return Drained::Ended,
            Ok(n) => {
                if let Some(keep) = keep.as_deref_mut() {
                    keep.extend_from_slice(&sink[..n]);
                }
                left -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Open,
            Err(_) => return Drained::Ended,
        }
    }
    Drained::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket's reads, one result per call, then "would block".
    fn reads(script: Vec<io::Result<&'static [u8]>>) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut script = script.into_iter();
        let mut held: Option<&'static [u8]> = None;
        move |buf: &mut [u8]| {
            let chunk = match held.take() {
                Some(c) => c,
                None => match script.next() {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return Err(e),
                    None => return Err(io::ErrorKind::WouldBlock.into()),
                },
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                held = Some(&chunk[n..]);
            }
            Ok(n)
        }
    }

    #[test]
    fn keeps_everything_up_to_would_block() {
        let mut kept = BytesMut::new();
        let read = reads(vec![Ok(b"ab"), Err(io::ErrorKind::Interrupted.into()), Ok(b"cd")]);
        assert_eq!(drain_input(read, Some(&mut kept), 100), Drained::Open);
        assert_eq!(&kept[..], b"abcd");
    }

    #[test]
    fn an_end_of_stream_or_an_error_is_the_end_and_what_came_before_is_kept() {
        let mut kept = BytesMut::new();
        assert_eq!(
            drain_input(reads(vec![Ok(b"close"), Ok(b"")]), Some(&mut kept), 100),
            Drained::Ended
        );
        assert_eq!(&kept[..], b"close");
        let reset = reads(vec![Err(io::ErrorKind::ConnectionReset.into())]);
        assert_eq!(drain_input(reset, None, 100), Drained::Ended);
    }

    #[test]
    fn stops_at_the_limit_with_the_peer_still_there() {
        let mut kept = BytesMut::new();
        let read = reads(vec![Ok(b"0123456789"), Ok(b"")]);
        assert_eq!(drain_input(read, Some(&mut kept), 4), Drained::Open);
        assert_eq!(&kept[..], b"0123", "never more than the limit");
    }

    #[test]
    fn dropped_input_is_read_all_the_same() {
        let mut calls = 0;
        let read = |buf: &mut [u8]| {
            calls += 1;
            match calls {
                1..=3 => Ok(buf.len().min(4096)),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        assert_eq!(drain_input(read, None, INPUT_DRAIN), Drained::Open);
        assert_eq!(calls, 4);
    }
}
