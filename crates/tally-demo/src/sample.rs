//! Small sampling helpers: seed derivation, weighted choice and the handful of
//! continuous distributions the simulation needs.
//!
//! Kept here rather than pulling in `rand_distr` because four short functions cover
//! it and the workspace keeps its dependency list lean. This module knows nothing about
//! people or events.

use rand::Rng;

/// SplitMix64's finaliser: a fast, well-mixing bijection on `u64`.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent seed from a parent seed and a path of indices, so that every
/// tenant, person and session has its own reproducible stream regardless of the order
/// (or thread) in which they are generated.
pub(crate) fn derive_seed(parent: u64, path: &[u64]) -> u64 {
    path.iter()
        .fold(mix64(parent), |acc, &part| mix64(acc ^ mix64(part)))
}

/// A uniform `f64` in `[0, 1)` from a hash, for choices made without an RNG.
pub(crate) fn unit_from_hash(h: u64) -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Exponentially distributed with the given mean.
pub(crate) fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u: f64 = rng.random();
    -mean * (1.0 - u).ln()
}

/// A standard normal variate (Box-Muller; one of the pair is discarded, which is
/// simpler than caching and fast enough here).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-normal with the given median and shape; heavy-tailed delays and amounts.
pub(crate) fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

/// A count `>= 0` with the given mean, geometrically distributed (many short
/// sessions, a few long ones).
pub(crate) fn geometric(rng: &mut impl Rng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    let p_continue = mean / (1.0 + mean);
    let u: f64 = 1.0 - rng.random::<f64>();
    let n = (u.ln() / p_continue.ln()).floor();
    // Cap the tail so a pathological draw cannot produce an absurd session.
    n.clamp(0.0, 1000.0) as u32
}

/// Categorical distribution over `0..n` by cumulative weights.
#[derive(Debug, Clone)]
pub(crate) struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    /// Builds from non-negative weights. Negative or non-finite weights count as zero;
    /// if every weight is zero the distribution is uniform (callers validate their
    /// inputs, this only keeps sampling total).
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                total += if w.is_finite() && w > 0.0 { w } else { 0.0 };
                total
            })
            .collect();
        if total <= 0.0 {
            for (i, c) in cumulative.iter_mut().enumerate() {
                *c = (i + 1) as f64;
            }
        }
        Weighted { cumulative }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// An index in `0..len()`; 0 for an empty distribution.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let Some(&total) = self.cumulative.last() else {
            return 0;
        };
        let x = rng.random::<f64>() * total;
        // First index whose cumulative weight exceeds x; zero-weight entries share the
        // previous cumulative value and are therefore never chosen.
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }

    /// The probability of index `i`.
    #[cfg(test)]
    pub fn probability(&self, i: usize) -> f64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let prev = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        (self.cumulative[i] - prev) / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn weighted_matches_its_weights() {
        let w = Weighted::new([1.0, 0.0, 3.0]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[w.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0, "zero-weight entries are never drawn");
        let share = counts[2] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "share {share}");
        assert!((w.probability(2) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn degenerate_weights_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(1);
        let zero = Weighted::new([0.0, f64::NAN, -1.0]);
        for _ in 0..100 {
            assert!(zero.sample(&mut rng) < 3);
        }
        assert_eq!(Weighted::new([]).sample(&mut rng), 0);
    }

    #[test]
    fn distributions_have_the_advertised_centre() {
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 50_000;
        let mean_exp: f64 = (0..n).map(|_| exponential(&mut rng, 2.0)).sum::<f64>() / n as f64;
        assert!((mean_exp - 2.0).abs() < 0.05, "{mean_exp}");
        let mean_geo: f64 = (0..n).map(|_| geometric(&mut rng, 3.0) as f64).sum::<f64>() / n as f64;
        assert!((mean_geo - 3.0).abs() < 0.1, "{mean_geo}");
        let mut ln: Vec<f64> = (0..n).map(|_| log_normal(&mut rng, 10.0, 1.0)).collect();
        ln.sort_by(f64::total_cmp);
        let median = ln[n / 2];
        assert!((median - 10.0).abs() < 0.4, "{median}");
    }

    proptest! {
        #[test]
        fn unit_from_hash_is_in_unit_interval(h in any::<u64>()) {
            let u = unit_from_hash(h);
            prop_assert!((0.0..1.0).contains(&u));
        }

        #[test]
        fn derived_seeds_differ_by_path(parent in any::<u64>(), a in 0u64..1000, b in 0u64..1000) {
            prop_assume!(a != b);
            prop_assert_ne!(derive_seed(parent, &[a]), derive_seed(parent, &[b]));
            prop_assert_ne!(derive_seed(parent, &[a, b]), derive_seed(parent, &[b, a]));
        }
    }
}
