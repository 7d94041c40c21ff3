//! What a run asks for: the operation mix (YCSB A–F or custom), the key
//! space and value sizes.

use crate::keys::Distribution;
use crate::rng::Rng;
use crate::BenchError;

/// One kind of request the generator issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read one key (native GET, RESP GET).
    Read,
    /// Overwrite an existing key (native PUT without context, RESP SET).
    Update,
    /// Write a new key beyond the pre-populated ones.
    Insert,
    /// Read a key, then write it back (with the read's causal context on
    /// the native protocol); its latency spans both round trips.
    Rmw,
}

/// Number of [`OpKind`]s.
pub const OP_KINDS: usize = 4;

impl OpKind {
    /// Every kind, in index order.
    pub const ALL: [OpKind; OP_KINDS] = [OpKind::Read, OpKind::Update, OpKind::Insert, OpKind::Rmw];

    /// Dense index, for per-op arrays.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name used in output and in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Rmw => "rmw",
        }
    }

    fn parse(s: &str) -> Option<OpKind> {
        Some(match s {
            "read" | "get" => OpKind::Read,
            "update" | "put" | "set" => OpKind::Update,
            "insert" => OpKind::Insert,
            "rmw" | "read-modify-write" => OpKind::Rmw,
            _ => return None,
        })
    }
}

/// Relative weights of the operation kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; OP_KINDS],
    total: u32,
}

impl Mix {
    /// A mix from weights indexed by [`OpKind::index`]; at least one > 0.
    pub fn new(weights: [u32; OP_KINDS]) -> Result<Mix, BenchError> {
        let total = weights.iter().try_fold(0u32, |a, &w| a.checked_add(w));
        match total {
            Some(t) if t > 0 => Ok(Mix { weights, total: t }),
            _ => Err(BenchError::Config(
                "the operation mix needs at least one positive weight".into(),
            )),
        }
    }

    /// Parses `get=90,put=10` (names: get/read, put/set/update, insert,
    /// rmw). Weights are relative and need not sum to 100.
    pub fn parse(s: &str) -> Result<Mix, BenchError> {
        let mut w = [0u32; OP_KINDS];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                BenchError::Config(format!("mix entry {part:?} is not NAME=WEIGHT"))
            })?;
            let op = OpKind::parse(name.trim()).ok_or_else(|| {
                BenchError::Config(format!(
                    "unknown operation {name:?} in --mix (get, put, insert, rmw)"
                ))
            })?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                BenchError::Config(format!("weight {weight:?} in --mix is not a number"))
            })?;
            w[op.index()] = w[op.index()].saturating_add(weight);
        }
        Mix::new(w)
    }

    /// Weight of one kind.
    pub fn weight(&self, op: OpKind) -> u32 {
        self.weights[op.index()]
    }

    /// The kinds with a positive weight.
    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        OpKind::ALL.into_iter().filter(|k| self.weight(*k) > 0)
    }

    /// Draws the next operation.
    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> OpKind {
        let mut x = rng.below(u64::from(self.total)) as u32;
        for op in OpKind::ALL {
            let w = self.weights[op.index()];
            if x < w {
                return op;
            }
            x -= w;
        }
        OpKind::Read
    }

    /// `read=50,update=50` form, for output.
    pub fn describe(&self) -> String {
        self.kinds()
            .map(|k| format!("{}={}", k.name(), self.weight(k)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A YCSB core workload: its mix and its default key distribution.
pub fn ycsb(letter: &str, theta: f64) -> Result<(Mix, Distribution), BenchError> {
    let zipf = Distribution::Zipfian { theta };
    let (w, d) = match letter.to_ascii_lowercase().as_str() {
        "a" => ([50, 50, 0, 0], zipf),
        "b" => ([95, 5, 0, 0], zipf),
        "c" => ([100, 0, 0, 0], zipf),
        "d" => ([95, 0, 5, 0], Distribution::Latest { theta }),
        "e" => {
            return Err(BenchError::Config(
                "YCSB workload E needs range scans, which corekv does not offer; \
                 use A, B, C, D or F, or a custom --mix"
                    .into(),
            ))
        }
        "f" => ([50, 0, 0, 50], zipf),
        other => {
            return Err(BenchError::Config(format!(
                "unknown workload {other:?}: YCSB a, b, c, d or f"
            )))
        }
    };
    Ok((Mix::new(w)?, d))
}

/// Sizes of written values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueSize {
    /// Every value this many bytes.
    Fixed(usize),
    /// Uniform in [min, max] bytes.
    Range(usize, usize),
}

impl ValueSize {
    /// Parses `100` or `100..1000` (or `100-1000`).
    pub fn parse(s: &str) -> Result<ValueSize, BenchError> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| BenchError::Config(format!("value size {s:?}: {t:?} is not a number")))
        };
        let split = s.split_once("..").or_else(|| s.split_once('-'));
        match split {
            None => Ok(ValueSize::Fixed(num(s)?)),
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(BenchError::Config(format!(
                        "value size range {s:?} has min > max"
                    )));
                }
                Ok(if a == b {
                    ValueSize::Fixed(a)
                } else {
                    ValueSize::Range(a, b)
                })
            }
        }
    }

    /// Largest possible value.
    pub fn max(&self) -> usize {
        match *self {
            ValueSize::Fixed(n) | ValueSize::Range(_, n) => n,
        }
    }

    /// Draws a size.
    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> usize {
        match *self {
            ValueSize::Fixed(n) => n,
            ValueSize::Range(a, b) => a + rng.below((b - a + 1) as u64) as usize,
        }
    }
}

/// Bytes in every generated key: `k` and 15 decimal digits.
pub const KEY_LEN: usize = 16;

/// Writes key number `idx` as fixed-width ASCII (`k000000000000042`).
#[inline]
pub fn write_key(idx: u64, out: &mut [u8; KEY_LEN]) {
    out[0] = b'k';
    let mut x = idx;
    for i in (1..KEY_LEN).rev() {
        out[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
}

/// A complete workload description.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Name for output (`ycsb-a`, `custom`).
    pub name: String,
    /// Operation mix.
    pub mix: Mix,
    /// Key distribution.
    pub dist: Distribution,
    /// Pre-populated keys (inserts add beyond these).
    pub key_count: u64,
    /// Written value sizes.
    pub value_size: ValueSize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parse_and_pick() {
        let m = Mix::parse("get=90, put=10").unwrap();
        assert_eq!(m.weight(OpKind::Read), 90);
        assert_eq!(m.weight(OpKind::Update), 10);
        assert_eq!(m.describe(), "read=90,update=10");
        let mut rng = Rng::new(1);
        let reads = (0..100_000)
            .filter(|_| m.pick(&mut rng) == OpKind::Read)
            .count();
        assert!((89_000..91_000).contains(&reads), "{reads}");
        assert!(Mix::parse("get=0").is_err());
        assert!(Mix::parse("scan=5").is_err());
        assert!(Mix::parse("get").is_err());
    }

    #[test]
    fn ycsb_presets() {
        let (m, d) = ycsb("D", 0.99).unwrap();
        assert_eq!(m.weight(OpKind::Insert), 5);
        assert_eq!(d, Distribution::Latest { theta: 0.99 });
        let (f, _) = ycsb("f", 0.99).unwrap();
        assert_eq!(f.weight(OpKind::Rmw), 50);
        let e = ycsb("e", 0.99).unwrap_err().to_string();
        assert!(e.contains("scans"), "{e}");
    }

    #[test]
    fn value_sizes() {
        assert_eq!(ValueSize::parse("100").unwrap(), ValueSize::Fixed(100));
        let r = ValueSize::parse("10..20").unwrap();
        assert_eq!(r, ValueSize::Range(10, 20));
        let mut rng = Rng::new(2);
        for _ in 0..1000 {
            assert!((10..=20).contains(&r.pick(&mut rng)));
        }
        assert!(ValueSize::parse("20..10").is_err());
    }

    #[test]
    fn keys_are_fixed_width() {
        let mut k = [0u8; KEY_LEN];
        write_key(42, &mut k);
        assert_eq!(&k, b"k000000000000042");
    }
}
