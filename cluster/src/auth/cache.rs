//! Verified credentials, cached per shard so a reconnect storm costs one
//! argon2 verification per distinct credential, not one per connection.
//!
//! The cache maps HMAC-SHA256(user ‖ 0 ‖ password) under a random key
//! drawn when the shard starts (never stored, never sent) to the verified
//! [`Principal`]. Only successful verifications are inserted: a wrong
//! password is verified again (with argon2) every time. The map is bounded
//! ([`CACHE_ENTRIES_MAX`]); when full, an arbitrary entry makes room. It
//! lives in one shard's thread (`Rc`/`RefCell`, no lock).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{AuthError, Principal, UserTable};

/// Most credentials one shard's cache holds.
pub const CACHE_ENTRIES_MAX: usize = 4096;

/// A bounded map from a keyed digest of (user, password) to the user those
/// credentials were verified as.
pub struct CredentialCache {
    key: [u8; 32],
    entries: HashMap<[u8; 32], Arc<Principal>>,
    max: usize,
}

impl CredentialCache {
    /// An empty cache of at most `max` entries, with a fresh random key.
    pub fn new(max: usize) -> Result<CredentialCache, AuthError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| AuthError::Hash(e.to_string()))?;
        Ok(CredentialCache {
            key,
            entries: HashMap::new(),
            max: max.max(1),
        })
    }

    fn digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        m.update(&(user.len() as u64).to_le_bytes());
        m.update(user);
        m.update(password);
        m.finalize().into_bytes().into()
    }

    /// The user these credentials were verified as, if cached.
    pub fn get(&self, user: &[u8], password: &[u8]) -> Option<Arc<Principal>> {
        self.entries.get(&self.digest(user, password)).cloned()
    }

    /// Remembers credentials that verified as `principal`.
    pub fn insert(&mut self, user: &[u8], password: &[u8], principal: Arc<Principal>) {
        let digest = self.digest(user, password);
        if self.entries.len() >= self.max && !self.entries.contains_key(&digest) {
            if let Some(victim) = self.entries.keys().next().copied() {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(digest, principal);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every entry (after the user table changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Most argon2 verifications one shard runs at once (on the blocking
/// pool). Each takes tens of milliseconds of a CPU: a client sending wrong
/// passwords as fast as it can gets this many CPUs' worth at most, and
/// the pool keeps threads for the engine's file work.
pub const VERIFICATIONS_IN_FLIGHT_MAX: u64 = 2;

/// One shard's view of authentication: the node's [`UserTable`] and this
/// shard's [`CredentialCache`].
pub struct Authenticator {
    store: Arc<super::reload::UserStore>,
    /// The table in use and its generation (refreshed from `store`).
    users: RefCell<Arc<UserTable>>,
    generation: Cell<u64>,
    cache: RefCell<CredentialCache>,
    /// Admits [`VERIFICATIONS_IN_FLIGHT_MAX`] argon2 runs at a time.
    slots: glommio::sync::Semaphore,
    verifications: Cell<u64>,
}

impl Authenticator {
    /// A shard's authenticator over `users`.
    pub fn new(users: Arc<UserTable>) -> Result<Authenticator, AuthError> {
        Authenticator::with_store(Arc::new(super::reload::UserStore::new(users, None, None)))
    }

    /// A shard's authenticator over the node's reloadable `store`: after a
    /// reload its cache is emptied and its connections re-resolve their
    /// user (see [`Authenticator::recheck`]).
    pub fn with_store(store: Arc<super::reload::UserStore>) -> Result<Authenticator, AuthError> {
        let (generation, users) = store.current();
        Ok(Authenticator {
            store,
            users: RefCell::new(users),
            generation: Cell::new(generation),
            cache: RefCell::new(CredentialCache::new(CACHE_ENTRIES_MAX)?),
            slots: glommio::sync::Semaphore::new(VERIFICATIONS_IN_FLIGHT_MAX),
            verifications: Cell::new(0),
        })
    }

    /// The user `user`/`password` authenticate as: from the cache, or
    /// verified and then cached. Wrong credentials are never cached. An
    /// argon2 verification runs on the blocking pool (the shard keeps
    /// serving meanwhile); must be called inside a glommio executor.
    pub async fn authenticate(
        &self,
        user: &[u8],
        password: &[u8],
    ) -> Result<Arc<Principal>, AuthError> {
        self.refresh();
        if let Some(p) = self.cache.borrow().get(user, password) {
            return Ok(p);
        }
        let users = self.users.borrow().clone();
        let principal = if users.is_hashed(user) {
            let _slot = self
                .slots
                .acquire_permit(1)
                .await
                .map_err(|e| AuthError::Hash(e.to_string()))?;
            // Another connection may have verified the same credentials
            // while this one waited for a slot.
            if let Some(p) = self.cache.borrow().get(user, password) {
                return Ok(p);
            }
            self.verifications.set(self.verifications.get() + 1);
            verify_on_a_thread(users.clone(), user, password).await?
        } else {
            users.verify(user, password)?
        };
        if self.store.generation() != self.generation.get() {
            // Reloaded while verifying: do not cache under the new table.
            return Ok(principal);
        }
        self.cache
            .borrow_mut()
            .insert(user, password, principal.clone());
        Ok(principal)
    }

    /// Takes the store's current table if a reload replaced it (one atomic
    /// load otherwise), emptying the credential cache; returns the
    /// generation in use.
    pub fn refresh(&self) -> u64 {
        let g = self.store.generation();
        if g != self.generation.get() {
            let (g, users) = self.store.current();
            *self.users.borrow_mut() = users;
            self.cache.borrow_mut().clear();
            self.generation.set(g);
        }
        self.generation.get()
    }

    /// Re-resolves a connection's `user` after a reload: `seen` is the
    /// generation the connection last checked. A removed user becomes
    /// `None` (its next command is refused as unauthenticated); a changed
    /// role or key patterns apply from the next command.
    pub fn recheck(&self, user: &mut Option<Arc<Principal>>, seen: &mut u64) {
        let g = self.refresh();
        if *seen == g {
            return;
        }
        *seen = g;
        if let Some(p) = user.take() {
            *user = self.users.borrow().principal(p.name());
        }
    }

    /// How many argon2 verifications this shard started.
    pub fn verifications(&self) -> u64 {
        self.verifications.get()
    }

    /// Credentials cached on this shard.
    pub fn cached(&self) -> usize {
        self.cache.borrow().len()
    }
}

/// Runs argon2 on a thread of its own and waits for it without blocking
/// the shard. Not the executor's blocking thread: that one does the
/// engine's fsyncs and unlinks, which must not queue behind a password.
/// Threads are bounded by the callers' [`VERIFICATIONS_IN_FLIGHT_MAX`];
/// starting one costs microseconds against argon2's milliseconds.
async fn verify_on_a_thread(
    users: Arc<UserTable>,
    user: &[u8],
    password: &[u8],
) -> Result<Arc<Principal>, AuthError> {
    let (tx, rx) = futures_channel::oneshot::channel();
    let (user, password) = (user.to_vec(), password.to_vec());
    std::thread::Builder::new()
        .name("corekv-argon2".into())
        .spawn(move || {
            let _ = tx.send(users.verify(&user, &password));
        })
        .map_err(|e| AuthError::Hash(format!("starting the verification thread: {e}")))?;
    rx.await
        .map_err(|_| AuthError::Hash("the verification thread ended without an answer".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, UsersFile};

    fn table() -> (tempfile::TempDir, Arc<UserTable>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut file = UsersFile::default();
        file.set_user("alice", b"pw-a", Role::ReadWrite, vec![])
            .unwrap();
        file.set_user("bob", b"pw-b", Role::Read, vec![]).unwrap();
        file.write_atomically(&path).unwrap();
        let t = UserTable::load(None, Some(&path)).unwrap().unwrap();
        (dir, Arc::new(t))
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(f)
    }

    #[test]
    fn many_verifies_of_one_credential_run_argon2_once() {
        let (_dir, users) = table();
        run(async move {
            let auth = Authenticator::new(users).unwrap();
            for _ in 0..1000 {
                let p = auth.authenticate(b"alice", b"pw-a").await.unwrap();
                assert_eq!(p.name(), "alice");
            }
            assert_eq!(auth.verifications(), 1);
            auth.authenticate(b"bob", b"pw-b").await.unwrap();
            assert_eq!(auth.verifications(), 2);
            assert_eq!(auth.cached(), 2);
        });
    }

    #[test]
    fn wrong_passwords_are_not_cached() {
        let (_dir, users) = table();
        run(async move {
            let auth = Authenticator::new(users).unwrap();
            auth.authenticate(b"alice", b"pw-a").await.unwrap();
            for _ in 0..3 {
                assert!(matches!(
                    auth.authenticate(b"alice", b"nope").await,
                    Err(AuthError::WrongPassword)
                ));
            }
            // Each wrong attempt was verified (and refused) again.
            assert_eq!(auth.verifications(), 4);
            // Another user's password does not open alice's entry.
            assert!(auth.authenticate(b"alice", b"pw-b").await.is_err());
            assert!(auth.authenticate(b"bob", b"pw-a").await.is_err());
            assert_eq!(auth.cached(), 1);
        });
    }

    #[test]
    fn the_shard_keeps_running_while_argon2_verifies() {
        let (_dir, users) = table();
        run(async move {
            let auth = Authenticator::new(users).unwrap();
            let ticks = std::rc::Rc::new(Cell::new(0u32));
            let t = ticks.clone();
            let ticker = glommio::spawn_local(async move {
                for _ in 0..1000 {
                    t.set(t.get() + 1);
                    glommio::yield_if_needed().await;
                    glommio::timer::sleep(std::time::Duration::from_micros(100)).await;
                }
            });
            let before = ticks.get();
            assert!(auth.authenticate(b"alice", b"nope").await.is_err());
            // argon2 took milliseconds on another thread; the shard's
            // other task ran meanwhile.
            assert!(ticks.get() > before, "the shard was blocked during argon2");
            drop(ticker);
        });
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = CredentialCache::new(8).unwrap();
        let p = Arc::new(Principal::new("u", Role::Read, vec![]));
        for i in 0..100u32 {
            cache.insert(b"u", &i.to_le_bytes(), p.clone());
            assert!(cache.len() <= 8);
        }
        assert!(cache.get(b"u", &99u32.to_le_bytes()).is_some());
    }
}
