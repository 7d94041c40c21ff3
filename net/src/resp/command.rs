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
    /// Interprets an argument list (command name first).
    pub fn from_args(mut args: Vec<Vec<u8>>) -> Command {
        if args.is_empty() {
            return Command::Unknown(String::new());
        }
        let name = lower(&args[0]);
        let rest: Vec<Vec<u8>> = args.drain(1..).collect();
        let n = rest.len();
        match name.as_str() {
            "ping" if n <= 1 => Command::Ping(rest.into_iter().next()),
            "echo" if n == 1 => Command::Echo(first(rest)),
            "get" if n == 1 => Command::Get(first(rest)),
            "set" if n >= 2 => parse_set(rest),
            "del" if n >= 1 => Command::Del(rest),
            "exists" if n >= 1 => Command::Exists(rest),
            "expire" if n == 2 => match int(&rest[1]) {
                Some(seconds) => Command::Expire {
                    key: first(rest),
                    seconds,
                },
                None => Command::Invalid(NOT_INTEGER.into()),
            },
            "ttl" if n == 1 => Command::Ttl(first(rest)),
            "mget" if n >= 1 => Command::Mget(rest),
            "mset" if n >= 2 && n.is_multiple_of(2) => {
                let mut pairs = Vec::with_capacity(n / 2);
                let mut it = rest.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Command::Mset(pairs)
            }
            "command" => Command::Command(rest),
            "info" if n <= 1 => Command::Info(rest.first().map(|s| lower(s))),
            "config" if n == 2 && lower(&rest[0]) == "get" => Command::ConfigGet(rest[1].clone()),
            "config" => Command::Invalid("ERR only CONFIG GET is supported".into()),
            "select" if n == 1 => match int(&rest[0]) {
                Some(db) => Command::Select(db),
                None => Command::Invalid(NOT_INTEGER.into()),
            },
            "quit" => Command::Quit,
            "ping" | "echo" | "get" | "set" | "del" | "exists" | "expire" | "ttl" | "mget"
            | "mset" | "info" | "select" => arity(&name),
            _ => Command::Unknown(String::from_utf8_lossy(&args[0]).into_owned()),
        }
    }
}

fn first(v: Vec<Vec<u8>>) -> Vec<u8> {
    v.into_iter().next().unwrap_or_default()
}

fn parse_set(rest: Vec<Vec<u8>>) -> Command {
    let mut it = rest.into_iter();
    let (Some(key), Some(value)) = (it.next(), it.next()) else {
        return arity("set");
    };
    let mut expiry = None;
    let mut condition = SetCondition::Always;
    while let Some(opt) = it.next() {
        match lower(&opt).as_str() {
            "nx" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            "xx" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            o @ ("ex" | "px") if expiry.is_none() => {
                let Some(v) = it.next() else {
                    return Command::Invalid(SYNTAX.into());
                };
                match int(&v) {
                    Some(t) if t > 0 => {
                        expiry = Some(if o == "ex" {
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
            }
            _ => return Command::Invalid(SYNTAX.into()),
        }
    }
    Command::Set {
        key,
        value,
        expiry,
        condition,
    }
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
            Command::from_args(args("set k v EX 10 NX")),
            Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                expiry: Some(SetExpiry::Seconds(10)),
                condition: SetCondition::IfAbsent
            }
        );
        assert_eq!(
            Command::from_args(args("SET k v PX 0")),
            Command::Invalid("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(
            Command::from_args(args("SET k v NX XX")),
            Command::Invalid(SYNTAX.into())
        );
        assert_eq!(
            Command::from_args(args("SET k v KEEPTTL")),
            Command::Invalid(SYNTAX.into())
        );
    }

    #[test]
    fn arity_and_unknown_use_redis_wording() {
        assert_eq!(
            Command::from_args(args("GET")),
            Command::Invalid("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            Command::from_args(args("FLUSHALL")),
            Command::Unknown("FLUSHALL".into())
        );
        assert_eq!(
            Command::from_args(args("MSET a 1 b")),
            Command::Invalid("ERR wrong number of arguments for 'mset' command".into())
        );
        assert_eq!(
            Command::from_args(args("EXPIRE k x")),
            Command::Invalid(NOT_INTEGER.into())
        );
    }
}
