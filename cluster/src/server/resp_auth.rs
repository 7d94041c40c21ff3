//! Authentication on RESP connections, in Redis's words: AUTH, HELLO …
//! AUTH and ACL WHOAMI, and the check every other command passes before
//! it runs (NOAUTH before authentication, NOPERM for a role or key-pattern
//! violation).

use std::sync::Arc;

use corekv_net::resp::{Command, Reply};

use crate::auth::{AuthError, Authenticator, Principal, DEFAULT_USER};
use crate::runtime::metrics::{bump, ShardMetrics};

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOPERM_KEY: &str = "NOPERM No permissions to access a key";

/// Answers the connection commands (AUTH, HELLO, ACL WHOAMI) and refuses
/// what the connection's user may not run. `None`: run `cmd`. With
/// authentication off (`auth` is `None`) only the connection commands are
/// answered here; everything else runs as before.
pub(super) async fn screen(
    auth: Option<&Authenticator>,
    metrics: &ShardMetrics,
    user: &mut Option<Arc<Principal>>,
    cmd: &Command,
) -> Option<Reply> {
    match cmd {
        Command::Auth {
            user: name,
            password,
        } => Some(match auth {
            None if name.is_none() => Reply::Error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
            ),
            None => Reply::ok(),
            Some(auth) => {
                let name = name.as_deref().unwrap_or(DEFAULT_USER.as_bytes());
                match auth.authenticate(name, password).await {
                    Ok(p) => {
                        *user = Some(p);
                        Reply::ok()
                    }
                    Err(e) => wrongpass(metrics, &e),
                }
            }
        }),
        Command::Hello { version, auth: creds } => {
            if version.is_some_and(|v| v != 2) {
                return Some(Reply::Error(
                    "NOPROTO unsupported protocol version (this server speaks RESP2 only)".into(),
                ));
            }
            if let Some(auth) = auth {
                match creds {
                    Some((name, password)) => match auth.authenticate(name, password).await {
                        Ok(p) => *user = Some(p),
                        Err(e) => return Some(wrongpass(metrics, &e)),
                    },
                    None if user.is_none() => {
                        return Some(Reply::Error(
                            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
                        ))
                    }
                    None => {}
                }
            }
            Some(hello_reply())
        }
        Command::AclWhoami => Some(match (auth, user.as_ref()) {
            (None, _) => Reply::Bulk(Some(DEFAULT_USER.as_bytes().to_vec())),
            (Some(_), Some(p)) => Reply::Bulk(Some(p.name().as_bytes().to_vec())),
            (Some(_), None) => Reply::Error(NOAUTH.into()),
        }),
        Command::Ping(_) | Command::Quit => None,
        _ => {
            auth?;
            let Some(p) = user.as_ref() else {
                return Some(Reply::Error(NOAUTH.into()));
            };
            let refusal = permitted(p, cmd);
            if refusal.is_some() {
                bump(&metrics.client_permission_refusals);
            }
            refusal
        }
    }
}

/// WRONGPASS, counted; a failure other than a wrong password (no thread
/// for argon2) is logged too, as the client cannot tell it apart.
fn wrongpass(metrics: &ShardMetrics, e: &AuthError) -> Reply {
    bump(&metrics.client_auth_failures);
    if !matches!(e, AuthError::WrongPassword) {
        tracing::warn!(error = %e, "client authentication failed");
    }
    Reply::Error(WRONGPASS.into())
}

/// `None` when `p` may run `cmd`, else the NOPERM refusal.
fn permitted(p: &Principal, cmd: &Command) -> Option<Reply> {
    let (keys, write): (&mut dyn Iterator<Item = &[u8]>, bool) = match cmd {
        Command::Get(k) | Command::Ttl(k) => (&mut std::iter::once(k.as_slice()), false),
        Command::Exists(ks) | Command::Mget(ks) => (&mut ks.iter().map(Vec::as_slice), false),
        Command::Set { key, .. } | Command::Expire { key, .. } => {
            (&mut std::iter::once(key.as_slice()), true)
        }
        Command::Del(ks) => (&mut ks.iter().map(Vec::as_slice), true),
        Command::Mset(pairs) => (&mut pairs.iter().map(|(k, _)| k.as_slice()), true),
        _ => return None,
    };
    if write && !p.may_write() {
        return Some(Reply::Error(format!(
            "NOPERM User {} has no permissions to run the '{}' command",
            p.name(),
            command_name(cmd)
        )));
    }
    for k in keys {
        if !p.may_access(k) {
            return Some(Reply::Error(NOPERM_KEY.into()));
        }
    }
    None
}

fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Set { .. } => "set",
        Command::Expire { .. } => "expire",
        Command::Del(_) => "del",
        Command::Mset(_) => "mset",
        _ => "command",
    }
}

/// HELLO's answer (RESP2: a flat array of field names and values).
fn hello_reply() -> Reply {
    let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
    Reply::Array(Some(vec![
        bulk("server"),
        bulk("redis"),
        bulk("version"),
        bulk("7.0.0"),
        bulk("proto"),
        Reply::Integer(2),
        bulk("mode"),
        bulk("standalone"),
        bulk("role"),
        bulk("master"),
        bulk("modules"),
        Reply::Array(Some(Vec::new())),
    ]))
}
