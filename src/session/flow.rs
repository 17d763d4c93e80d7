//! Flow control, the same for every protocol: a burst is absorbed by slowing
//! its senders, not by dropping what they sent.
//!
//! A session's queue has a high-water mark in bytes
//! ([`FlowLimits::high_water`], config `session_queue_high_water`). A sender
//! whose delivery leaves a queue at or over it waits, after the stanza or
//! packet it is handling, in [`wait_for_room`] — its own socket is not read
//! meanwhile, so TCP pushes back on its client — until the queue is under
//! half the mark, for at most [`WAIT_STEP`] at a time: then it handles its
//! next packet (acknowledgements and pings among them, so it never stalls a
//! reader of its own) and, if that fills the queue again, waits again.
//!
//! A receiver that keeps draining, however slowly, is never cut off. One
//! whose queue stays at the mark with nothing taken from it for
//! [`FlowLimits::slow_consumer`] (config `slow_consumer_timeout`) is kicked
//! as a slow consumer by the registry's sweep, and what was queued for it
//! then follows its protocol's rule (XMPP: messages re-routed or stored
//! offline, requests answered with an error; MQTT: QoS 1/2 kept for a
//! persistent session).
//!
//! A queue can pass the mark by at most one delivery per sender per
//! [`WAIT_STEP`]; deliveries that cannot wait (wills, retained messages on
//! subscribe) are bounded by each protocol's hard cap.

use std::time::Duration;

use super::Handle;

/// The longest one wait for room lasts before the sender goes on with its
/// next packet.
pub const WAIT_STEP: Duration = Duration::from_secs(1);
/// The flow-control settings every session shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Queue bytes at which senders are made to wait.
    pub high_water: u32,
    /// How long a receiver may drain nothing, with senders waiting, before
    /// it is cut off as a slow consumer.
    pub slow_consumer: Duration,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            high_water: 1 << 20,
            slow_consumer: Duration::from_secs(30),
        }
    }
}

impl FlowLimits {
    /// Senders go on once the queue is under this.
    pub fn low_water(&self) -> u32 {
        self.high_water / 2
    }
}

/// What a push did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The item was queued.
    pub queued: bool,
    /// The queue is at or over its high-water mark.
    pub congested: bool,
}

/// Waits until `target`'s queue has room (under the low-water mark), it has
/// no live connection left to drain it, or [`WAIT_STEP`] has passed.
pub async fn wait_for_room(target: &dyn Handle, limits: &FlowLimits) {
    let low = limits.low_water();
    let room = std::future::poll_fn(|cx| target.poll_room(cx, low));
    let _ = tokio::time::timeout(WAIT_STEP, room).await;
}
