//! XMPP wire format: the element tree and the inbound stream parser.

pub mod element;
pub mod stream;
