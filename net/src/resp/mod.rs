//! RESP2, the Redis protocol: enough of it for redis-cli, redis-benchmark
//! and client libraries. [`parse_command`] turns client bytes into typed
//! [`Command`]s; [`Reply`] encodes answers.

mod command;
mod parse;
mod reply;

pub use command::{Command, SetCondition, SetExpiry, MAX_TTL_MS};
pub use parse::{parse_command, ParseError, Parsed};
pub use reply::{encode_bulk, Reply};
