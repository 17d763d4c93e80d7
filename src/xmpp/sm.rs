//! XEP-0198 Stream Management, the server's outbound half without I/O:
//! what was sent to the client and not yet acknowledged, and the count.
//!
//! Every stanza written to a client that enabled stream management goes
//! through [`StreamMgmt::sent`] and stays in the unacknowledged queue until
//! the client's `<a h/>` (or the `h` of a `<resume/>`) says it handled it.
//! Counts are modulo 2^32 (§4): `h` wraps, and the number a new `h`
//! acknowledges is its difference from the last one, wrapping too. The
//! inbound count (stanzas the server handled) is kept by [`super::c2s::C2s`],
//! which sees each stanza arrive.
//!
//! While the connection is gone (a detached, resumable session), stanzas
//! for the session still come here; on resumption the ones the client did
//! not acknowledge are sent again, in order, and when the session ends
//! they are routed again (messages to other resources or offline storage,
//! requests answered with an error), so nothing is lost unseen.

use std::collections::VecDeque;

use bytes::Bytes;

pub const NS_SM: &str = "urn:xmpp:sm:3";

/// The client acknowledged more than was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooHigh {
    /// How many stanzas were sent (mod 2^32).
    pub sent: u32,
}

/// Limits of the unacknowledged queue: past either, the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmLimits {
    pub max_stanzas: usize,
    pub max_bytes: usize,
}

/// One stream's outbound stream-management state.
#[derive(Debug)]
pub struct StreamMgmt {
    /// The resumption id (`None`: stream management without resumption).
    pub id: Option<String>,
    unacked: VecDeque<Bytes>,
    unacked_bytes: usize,
    /// The client's last `h`: stanzas it handled, mod 2^32.
    acked: u32,
    /// An `<r/>` was sent and its `<a/>` has not come.
    pub r_outstanding: bool,
    limits: SmLimits,
}

impl StreamMgmt {
    pub fn new(id: Option<String>, limits: SmLimits) -> StreamMgmt {
        StreamMgmt {
            id,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            acked: 0,
            r_outstanding: false,
            limits,
        }
    }

    /// A stanza goes to the client: kept until acknowledged. False when the
    /// queue is now over its limits (the session must end).
    pub fn sent(&mut self, stanza: Bytes) -> bool {
        self.unacked_bytes += stanza.len();
        self.unacked.push_back(stanza);
        self.within_limits()
    }

    pub fn within_limits(&self) -> bool {
        self.unacked.len() <= self.limits.max_stanzas && self.unacked_bytes <= self.limits.max_bytes
    }

    /// Stanzas sent so far (mod 2^32).
    pub fn sent_count(&self) -> u32 {
        // The queue never holds 2^32 stanzas (its limits are far lower).
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// The client handled `h` stanzas in all: the ones up to there leave
    /// the queue.
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(TooHigh {
                sent: self.sent_count(),
            });
        }
        for b in self.unacked.drain(..n) {
            self.unacked_bytes -= b.len();
        }
        self.acked = h;
        self.r_outstanding = false;
        Ok(())
    }

    /// The stanzas not acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Bytes> {
        self.unacked.iter()
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Everything not acknowledged, for routing again when the session ends.
    pub fn take_unacked(&mut self) -> VecDeque<Bytes> {
        self.unacked_bytes = 0;
        std::mem::take(&mut self.unacked)
    }

    /// Whether to ask the client for an acknowledgement now: something is
    /// unacknowledged and no request is outstanding (one at a time, so the
    /// requests cost at most one per round trip).
    pub fn wants_ack(&self) -> bool {
        !self.unacked.is_empty() && !self.r_outstanding
    }
}

/// `<a h='…'/>`.
pub fn answer(h: u32) -> Vec<u8> {
    format!("<a xmlns='{NS_SM}' h='{h}'/>").into_bytes()
}

pub const REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

/// `<failed/>` with a stanza error condition (and `h` when known).
pub fn failed(condition: &str, h: Option<u32>) -> Vec<u8> {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{NS_SM}'{h}><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm() -> StreamMgmt {
        StreamMgmt::new(
            Some("id".into()),
            SmLimits {
                max_stanzas: 10,
                max_bytes: 100,
            },
        )
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn acks_remove_what_was_handled() {
        let mut s = sm();
        for x in ["1", "2", "3"] {
            assert!(s.sent(b(x)));
        }
        assert_eq!(s.sent_count(), 3);
        assert!(s.wants_ack());
        s.r_outstanding = true;
        assert!(!s.wants_ack(), "one request at a time");
        s.ack(2).unwrap();
        assert!(!s.r_outstanding);
        assert_eq!(s.unacked().cloned().collect::<Vec<_>>(), [b("3")]);
        s.ack(2).unwrap();
        assert_eq!(s.unacked_len(), 1, "the same h again acknowledges nothing");
        assert_eq!(s.ack(5), Err(TooHigh { sent: 3 }));
        assert_eq!(s.ack(1), Err(TooHigh { sent: 3 }), "h never goes back");
        s.ack(3).unwrap();
        assert!(!s.wants_ack());
    }

    #[test]
    fn h_wraps_at_two_to_the_32() {
        let mut s = sm();
        s.acked = u32::MAX - 1;
        for x in ["a", "b", "c", "d"] {
            s.sent(b(x));
        }
        assert_eq!(s.sent_count(), 2, "MAX-1 + 4 wraps to 2");
        s.ack(u32::MAX).unwrap();
        assert_eq!(s.unacked_len(), 3);
        s.ack(1).unwrap();
        assert_eq!(s.unacked().cloned().collect::<Vec<_>>(), [b("d")]);
        assert_eq!(s.ack(3), Err(TooHigh { sent: 2 }));
        s.ack(2).unwrap();
        assert_eq!(s.unacked_len(), 0);
    }

    #[test]
    fn limits_in_stanzas_and_bytes() {
        let mut s = sm();
        for _ in 0..10 {
            assert!(s.sent(b("x")));
        }
        assert!(!s.sent(b("x")), "the 11th stanza");
        let mut s = sm();
        assert!(s.sent(Bytes::from(vec![b'x'; 100])));
        assert!(!s.sent(b("y")), "over 100 bytes");
        assert_eq!(s.take_unacked().len(), 2);
        assert!(s.within_limits());
    }

    #[test]
    fn nonzas() {
        assert_eq!(answer(7), b"<a xmlns='urn:xmpp:sm:3' h='7'/>");
        assert_eq!(
            failed("item-not-found", None),
            b"<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert!(String::from_utf8(failed("unexpected-request", Some(3)))
            .unwrap()
            .contains(" h='3'>"));
    }
}
