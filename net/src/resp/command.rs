//! Typed RESP commands (sans-io): arguments in, a [`Command`] out, with
//! Redis's own wording for arity and syntax errors.

/// SET's expiry option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetExpiry {
    /// EX seconds.
    Seconds(u64),
    /// PX milliseconds.
    Millis(u64),
}

/// SET's NX / XX option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetCondition {
    /// Always write.
    #[default]
    Always,
    /// NX: only if absent.
    IfAbsent,
    /// XX: only if present.
    IfPresent,
}

/// A command the server understands, or why it cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// PING [message].
    Ping(Option<Vec<u8>>),
    /// ECHO message (redis-cli --pipe ends its stream with one).
    Echo(Vec<u8>),
    /// GET key.
    Get(Vec<u8>),
    /// SET key value [EX s | PX ms] [NX | XX].
    Set {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Optional expiry.
        expiry: Option<SetExpiry>,
        /// NX / XX.
        condition: SetCondition,
    },
    /// DEL key [key ...].
    Del(Vec<Vec<u8>>),
    /// EXISTS key [key ...].
    Exists(Vec<Vec<u8>>),
    /// EXPIRE key seconds.
    Expire {
        /// The key.
        key: Vec<u8>,
        /// Seconds (≤ 0 deletes the key, as in Redis).
        seconds: i64,
    },
    /// TTL key.
    Ttl(Vec<u8>),
    /// MGET key [key ...].
    Mget(Vec<Vec<u8>>),
    /// MSET key value [key value ...].
    Mset(Vec<(Vec<u8>, Vec<u8>)>),
    /// COMMAND [subcommand ...] (redis-cli asks at start-up).
    Command(Vec<Vec<u8>>),
    /// INFO [section].
    Info(Option<String>),
    /// CONFIG GET pattern (redis-benchmark asks at start-up).
    ConfigGet(Vec<u8>),
    /// SELECT db: only 0 exists.
    Select(i64),
    /// QUIT.
    Quit,
    /// AUTH [username] password.
    Auth {
        /// The user (`None`: the default user).
        user: Option<Vec<u8>>,
        /// The password.
        password: Vec<u8>,
    },
    /// HELLO [protover [AUTH username password] [SETNAME name]].
    Hello {
        /// The protocol version asked for, if any.
        version: Option<i64>,
        /// AUTH's username and password, if given.
        auth: Option<(Vec<u8>, Vec<u8>)>,
    },
    /// ACL WHOAMI.
    AclWhoami,
    /// Known command, bad arguments: the error text to send (without "-").
    Invalid(String),
    /// Not a command we know: its name.
    Unknown(String),
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

fn arity(name: &str) -> Command {
    Command::Invalid(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

impl Command {
    /// Interprets an argument list (command name first). Takes borrowed
    /// arguments so a parser can pass slices of its input buffer: only the
    /// fields a command keeps are copied.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Command {
        let Some((name_arg, rest)) = args.split_first() else {
            return Command::Unknown(String::new());
        };
        // Lower-case the name on the stack: every request has one.
        let raw = name_arg.as_ref();
        let mut buf = [0u8; 16];
        let name = match raw.len() {
            0..=16 => {
                for (d, s) in buf.iter_mut().zip(raw) {
                    *d = s.to_ascii_lowercase();
                }
                std::str::from_utf8(&buf[..raw.len()]).unwrap_or("")
            }
            _ => "",
        };
        let n = rest.len();
        let arg = |i: usize| rest[i].as_ref().to_vec();
        let all = || rest.iter().map(|a| a.as_ref().to_vec()).collect::<Vec<_>>();
        match name {
            "ping" if n <= 1 => Command::Ping((n == 1).then(|| arg(0))),
            "echo" if n == 1 => Command::Echo(arg(0)),
            "get" if n == 1 => Command::Get(arg(0)),
            "set" if n >= 2 => parse_set(rest),
            "del" if n >= 1 => Command::Del(all()),
            "exists" if n >= 1 => Command::Exists(all()),
            "expire" if n == 2 => match int(rest[1].as_ref()) {
                Some(seconds) if seconds > 0 && !ttl_fits(seconds as u64, 1000) => {
                    Command::Invalid("ERR invalid expire time in 'expire' command".into())
                }
                Some(seconds) => Command::Expire {
                    key: arg(0),
                    seconds,
                },
                None => Command::Invalid(NOT_INTEGER.into()),
            },
            "ttl" if n == 1 => Command::Ttl(arg(0)),
            "mget" if n >= 1 => Command::Mget(all()),
            "mset" if n >= 2 && n.is_multiple_of(2) => Command::Mset(
                rest.chunks_exact(2)
                    .map(|p| (p[0].as_ref().to_vec(), p[1].as_ref().to_vec()))
                    .collect(),
            ),
            "command" => Command::Command(all()),
            "info" if n <= 1 => Command::Info(rest.first().map(|s| lower(s.as_ref()))),
            "config" if n == 2 && rest[0].as_ref().eq_ignore_ascii_case(b"get") => {
                Command::ConfigGet(arg(1))
            }
            "config" => Command::Invalid("ERR only CONFIG GET is supported".into()),
            "select" if n == 1 => match int(rest[0].as_ref()) {
                Some(db) => Command::Select(db),
                None => Command::Invalid(NOT_INTEGER.into()),
            },
            "quit" => Command::Quit,
            "auth" if n == 1 => Command::Auth {
                user: None,
                password: arg(0),
            },
            "auth" if n == 2 => Command::Auth {
                user: Some(arg(0)),
                password: arg(1),
            },
            "hello" => parse_hello(rest),
            "acl" if n == 1 && rest[0].as_ref().eq_ignore_ascii_case(b"whoami") => {
                Command::AclWhoami
            }
            "acl" => Command::Invalid("ERR only ACL WHOAMI is supported".into()),
            "ping" | "echo" | "get" | "set" | "del" | "exists" | "expire" | "ttl" | "mget"
            | "mset" | "info" | "select" | "auth" => arity(name),
            _ => Command::Unknown(String::from_utf8_lossy(raw).into_owned()),
        }
    }
}

fn parse_hello<A: AsRef<[u8]>>(rest: &[A]) -> Command {
    let Some((first, options)) = rest.split_first() else {
        return Command::Hello {
            version: None,
            auth: None,
        };
    };
    let Some(version) = int(first.as_ref()) else {
        return Command::Invalid("ERR Protocol version is not an integer or out of range".into());
    };
    let mut auth = None;
    let mut i = 0;
    while i < options.len() {
        let opt = options[i].as_ref();
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < options.len() {
            auth = Some((
                options[i + 1].as_ref().to_vec(),
                options[i + 2].as_ref().to_vec(),
            ));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < options.len() {
            i += 2;
        } else {
            return Command::Invalid(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    Command::Hello {
        version: Some(version),
        auth,
    }
}

fn parse_set<A: AsRef<[u8]>>(rest: &[A]) -> Command {
    let (Some(key), Some(value)) = (rest.first(), rest.get(1)) else {
        return arity("set");
    };
    let mut expiry = None;
    let mut condition = SetCondition::Always;
    let mut it = rest[2..].iter().map(AsRef::as_ref);
    while let Some(opt) = it.next() {
        let is = |o: &[u8]| opt.eq_ignore_ascii_case(o);
        if is(b"nx") && condition == SetCondition::Always {
            condition = SetCondition::IfAbsent;
        } else if is(b"xx") && condition == SetCondition::Always {
            condition = SetCondition::IfPresent;
        } else if (is(b"ex") || is(b"px")) && expiry.is_none() {
            let seconds = is(b"ex");
            let Some(v) = it.next() else {
                return Command::Invalid(SYNTAX.into());
            };
            let unit = if seconds { 1000 } else { 1 };
            match int(v) {
                Some(t) if t > 0 && ttl_fits(t as u64, unit) => {
                    expiry = Some(if seconds {
                        SetExpiry::Seconds(t as u64)
                    } else {
                        SetExpiry::Millis(t as u64)
                    })
                }
                Some(_) => {
                    return Command::Invalid("ERR invalid expire time in 'set' command".into())
                }
                None => return Command::Invalid(NOT_INTEGER.into()),
            }
        } else {
            return Command::Invalid(SYNTAX.into());
        }
    }
    let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
    Command::Set {
        key,
        value,
        expiry,
        condition,
    }
}

/// Longest TTL accepted, in ms: as Redis does, a TTL whose expiry (now
/// plus the TTL, in ms) would not fit a signed 64-bit number is refused,
/// with room left for clocks until the year 4000.
pub const MAX_TTL_MS: u64 = i64::MAX as u64 - (1 << 46);

/// Whether `t` units of `unit_ms` make a TTL of at most [`MAX_TTL_MS`].
fn ttl_fits(t: u64, unit_ms: u64) -> bool {
    t.checked_mul(unit_ms).is_some_and(|ms| ms <= MAX_TTL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn set_options() {
        assert_eq!(
            Command::from_args(&args("set k v EX 10 NX")),
            Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                expiry: Some(SetExpiry::Seconds(10)),
                condition: SetCondition::IfAbsent
            }
        );
        assert_eq!(
            Command::from_args(&args("SET k v PX 0")),
            Command::Invalid("ERR invalid expire time in 'set' command".into())
        );
        // Expiries that overflow are refused, as Redis refuses them.
        assert_eq!(
            Command::from_args(&args("SET k v EX 9223372036854775")),
            Command::Invalid("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(
            Command::from_args(&args("SET k v PX 9223372036854775807")),
            Command::Invalid("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(
            Command::from_args(&args("EXPIRE k 9223372036854775807")),
            Command::Invalid("ERR invalid expire time in 'expire' command".into())
        );
        assert_eq!(
            Command::from_args(&args("SET k v NX XX")),
            Command::Invalid(SYNTAX.into())
        );
        assert_eq!(
            Command::from_args(&args("SET k v KEEPTTL")),
            Command::Invalid(SYNTAX.into())
        );
    }

    #[test]
    fn arity_and_unknown_use_redis_wording() {
        assert_eq!(
            Command::from_args(&args("GET")),
            Command::Invalid("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            Command::from_args(&args("FLUSHALL")),
            Command::Unknown("FLUSHALL".into())
        );
        assert_eq!(
            Command::from_args(&args("MSET a 1 b")),
            Command::Invalid("ERR wrong number of arguments for 'mset' command".into())
        );
        assert_eq!(
            Command::from_args(&args("EXPIRE k x")),
            Command::Invalid(NOT_INTEGER.into())
        );
    }
}
