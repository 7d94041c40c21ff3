//! Key distributions: uniform, zipfian (YCSB's scrambled zipfian) and
//! latest (zipfian over recency), after Gray et al., "Quickly generating
//! billion-record synthetic databases" (SIGMOD '94), as YCSB implements it.
//!
//! A chooser returns key *indices*; [`crate::workload`] turns them into key
//! bytes.

use crate::rng::Rng;
use crate::BenchError;

/// Which keys requests go to.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Popular keys follow Zipf's law with exponent `theta`; which keys are
    /// popular is scrambled over the key space (FNV-1a), as in YCSB.
    Zipfian {
        /// Skew in (0, 1); YCSB's default is 0.99.
        theta: f64,
    },
    /// The most recently inserted keys are the most popular (zipfian over
    /// recency), as in YCSB workload D.
    Latest {
        /// Skew in (0, 1).
        theta: f64,
    },
}

/// The default zipfian skew (YCSB's).
pub const DEFAULT_THETA: f64 = 0.99;

impl Distribution {
    /// Parses `uniform`, `zipfian` or `latest` with the given skew.
    pub fn parse(name: &str, theta: f64) -> Result<Distribution, BenchError> {
        if !(theta > 0.0 && theta < 1.0) {
            return Err(BenchError::Config(format!(
                "zipfian theta must be in (0, 1), not {theta}"
            )));
        }
        match name {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" | "zipf" => Ok(Distribution::Zipfian { theta }),
            "latest" => Ok(Distribution::Latest { theta }),
            other => Err(BenchError::Config(format!(
                "unknown key distribution {other:?} (uniform, zipfian, latest)"
            ))),
        }
    }
}

/// Ranks 0..n drawn with P(rank r) ∝ 1 / (r + 1)^θ (Gray et al.).
///
/// The item count can grow ([`Zipfian::grow_to`]); ζ(n) is then extended
/// incrementally, as YCSB does for its `latest` generator.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2: f64,
    eta: f64,
    half_pow_theta: f64,
}

fn zeta(from: u64, to: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

impl Zipfian {
    /// A generator over `items` ≥ 1 ranks with skew `theta` in (0, 1).
    /// Costs O(items) once, to compute ζ(items).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        let zeta2 = zeta(0, 2, theta, 0.0);
        let mut z = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan: zeta(0, items, theta, 0.0),
            zeta2,
            eta: 0.0,
            half_pow_theta: 0.5f64.powf(theta),
        };
        z.eta = z.compute_eta();
        z
    }

    fn compute_eta(&self) -> f64 {
        (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// Number of ranks.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Extends the generator to `items` ranks (no-op if not larger).
    pub fn grow_to(&mut self, items: u64) {
        if items > self.items {
            self.zetan = zeta(self.items, items, self.theta, self.zetan);
            self.items = items;
            self.eta = self.compute_eta();
        }
    }

    /// The next rank in [0, items): 0 is the most popular.
    #[inline]
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.items - 1);
        }
        let r = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.items - 1)
    }
}

/// FNV-1a over the 8 little-endian bytes of `x` (YCSB's scramble).
#[inline]
pub fn fnv1a64(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Picks key indices according to a [`Distribution`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    dist: Distribution,
    key_count: u64,
    zipf: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over the `key_count` ≥ 1 pre-populated keys.
    pub fn new(dist: Distribution, key_count: u64) -> KeyChooser {
        let key_count = key_count.max(1);
        let zipf = match dist {
            Distribution::Uniform => None,
            Distribution::Zipfian { theta } | Distribution::Latest { theta } => {
                Some(Zipfian::new(key_count, theta))
            }
        };
        KeyChooser {
            dist,
            key_count,
            zipf,
        }
    }

    /// The next key index. `existing` is how many keys exist now (the
    /// pre-populated ones plus inserts so far); `latest` uses it as the
    /// newest key, the others choose among the pre-populated keys.
    #[inline]
    pub fn next(&mut self, rng: &mut Rng, existing: u64) -> u64 {
        match (&self.dist, &mut self.zipf) {
            (Distribution::Zipfian { .. }, Some(z)) => fnv1a64(z.next(rng)) % self.key_count,
            (Distribution::Latest { .. }, Some(z)) => {
                let existing = existing.max(1);
                z.grow_to(existing);
                let r = z.next(rng).min(existing - 1);
                existing - 1 - r
            }
            _ => rng.below(self.key_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_zipf(n: u64, theta: f64) -> Vec<f64> {
        let z = zeta(0, n, theta, 0.0);
        (0..n)
            .map(|i| 1.0 / ((i + 1) as f64).powf(theta) / z)
            .collect()
    }

    #[test]
    fn zipfian_rank_frequency_matches_zipfs_law() {
        let n = 1000;
        let samples = 2_000_000;
        for theta in [0.5, 0.8, 0.99] {
            let z = Zipfian::new(n, theta);
            let mut rng = Rng::new(42);
            let mut counts = vec![0u64; n as usize];
            for _ in 0..samples {
                counts[z.next(&mut rng) as usize] += 1;
            }
            let exp = expected_zipf(n, theta);
            // Ranks 0 and 1 are exact in Gray's method; beyond them it uses a
            // continuous approximation, so check the cumulative head mass.
            for r in 0..2 {
                let got = counts[r] as f64 / samples as f64;
                assert!(
                    (got - exp[r]).abs() / exp[r] < 0.02,
                    "theta {theta} rank {r}: got {got:.5}, expected {:.5}",
                    exp[r]
                );
            }
            for head in [10, 100, 500] {
                let got = counts[..head].iter().sum::<u64>() as f64 / samples as f64;
                let want: f64 = exp[..head].iter().sum();
                assert!(
                    (got - want).abs() / want < 0.06,
                    "theta {theta} top {head}: got {got:.4}, expected {want:.4}"
                );
            }
            // Frequencies fall with rank: the top decile holds far more than
            // the bottom half.
            let top: u64 = counts[..100].iter().sum();
            let bottom: u64 = counts[500..].iter().sum();
            assert!(top > bottom, "theta {theta}: top {top} bottom {bottom}");
        }
    }

    #[test]
    fn zipfian_log_log_slope_is_minus_theta() {
        let n = 10_000;
        let theta = 0.99;
        let z = Zipfian::new(n, theta);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..4_000_000 {
            counts[z.next(&mut rng) as usize] += 1;
        }
        // Least-squares slope of log(freq) against log(rank) over ranks 1..200.
        let pts: Vec<(f64, f64)> = (0..200)
            .map(|r| (((r + 1) as f64).ln(), (counts[r] as f64).ln()))
            .collect();
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / pts.len() as f64;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
        let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let slope = num / den;
        assert!((slope + theta).abs() < 0.08, "slope {slope}");
    }

    #[test]
    fn uniform_passes_chi_square() {
        let buckets = 100u64;
        let samples = 1_000_000u64;
        let mut k = KeyChooser::new(Distribution::Uniform, buckets);
        let mut rng = Rng::new(9);
        let mut counts = vec![0u64; buckets as usize];
        for _ in 0..samples {
            counts[k.next(&mut rng, buckets) as usize] += 1;
        }
        let e = samples as f64 / buckets as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        // 99 degrees of freedom: the 0.999 quantile is ~148.
        assert!(chi2 < 148.0, "chi-square {chi2}");
    }

    #[test]
    fn scrambled_zipfian_spreads_hot_keys_but_keeps_the_shape() {
        let n = 10_000;
        let mut k = KeyChooser::new(Distribution::Zipfian { theta: 0.99 }, n);
        let mut rng = Rng::new(5);
        let samples = 2_000_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            counts[k.next(&mut rng, n) as usize] += 1;
        }
        // The hottest key is not key 0..10: popularity is scrambled.
        let hottest = (0..n as usize).max_by_key(|&i| counts[i]).unwrap_or(0);
        assert!(hottest >= 10, "hottest key {hottest}");
        // Rank-frequency: sorted counts follow the unscrambled law at the head
        // (collisions of the scramble only add to a few keys).
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let exp = expected_zipf(n, 0.99);
        let got0 = sorted[0] as f64 / samples as f64;
        assert!(
            (got0 - exp[0]).abs() / exp[0] < 0.05,
            "{got0} vs {}",
            exp[0]
        );
        let top100: u64 = sorted[..100].iter().sum();
        let exp100: f64 = exp[..100].iter().sum();
        let got100 = top100 as f64 / samples as f64;
        assert!(
            (got100 - exp100).abs() / exp100 < 0.1,
            "{got100} vs {exp100}"
        );
    }

    #[test]
    fn latest_favours_the_newest_keys_and_follows_inserts() {
        let mut k = KeyChooser::new(Distribution::Latest { theta: 0.99 }, 1000);
        let mut rng = Rng::new(11);
        let samples = 500_000;
        let mut by_age = vec![0u64; 1000];
        for _ in 0..samples {
            let key = k.next(&mut rng, 1000);
            by_age[(999 - key) as usize] += 1;
        }
        let exp = expected_zipf(1000, 0.99);
        for age in 0..2 {
            let got = by_age[age] as f64 / samples as f64;
            assert!((got - exp[age]).abs() / exp[age] < 0.03, "age {age}: {got}");
        }
        assert!(by_age[0] > by_age[10] && by_age[10] > by_age[500]);
        // After inserts, the newest key becomes the hottest.
        let mut newest = 0;
        for _ in 0..10_000 {
            if k.next(&mut rng, 1500) == 1499 {
                newest += 1;
            }
        }
        let exp0 = expected_zipf(1500, 0.99)[0];
        let got = newest as f64 / 10_000.0;
        assert!((got - exp0).abs() / exp0 < 0.15, "{got} vs {exp0}");
    }

    #[test]
    fn grow_matches_fresh_zeta() {
        let mut a = Zipfian::new(100, 0.9);
        a.grow_to(5000);
        let b = Zipfian::new(5000, 0.9);
        assert!((a.zetan - b.zetan).abs() < 1e-9);
        assert!((a.eta - b.eta).abs() < 1e-12);
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(Distribution::parse("zipfian", 1.0).is_err());
        assert!(Distribution::parse("pareto", 0.5).is_err());
        assert_eq!(
            Distribution::parse("latest", 0.9).ok(),
            Some(Distribution::Latest { theta: 0.9 })
        );
    }
}
