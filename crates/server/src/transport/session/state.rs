//! A viewer's session in each of its states, as data: following its match in a task of its own
//! ([`Following`]) or parked at the live edge in a shard ([`Parked`]), and the conversions
//! between the two. When a state is entered and what happens in it is the rest of `session`'s.

use std::net::TcpStream as StdStream;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::input::{drain_input, Drained, INPUT_DRAIN};
use crate::hub::{Format, Subscription};
use crate::model::Seq;
use crate::transport::conn::Conn;
use crate::transport::PortGuard;

/// A viewer following its match in a task: joining, catching up, waiting on a full socket,
/// holding part of a WebSocket frame, or between events while it cannot be parked.
pub(crate) struct Following {
    /// Plain TCP or TLS: only a plain one is ever parked (`conn.rs` says why).
    pub(super) stream: Conn,
    pub(super) sub: Subscription,
    pub(super) format: Format,
    /// Its place among the port's viewers, given back when the connection is closed.
    pub(super) guard: PortGuard,
    pub(super) input: Input,
    /// The end of a burst a shard could not write: it goes out before anything else.
    pub(super) unwritten: Vec<Bytes>,
}

/// What a viewer sent that is not answered yet: for a WebSocket client, the start of a frame
/// and when the rest must have come (SPEC 10); empty, and without a deadline, for the others.
/// Only a viewer holding part of a frame has a deadline, and only then is a timer armed for it.
#[derive(Default)]
pub(crate) struct Input {
    pub(super) bytes: BytesMut,
    pub(super) whole_by: Option<Instant>,
}

/// A viewer parked at the live edge: no task, no timer, no buffer, only this entry in a shard
/// (its socket is out of tokio's reactor, watched by the shard's epoll set).
pub(crate) struct Parked {
    pub(super) stream: StdStream,
    /// The last seq it was sent.
    pub(super) last: Seq,
    pub(super) format: Format,
    pub(super) guard: PortGuard,
}

impl Following {
    /// A viewer whose handshake joined it to a match. `input`: what it sent past its request
    /// (a WebSocket client's first frames).
    pub(crate) fn joined(
        stream: Conn,
        sub: Subscription,
        guard: PortGuard,
        format: Format,
        input: BytesMut,
    ) -> Following {
        let input = Input { bytes: input, whole_by: None };
        Following { stream, sub, format, guard, input, unwritten: Vec::new() }
    }

    /// Nothing is owed to it (no input to answer, no rest of a burst to write), it has
    /// everything the hub has handed out, and its connection is one a shard can write to: a
    /// shard may take it.
    pub(super) fn may_park(&self) -> bool {
        self.stream.parkable()
            && self.input.bytes.is_empty()
            && self.unwritten.is_empty()
            && self.sub.at_head()
    }
}

impl Parked {
    /// Back to a task: following `sub` (which goes on after `self.last`), writing `unwritten`
    /// first. What a WebSocket client sent is read here, before tokio's reactor has seen the
    /// socket (it would report no input until its next turn, and the task would park the viewer
    /// again at once, with the input still unread). `None` if the viewer is gone: it hung up
    /// without a frame to answer, or the socket cannot join the reactor.
    pub(super) fn follow(self, sub: Subscription, unwritten: Vec<Bytes>) -> Option<Following> {
        let Parked { stream, format, guard, .. } = self;
        let mut input = Input::default();
        if format == Format::Ws {
            let read = |buf: &mut [u8]| std::io::Read::read(&mut &stream, buf);
            // A client that closed with a close frame still gets the close answered.
            if drain_input(read, Some(&mut input.bytes), INPUT_DRAIN) == Drained::Ended
                && input.bytes.is_empty()
            {
                return None;
            }
        }
        let stream = Conn::Plain(TcpStream::from_std(stream).ok()?);
        Some(Following { stream, sub, format, guard, input, unwritten })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle viewer at the live edge costs this entry (plus its socket in the kernel); the
    /// benchmark holds the node to about a KiB per idle viewer, all in, so keep it small.
    #[test]
    fn a_parked_viewer_is_a_few_dozen_bytes() {
        assert!(std::mem::size_of::<Parked>() <= 32, "{}", std::mem::size_of::<Parked>());
    }
}
