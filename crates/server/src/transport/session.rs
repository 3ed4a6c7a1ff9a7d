//! A viewer's life after its handshake, whatever its transport, in one place. Its states:
//!
//! ```text
//!  handshake (tcp.rs, web.rs) ──joined──▶ Following (a task: follow.rs)
//!                                            │  ▲                │
//!                              at the live   │  │ handed back    │ bye, gone, close, cut
//!                              edge: park    ▼  │ (park/)        ▼
//!                                           Parked (a shard) ──▶ Closing (goodbye, close)
//! ```
//!
//! - **Following** ([`Following`], `state.rs`): a task writes what the hub hands out and answers
//!   what the viewer sends (`follow.rs`), until the viewer is at the live edge or must leave.
//! - **Parked** ([`Parked`], `state.rs`): at the live edge a viewer costs no task, timer or
//!   buffer, only 32 bytes in a shard (`park/`), which writes each burst to all its members.
//!   One the shard cannot serve without waiting (a full socket, a WebSocket frame to answer, a
//!   gap) is handed back to a task, through [`Viewers`]: the shards never call the follower.
//! - **Closing**: a goodbye in the viewer's format for its reason, then a lingering close
//!   (`close.rs`); parked viewers are told by their shard, spread over the drain window when
//!   the node stops.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::hub::Format;
use crate::telemetry::Limit;
use crate::transport::close::close;
use crate::transport::context::{goodbye, ViewerContext};
use crate::transport::write::write_all;
use crate::wire::{ws, ByeReason};

mod follow;
mod input;
mod park;
mod state;
#[cfg(test)]
mod tests;

use follow::{follow, Outcome};
use park::Parking;
pub(crate) use state::Following;

/// The node's viewers: what they share, and the shards that hold those parked.
pub(crate) struct Viewers {
    pub ctx: Arc<ViewerContext>,
    parking: Parking,
}

impl Viewers {
    pub(crate) fn new(ctx: Arc<ViewerContext>) -> Arc<Viewers> {
        Arc::new_cyclic(|me: &Weak<Viewers>| {
            let me = me.clone();
            // A viewer a shard hands back gets a task of its own, for the rest of its life.
            let to_task = Arc::new(move |viewer: Following| {
                if let Some(viewers) = me.upgrade() {
                    viewers.spawn(viewer);
                }
            });
            Viewers { ctx, parking: Parking::new(to_task) }
        })
    }

    /// Starts the life of a viewer that joined, in a task of its own.
    pub(crate) fn spawn(self: &Arc<Self>, viewer: Following) {
        let me = self.clone();
        self.ctx.tracker.spawn(async move { me.run(viewer).await });
    }

    /// The life of a viewer that joined, in this task: follows its match, parks it whenever it
    /// reaches the live edge (its task then ends), and says goodbye when its stream ends.
    pub(crate) async fn run(self: &Arc<Self>, mut viewer: Following) {
        let ctx = &self.ctx;
        let mut may_park = true;
        loop {
            match follow(ctx, &mut viewer, may_park).await {
                Outcome::AtHead => match self.parking.park(ctx, viewer) {
                    Ok(()) => return,
                    // Not parked (an event slipped in, the match ended, the node is stopping):
                    // wait for what comes next in this task before trying again.
                    Err(back) => {
                        viewer = back;
                        may_park = false;
                    }
                },
                outcome => return close_for(ctx, viewer, outcome).await,
            }
        }
    }
}

/// Closing: tells the viewer why its stream ends, in its format, and closes the connection.
async fn close_for(ctx: &ViewerContext, viewer: Following, outcome: Outcome) {
    let Following { mut stream, format, mut guard, .. } = viewer;
    let last_words = match outcome {
        Outcome::AtHead | Outcome::Gone => return,
        Outcome::Cut => {
            guard.leaving(ByeReason::TooSlow);
            None
        }
        Outcome::Close(code) => Some((ws::close(code), Duration::from_secs(1))),
        Outcome::FrameTimeout => {
            // A cut at the protocol's level, like a frame too big (1009) or malformed (1002):
            // a close frame and no `bye` (its reasons are the match's and the node's, SPEC 4),
            // with 1008 (policy violation) and a reason that names the limit, as SPEC 10 asks
            // of every limit hit.
            ctx.ports.metrics.limit_refused(Limit::WsFrameTimeout);
            guard.leaving(ByeReason::BadRequest);
            let reason = format!(
                "a frame must arrive whole within {} (--ws-frame-timeout)",
                humantime::format_duration(ctx.ws_frame_timeout)
            );
            Some((ws::close_because(1008, &reason), Duration::from_secs(1)))
        }
        Outcome::Bye(reason) => {
            guard.leaving(reason);
            // A viewer that was too slow gets a moment for its goodbye, not another full
            // timeout.
            let timeout = if reason == ByeReason::TooSlow {
                Duration::from_secs(1)
            } else {
                ctx.write_timeout
            };
            let frame = (format != Format::V1).then(|| ctx.bye(reason, format));
            frame.and_then(|bye| goodbye(format, &bye)).map(|frame| (frame, timeout))
        }
    };
    if let Some((frame, timeout)) = last_words {
        let _ = write_all(&mut stream, &[frame], timeout).await;
    }
    close(stream.finish(), guard).await;
}
