//! The internode protocol (docs/PROTOCOL.md, "Internode protocol"): how a
//! coordinator shard asks a replica shard on another node to read or merge
//! a key. Framed like the native protocol; sans-io.
//!
//! Versioning for rolling upgrades: a connection opens with HELLO, always
//! framed as version 1 so every release can parse it. HELLO carries the
//! range of versions the caller speaks; the answer names the highest
//! version both speak, and every later frame on the connection uses it. A
//! frame whose version the receiver does not speak gets an ERROR
//! (`UnsupportedVersion`) naming the range it does.
//!
//! Authentication (when the cluster has a secret): the caller's HELLO
//! carries a fresh nonce; the replica answers with its own nonce and its
//! proof (a MAC over both nonces, the ids and the cluster name); the
//! caller checks it and sends AUTH with its own proof. Until that AUTH
//! checks out, the replica answers nothing else. The MACs are computed
//! by the cluster crate; this crate only carries the bytes.
//!
//! Sibling sets travel as the engine's encoding, opaque to this crate.

mod codec;

pub use codec::{decode_request, decode_response, encode_request, encode_response};

use crate::native::ErrorCode;

/// Oldest internode version this build speaks.
pub const VERSION_MIN: u8 = 1;
/// Newest internode version this build speaks (2 added HINT; 3 added
/// TREE, DIGESTS and SCAN for anti-entropy and streaming; 4 added MINT).
pub const VERSION_MAX: u8 = 4;
/// The first version with MINT.
pub const VERSION_MINT: u8 = 4;
/// The first version with HINT.
pub const VERSION_HINT: u8 = 2;
/// The first version with TREE, DIGESTS and SCAN.
pub const VERSION_RANGES: u8 = 3;
/// Bytes of a HELLO nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of a HELLO or AUTH proof (HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// Most indices one TREE request may name.
pub const TREE_INDICES_MAX: usize = 1 << 16;

/// A request from a coordinator shard to a replica shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRequest {
    /// Opens a connection: who is calling and which versions it speaks.
    Hello {
        /// Oldest version the caller speaks.
        version_min: u8,
        /// Newest version the caller speaks.
        version_max: u8,
        /// The calling node's id.
        node_id: u32,
        /// The cluster name; a replica refuses callers from another cluster.
        cluster: String,
        /// The caller's fresh challenge, sent when it has a cluster secret
        /// (an optional trailer: HELLOs without it parse as before).
        nonce: Option<[u8; NONCE_BYTES]>,
    },
    /// The caller's answer to the replica's challenge: its proof that it
    /// holds the cluster secret. Any version.
    Auth {
        /// MAC over the HELLO transcript (caller side).
        proof: [u8; PROOF_BYTES],
    },
    /// Read the replica's sibling set of `key` (tombstones included).
    Read {
        /// The key.
        key: Vec<u8>,
    },
    /// Merge an encoded sibling set into the replica's state of `key`.
    Apply {
        /// The key.
        key: Vec<u8>,
        /// Encoded sibling set (engine codec).
        set: Vec<u8>,
    },
    /// Keep a write for node `owner`, which is down, and hand it over when
    /// it is back (sloppy quorum). Version 2 and later.
    Hint {
        /// The replica the write is meant for.
        owner: u32,
        /// The key.
        key: Vec<u8>,
        /// Encoded sibling set (engine codec).
        set: Vec<u8>,
    },
    /// Hashes of nodes of the replica's Merkle tree over the tokens
    /// `start..=end` with `levels` levels below the root (fanout 16).
    /// Version 3 and later.
    Tree {
        /// First token.
        start: u64,
        /// Last token (inclusive).
        end: u64,
        /// Depth of the tree (leaves = 16^levels).
        levels: u8,
        /// Level asked for (0 = the root).
        level: u8,
        /// Node indices within that level.
        indices: Vec<u32>,
    },
    /// `(key, digest of its sibling set)` for keys of `start..=end` in
    /// `(token, key)` order, after `after`. Version 3 and later.
    Digests {
        /// First token.
        start: u64,
        /// Last token (inclusive).
        end: u64,
        /// Continue after this key (from the previous answer).
        after: Option<Vec<u8>>,
        /// Most keys to return.
        limit: u32,
    },
    /// Keys of `start..=end` with their encoded sibling sets, after
    /// `after` (streaming a range). Version 3 and later.
    Scan {
        /// First token.
        start: u64,
        /// Last token (inclusive).
        end: u64,
        /// Continue after this key.
        after: Option<Vec<u8>>,
        /// Most keys to return.
        limit: u32,
    },
    /// Coordinate a write of `key` on this replica (the caller is not one):
    /// mint a new version from the replica's own state of the key, store it
    /// here, and answer the state the other replicas must merge. Version 4
    /// and later.
    Mint {
        /// 0 = blind, 1 = the given context, 2 = overwrite (supersede every
        /// older version).
        context_kind: u8,
        /// Time to live in ms (0 = none).
        ttl_ms: u64,
        /// The client's context bytes (native-protocol format), for kind 1.
        context: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// The value, or `None` for a delete.
        value: Option<Vec<u8>>,
    },
}

impl PeerRequest {
    /// The opcode byte: HELLO 0x41, READ 0x42, APPLY 0x43, HINT 0x44,
    /// TREE 0x45, DIGESTS 0x46, SCAN 0x47, MINT 0x48, AUTH 0x49.
    pub fn opcode(&self) -> u8 {
        match self {
            PeerRequest::Hello { .. } => 0x41,
            PeerRequest::Read { .. } => 0x42,
            PeerRequest::Apply { .. } => 0x43,
            PeerRequest::Hint { .. } => 0x44,
            PeerRequest::Tree { .. } => 0x45,
            PeerRequest::Digests { .. } => 0x46,
            PeerRequest::Scan { .. } => 0x47,
            PeerRequest::Mint { .. } => 0x48,
            PeerRequest::Auth { .. } => 0x49,
        }
    }

    /// The first protocol version that has this request.
    pub fn version_needed(&self) -> u8 {
        match self {
            PeerRequest::Hello { .. }
            | PeerRequest::Auth { .. }
            | PeerRequest::Read { .. }
            | PeerRequest::Apply { .. } => 1,
            PeerRequest::Hint { .. } => VERSION_HINT,
            PeerRequest::Tree { .. } | PeerRequest::Digests { .. } | PeerRequest::Scan { .. } => {
                VERSION_RANGES
            }
            PeerRequest::Mint { .. } => VERSION_MINT,
        }
    }
}

/// A page of a range: entries in `(token, key)` order and where to go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries.
    pub entries: Vec<(Vec<u8>, T)>,
    /// Pass as `after` for the next page; `None` when the range is done.
    pub next_after: Option<Vec<u8>>,
}

/// The replica's half of an authenticated HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloChallenge {
    /// The replica's fresh nonce, which the caller's AUTH proof covers.
    pub nonce: [u8; NONCE_BYTES],
    /// The replica's proof over the HELLO transcript (replica side).
    pub proof: [u8; PROOF_BYTES],
}

/// A replica shard's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerResponse {
    /// Answer to HELLO: the version both ends now use, and who answers.
    Hello {
        /// Agreed version.
        version: u8,
        /// The replica node's id.
        node_id: u32,
        /// The replica node's shard count.
        shards: u16,
        /// When the replica has a cluster secret: its challenge and proof
        /// (an optional trailer).
        challenge: Option<HelloChallenge>,
    },
    /// Answer to AUTH: the caller's proof checked out.
    Authenticated,
    /// Answer to READ: the encoded sibling set, or `None` if the replica
    /// has never seen the key.
    Set(Option<Vec<u8>>),
    /// Answer to APPLY: merged and durable (per the replica's sync mode).
    Applied,
    /// Answer to TREE: one hash per index asked, in order.
    Hashes(Vec<u64>),
    /// Answer to DIGESTS.
    Digests(Page<u64>),
    /// Answer to SCAN: encoded sibling sets.
    Entries(Page<Vec<u8>>),
    /// Answer to MINT: stored here; the client's new context and the
    /// encoded state for the other replicas.
    Minted {
        /// The client's context (native-protocol format).
        context: Vec<u8>,
        /// Encoded sibling set (engine codec).
        set: Vec<u8>,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason (same codes as the native protocol).
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
}

impl PeerResponse {
    /// The opcode byte: HELLO 0xC1, SET 0xC2, APPLIED 0xC3, HASHES 0xC5,
    /// DIGESTS 0xC6, ENTRIES 0xC7, MINTED 0xC8, AUTHENTICATED 0xC9,
    /// ERROR 0xFF.
    pub fn opcode(&self) -> u8 {
        match self {
            PeerResponse::Hello { .. } => 0xC1,
            PeerResponse::Set(_) => 0xC2,
            PeerResponse::Applied => 0xC3,
            PeerResponse::Hashes(_) => 0xC5,
            PeerResponse::Digests(_) => 0xC6,
            PeerResponse::Entries(_) => 0xC7,
            PeerResponse::Minted { .. } => 0xC8,
            PeerResponse::Authenticated => 0xC9,
            PeerResponse::Error { .. } => 0xFF,
        }
    }
}
