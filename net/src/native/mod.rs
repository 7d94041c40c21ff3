//! The native binary protocol (docs/PROTOCOL.md).
//!
//! Every frame: `u32 length of the rest`, `u8 version = 1`, `u8 opcode`,
//! `u64 request id`, then the opcode's body; all little-endian. A client
//! may send many requests before reading; the server answers each with the
//! same request id, in any order.

mod codec;
mod types;

pub use codec::{decode_request, decode_response, encode_request, encode_response, FrameError};
pub use types::{
    Consistency, ErrorCode, Request, RequestBody, Response, ResponseBody, Sibling, HEADER_BYTES,
    VERSION,
};
