//! Native protocol messages.

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;

pub use crate::frame::HEADER_BYTES;

/// A per-request consistency level (for the cluster; a single node treats
/// every level as ONE). Encoded in one byte: 0 default, 1 ONE, 2 TWO,
/// 3 QUORUM, 4 ALL, `0x80 | n` for an explicit count n in 1..=127.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The cluster's default.
    #[default]
    Default,
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// A majority of replicas.
    Quorum,
    /// Every replica.
    All,
    /// An explicit number of replicas (1..=127).
    Count(u8),
}

impl Consistency {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Consistency::Default => 0,
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Quorum => 3,
            Consistency::All => 4,
            Consistency::Count(n) => 0x80 | (n & 0x7f),
        }
    }

    /// Parses the wire byte; `None` for an unassigned value.
    pub fn from_byte(b: u8) -> Option<Consistency> {
        Some(match b {
            0 => Consistency::Default,
            1 => Consistency::One,
            2 => Consistency::Two,
            3 => Consistency::Quorum,
            4 => Consistency::All,
            n if n & 0x80 != 0 && n & 0x7f != 0 => Consistency::Count(n & 0x7f),
            _ => return None,
        })
    }
}

/// A client request with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// Request kinds. Opcodes: GET 0x01, PUT 0x02, DELETE 0x03, PING 0x04,
/// TOPOLOGY 0x05, STATUS 0x06, ADMIN 0x07, AUTH 0x08.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Read a key: all siblings and a causal context.
    Get {
        /// Read consistency.
        consistency: Consistency,
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value.
    Put {
        /// Write consistency.
        consistency: Consistency,
        /// Time to live in ms; 0 = none.
        ttl_ms: u64,
        /// Causal context from an earlier read (empty = none): the write
        /// supersedes what that read returned.
        context: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a key.
    Delete {
        /// Write consistency.
        consistency: Consistency,
        /// Causal context from an earlier read (empty = none).
        context: Vec<u8>,
        /// The key.
        key: Vec<u8>,
    },
    /// Liveness check.
    Ping,
    /// The node's topology (shards and their ports).
    Topology,
    /// Node figures as JSON.
    Status,
    /// An operator command as UTF-8 JSON, e.g. `{"op": "repair"}`;
    /// answered with STATUS-style JSON (see docs/PROTOCOL.md).
    Admin(Vec<u8>),
    /// Authenticate the connection as `user` (opcode 0x08). The password
    /// travels as sent: use it only over loopback or a protected network
    /// until the port has TLS. Answered OK, or ERROR UNAUTHENTICATED.
    Auth {
        /// The user name.
        user: Vec<u8>,
        /// The password.
        password: Vec<u8>,
    },
}

impl RequestBody {
    /// The opcode byte.
    pub fn opcode(&self) -> u8 {
        match self {
            RequestBody::Get { .. } => 0x01,
            RequestBody::Put { .. } => 0x02,
            RequestBody::Delete { .. } => 0x03,
            RequestBody::Ping => 0x04,
            RequestBody::Topology => 0x05,
            RequestBody::Status => 0x06,
            RequestBody::Admin(_) => 0x07,
            RequestBody::Auth { .. } => 0x08,
        }
    }
}

/// One version of a key as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The value, or `None` for a delete marker.
    pub value: Option<Vec<u8>>,
    /// Writer's timestamp (hybrid logical clock: wall ms << 16 | logical).
    pub timestamp: u64,
    /// Expiry in Unix ms; 0 = never.
    pub expires_at_ms: u64,
}

/// A response with the id of the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// Response kinds. Opcodes: VALUE 0x81, NOT_FOUND 0x82, OK 0x83, PONG 0x84,
/// TOPOLOGY 0x85, STATUS 0x86, ERROR 0xFF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// The key's siblings and the context to write back with.
    Value {
        /// Opaque causal context.
        context: Vec<u8>,
        /// Every sibling (at least one).
        siblings: Vec<Sibling>,
    },
    /// No live value; the context still covers any delete markers.
    NotFound {
        /// Opaque causal context (may be empty).
        context: Vec<u8>,
    },
    /// A write succeeded; the context covers it.
    Ok {
        /// Opaque causal context.
        context: Vec<u8>,
    },
    /// Answer to PING.
    Pong,
    /// Topology blob (JSON text from a single node).
    Topology(Vec<u8>),
    /// Status JSON.
    Status(Vec<u8>),
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ResponseBody {
    /// The opcode byte.
    pub fn opcode(&self) -> u8 {
        match self {
            ResponseBody::Value { .. } => 0x81,
            ResponseBody::NotFound { .. } => 0x82,
            ResponseBody::Ok { .. } => 0x83,
            ResponseBody::Pong => 0x84,
            ResponseBody::Topology(_) => 0x85,
            ResponseBody::Status(_) => 0x86,
            ResponseBody::Error { .. } => 0xFF,
        }
    }
}

/// Error codes of ERROR responses (u16 on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the frame could not be parsed.
    BadFrame,
    /// 2: unknown opcode.
    UnknownOpcode,
    /// 3: key empty or above the limit.
    KeyTooLarge,
    /// 4: value above the limit.
    ValueTooLarge,
    /// 5: frame above the limit (the connection is closed after this).
    FrameTooLarge,
    /// 6: protocol version not supported.
    UnsupportedVersion,
    /// 7: the server is at a limit; retry later.
    Overloaded,
    /// 8: not enough replicas are up.
    Unavailable,
    /// 9: replicas did not answer in time.
    Timeout,
    /// 10: a bug or unexpected state on the server.
    Internal,
    /// 11: the addressed shard does not own the key.
    NotOwner,
    /// 12: the storage failed (disk full, I/O error).
    Storage,
    /// 13: the key holds too many versions (count or bytes); read it and
    /// write back with its context to resolve the siblings.
    TooManySiblings,
    /// 14: the causal context has more entries than the server accepts.
    ContextTooLarge,
    /// 15: a clock reading in the request is too far in the future.
    ClockSkew,
    /// 16: the connection has not authenticated (internode: no valid
    /// cluster-secret proof); nothing else is answered until it does.
    Unauthenticated,
    /// 17: authenticated, but not allowed to do this.
    Forbidden,
    /// Any other code (from a newer server).
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::UnknownOpcode => 2,
            ErrorCode::KeyTooLarge => 3,
            ErrorCode::ValueTooLarge => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::UnsupportedVersion => 6,
            ErrorCode::Overloaded => 7,
            ErrorCode::Unavailable => 8,
            ErrorCode::Timeout => 9,
            ErrorCode::Internal => 10,
            ErrorCode::NotOwner => 11,
            ErrorCode::Storage => 12,
            ErrorCode::TooManySiblings => 13,
            ErrorCode::ContextTooLarge => 14,
            ErrorCode::ClockSkew => 15,
            ErrorCode::Unauthenticated => 16,
            ErrorCode::Forbidden => 17,
            ErrorCode::Other(n) => n,
        }
    }

    /// Parses a wire value.
    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::UnknownOpcode,
            3 => ErrorCode::KeyTooLarge,
            4 => ErrorCode::ValueTooLarge,
            5 => ErrorCode::FrameTooLarge,
            6 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::Overloaded,
            8 => ErrorCode::Unavailable,
            9 => ErrorCode::Timeout,
            10 => ErrorCode::Internal,
            11 => ErrorCode::NotOwner,
            12 => ErrorCode::Storage,
            13 => ErrorCode::TooManySiblings,
            14 => ErrorCode::ContextTooLarge,
            15 => ErrorCode::ClockSkew,
            16 => ErrorCode::Unauthenticated,
            17 => ErrorCode::Forbidden,
            n => ErrorCode::Other(n),
        }
    }
}
