//! # corekv-net — wire protocols
//!
//! Sans-io codecs for corekv's two client protocols, plus a blocking client:
//!
//! - the native binary protocol ([`native`]): length-prefixed frames with a
//!   request id, so clients pipeline and responses may return out of order;
//!   specified byte by byte in docs/PROTOCOL.md;
//! - a RESP2 subset ([`resp`]) so redis-cli, redis-benchmark and Redis
//!   client libraries work unchanged.
//!
//! Invariants: decoders take bytes and return a complete frame, "need more
//! bytes", or a typed error — they never panic and never allocate more than
//! a frame's declared size, which is checked against [`Limits`] from the
//! header alone, before the body is buffered.

pub mod async_client;
pub mod client;
mod frame;
mod limits;
pub mod mux;
pub mod native;
pub mod outbox;
pub mod peer;
pub mod resp;
pub mod tls;

pub use limits::Limits;
