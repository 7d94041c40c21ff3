//! Client authentication and roles: who may talk to a node, and what each
//! user may do.
//!
//! Two configuration keys turn it on (with neither set, nothing is
//! checked and no per-command work is done beyond one `Option` test):
//! - `requirepass`, as in Redis: the password of the `default` user, who
//!   has the `admin` role over every key;
//! - `users_file`, a TOML file of named users ([`UserTable::load`]), each
//!   with an argon2 PHC password hash (never the password itself), a
//!   [`Role`] and the key patterns it may touch.
//!
//! Verifying a password runs argon2, which is slow on purpose. It runs on
//! the blocking-thread pool, never on a shard's thread, at most
//! [`cache::VERIFICATIONS_IN_FLIGHT_MAX`] at a time per shard (a flood of
//! wrong passwords waits its turn instead of taking every CPU); each
//! shard keeps the credentials it verified in a bounded
//! [`cache::CredentialCache`] (see [`Authenticator`]), so a reconnect
//! storm re-presenting the same credentials costs one argon2 verification
//! per distinct credential.
//!
//! A connection's authenticated user is a [`Principal`]; checking a command
//! against it ([`Principal::may_write`], [`Principal::may_access`]) is a role
//! compare and a glob match, with no allocation.

pub mod cache;
pub mod reload;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

pub use cache::{Authenticator, CredentialCache};

/// The user `requirepass` and a one-argument `AUTH` authenticate as.
pub const DEFAULT_USER: &str = "default";

/// Why credentials or a users file were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, or the password does not match.
    #[error("invalid username-password pair")]
    WrongPassword,
    /// The users file could not be read or written.
    #[error("users file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The users file is not valid.
    #[error("users file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Hashing a new password failed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// What a user may do. Every role may PING, authenticate and read node
/// status (TOPOLOGY, STATUS, INFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads of keys matching the user's patterns.
    Read,
    /// Reads and writes (SET, DEL, EXPIRE, PUT, DELETE) of matching keys.
    ReadWrite,
    /// Everything, including the native ADMIN request.
    Admin,
}

impl Role {
    /// Parses `read`, `readwrite` or `admin`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "readwrite" => Some(Role::ReadWrite),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The name used in the users file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        }
    }
}

/// A key pattern: bytes where `*` matches any run of bytes (possibly
/// empty); every other byte matches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern(Vec<u8>);

impl KeyPattern {
    /// The pattern `text`.
    pub fn new(text: &str) -> KeyPattern {
        KeyPattern(text.as_bytes().to_vec())
    }

    /// Whether `key` matches; linear backtracking, no allocation.
    pub fn matches(&self, key: &[u8]) -> bool {
        let p = self.0.as_slice();
        let (mut pi, mut ki) = (0usize, 0usize);
        // Where the last `*` was, and the key position it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while ki < key.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ki));
                pi += 1;
            } else if pi < p.len() && p[pi] == key[ki] {
                pi += 1;
                ki += 1;
            } else if let Some((sp, sk)) = star {
                // Let the last `*` swallow one more byte.
                pi = sp + 1;
                ki = sk + 1;
                star = Some((sp, sk + 1));
            } else {
                return false;
            }
        }
        p[pi.min(p.len())..].iter().all(|&b| b == b'*')
    }
}

/// An authenticated user: name, role and key patterns. Shared (read-only)
/// by every connection authenticated as it.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    name: String,
    role: Role,
    keys: Vec<KeyPattern>,
}

impl Principal {
    /// A user with `role` over keys matching any of `keys`.
    pub fn new(name: &str, role: Role, keys: Vec<KeyPattern>) -> Principal {
        Principal {
            name: name.to_string(),
            role,
            keys,
        }
    }

    /// The user's name (what `ACL WHOAMI` answers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the user may write (role `readwrite` or `admin`).
    pub fn may_write(&self) -> bool {
        self.role >= Role::ReadWrite
    }

    /// Whether the user may run operator commands (role `admin`).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether `key` matches one of the user's patterns.
    pub fn may_access(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|p| p.matches(key))
    }
}

/// One user of the users file, as stored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The argon2 hash in PHC form (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// `read`, `readwrite` or `admin`.
    pub role: Role,
    /// Key patterns (`*` is a wildcard); absent means every key.
    #[serde(default = "every_key")]
    pub keys: Vec<String>,
}

fn every_key() -> Vec<String> {
    vec!["*".to_string()]
}

/// The users file: `[users.<name>]` tables of [`UserEntry`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Users by name.
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, UserEntry>,
}

impl UsersFile {
    /// Reads `path`; a missing file is an empty one (for `corekv user add`).
    pub fn read_or_empty(path: &Path) -> Result<UsersFile, AuthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| AuthError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
            Err(source) => Err(AuthError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Adds or replaces `name`, hashing `password` with argon2id (a random
    /// salt each time).
    pub fn set_user(
        &mut self,
        name: &str,
        password: &[u8],
        role: Role,
        keys: Vec<String>,
    ) -> Result<(), AuthError> {
        let hash = hash_password(password)?;
        let keys = if keys.is_empty() { every_key() } else { keys };
        self.users.insert(
            name.to_string(),
            UserEntry {
                password_hash: hash,
                role,
                keys,
            },
        );
        Ok(())
    }

    /// Writes the file atomically (a temporary file renamed over it),
    /// readable by its owner only (mode 0600).
    pub fn write_atomically(&self, path: &Path) -> Result<(), AuthError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| AuthError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = toml::to_string(self).map_err(|e| AuthError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Hashes `password` with argon2id and a fresh random salt, in PHC form.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// How a user's password is checked.
#[derive(Debug)]
enum Secret {
    /// An argon2 PHC hash (users file).
    Hash(Box<PasswordHash>),
    /// `requirepass`: the configured text itself, compared in constant time.
    Plain(Vec<u8>),
}

/// Every user a node accepts, loaded once at start and shared by the
/// shards (immutable).
#[derive(Debug)]
pub struct UserTable {
    users: HashMap<String, (Secret, Arc<Principal>)>,
}

impl UserTable {
    /// The table `requirepass` and `users_file` describe, or `None` when
    /// neither is set (authentication off). A users-file `default` user
    /// and `requirepass` together are refused.
    pub fn load(
        requirepass: Option<&str>,
        users_file: Option<&Path>,
    ) -> Result<Option<UserTable>, AuthError> {
        if requirepass.is_none() && users_file.is_none() {
            return Ok(None);
        }
        let mut users = HashMap::new();
        if let Some(path) = users_file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
                path: shown.clone(),
                source,
            })?;
            let file: UsersFile = toml::from_str(&text).map_err(|e| AuthError::Invalid {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            for (name, entry) in file.users {
                let hash =
                    PasswordHash::new(&entry.password_hash).map_err(|e| AuthError::Invalid {
                        path: shown.clone(),
                        reason: format!("user {name}: password_hash is not a PHC string: {e}"),
                    })?;
                let keys = entry.keys.iter().map(|k| KeyPattern::new(k)).collect();
                let principal = Arc::new(Principal::new(&name, entry.role, keys));
                users.insert(name, (Secret::Hash(Box::new(hash)), principal));
            }
        }
        if let Some(pass) = requirepass {
            if users.contains_key(DEFAULT_USER) {
                return Err(AuthError::Invalid {
                    path: users_file
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    reason: "defines the user \"default\" and requirepass is set too; keep one"
                        .into(),
                });
            }
            let principal = Arc::new(Principal::new(
                DEFAULT_USER,
                Role::Admin,
                vec![KeyPattern::new("*")],
            ));
            users.insert(
                DEFAULT_USER.to_string(),
                (Secret::Plain(pass.as_bytes().to_vec()), principal),
            );
        }
        Ok(Some(UserTable { users }))
    }

    /// A table with no users (every AUTH refused).
    pub fn empty() -> UserTable {
        UserTable {
            users: HashMap::new(),
        }
    }

    /// The user named `name`, if the table has it.
    pub fn principal(&self, name: &str) -> Option<Arc<Principal>> {
        self.users.get(name).map(|(_, p)| p.clone())
    }

    /// Whether checking `user`'s password runs argon2 (a users-file user):
    /// slow on purpose, so callers run it off the shard's thread.
    pub fn is_hashed(&self, user: &[u8]) -> bool {
        std::str::from_utf8(user)
            .ok()
            .and_then(|name| self.users.get(name))
            .is_some_and(|(secret, _)| matches!(secret, Secret::Hash(_)))
    }

    /// Checks `password` for `user` the slow way (argon2 for users-file
    /// users; tens of milliseconds of CPU).
    pub fn verify(&self, user: &[u8], password: &[u8]) -> Result<Arc<Principal>, AuthError> {
        let name = std::str::from_utf8(user).map_err(|_| AuthError::WrongPassword)?;
        let (secret, principal) = self.users.get(name).ok_or(AuthError::WrongPassword)?;
        let good = match secret {
            Secret::Hash(hash) => Argon2::default()
                .verify_password(password, hash.as_ref())
                .is_ok(),
            Secret::Plain(expected) => constant_time_eq(expected, password),
        };
        if good {
            Ok(principal.clone())
        } else {
            Err(AuthError::WrongPassword)
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the table has no user (a users file with none: nobody
    /// can connect).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The loaded user table as the node configuration carries it to the
/// shards (compared by identity).
#[derive(Clone, Debug)]
pub struct SharedUsers(pub Arc<reload::UserStore>);

impl PartialEq for SharedUsers {
    fn eq(&self, other: &SharedUsers) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        let p = KeyPattern::new("session:*");
        assert!(p.matches(b"session:1"));
        assert!(p.matches(b"session:"));
        assert!(!p.matches(b"other:1"));
        assert!(!p.matches(b"session"));
        let p = KeyPattern::new("a*b*c");
        assert!(p.matches(b"abc"));
        assert!(p.matches(b"axxbyyc"));
        assert!(!p.matches(b"axxbyy"));
        assert!(!p.matches(b"axxcb"));
        assert!(KeyPattern::new("*").matches(b""));
        assert!(KeyPattern::new("exact").matches(b"exact"));
        assert!(!KeyPattern::new("exact").matches(b"exact2"));
    }

    #[test]
    fn roles_order() {
        let p = Principal::new("r", Role::Read, vec![KeyPattern::new("*")]);
        assert!(!p.may_write() && !p.is_admin());
        let p = Principal::new("w", Role::ReadWrite, vec![]);
        assert!(p.may_write() && !p.is_admin() && !p.may_access(b"k"));
        let p = Principal::new("a", Role::Admin, vec![]);
        assert!(p.may_write() && p.is_admin());
    }

    #[test]
    fn users_file_round_trip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut file = UsersFile::read_or_empty(&path).unwrap();
        file.set_user("alice", b"s3cret", Role::Read, vec!["session:*".into()])
            .unwrap();
        file.write_atomically(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let table = UserTable::load(None, Some(&path)).unwrap().unwrap();
        assert!(table.is_hashed(b"alice") && !table.is_hashed(b"bob"));
        let alice = table.verify(b"alice", b"s3cret").unwrap();
        assert_eq!((alice.name(), alice.role()), ("alice", Role::Read));
        assert!(alice.may_access(b"session:9") && !alice.may_access(b"other:1"));
        assert!(table.verify(b"alice", b"wrong").is_err());
        assert!(table.verify(b"bob", b"s3cret").is_err());
        assert!(UserTable::load(None, None).unwrap().is_none());
        let t = UserTable::load(Some("pw"), None).unwrap().unwrap();
        assert!(!t.is_hashed(b"default"));
        assert!(t.verify(b"default", b"pw").unwrap().is_admin());
        assert!(t.verify(b"default", b"pW").is_err());
    }
}
