//! The `realistic` latency profile: how long the real service takes for a chart, fitted to the figures of
//! `chart-img-api.md` ("Latency"): about 4 s for a default 800x600 chart, 5-10 s for 1920x1600 with 8 studies, and
//! rare outliers near 25 s (one logged series: 10.1, 6.2, 25.4, 5.5, 5.9, 5.4, 6.2, 6.9, 5.9 s).
//!
//! The model: a log-normal around a median that grows with the logarithm of the pixel count and linearly with the
//! studies and drawings, plus a 4 % chance of an outlier drawn uniformly from 20-30 s (so about one request in 250
//! passes the 29 s gateway timeout and gets the 504).

use std::time::Duration;

/// Median seconds of a chart with no studies at 800x600.
const BASE_S: f64 = 3.8;
/// Growth of the median per doubling of the pixel count, as a fraction of `BASE_S`.
const PER_DOUBLING: f64 = 0.15;
/// Seconds each study or drawing adds to the median.
const PER_PARAM_S: f64 = 0.1;
/// Spread of the log-normal (so 5-10 s around a 6 s median).
const SIGMA: f64 = 0.2;
/// Share of outliers, and their range in seconds.
const OUTLIER_P: f64 = 0.04;
const OUTLIER_S: (f64, f64) = (20.0, 30.0);

/// The median time of a chart of that size and parameter count.
pub fn median(width: u32, height: u32, params: usize) -> Duration {
    let doublings = ((f64::from(width) * f64::from(height)) / (800.0 * 600.0))
        .max(0.25)
        .log2();
    Duration::from_secs_f64(BASE_S * (1.0 + PER_DOUBLING * doublings) + PER_PARAM_S * params as f64)
}

/// One draw, from three uniform numbers in `[0, 1)` (the caller's seeded dice).
pub fn sample(width: u32, height: u32, params: usize, u: [f64; 3]) -> Duration {
    if u[0] < OUTLIER_P {
        return Duration::from_secs_f64(OUTLIER_S.0 + (OUTLIER_S.1 - OUTLIER_S.0) * u[1]);
    }
    // Box-Muller: a standard normal from two uniforms.
    let z = (-2.0 * (1.0 - u[1]).ln()).sqrt() * (std::f64::consts::TAU * u[2]).cos();
    median(width, height, params).mul_f64((SIGMA * z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn draws(w: u32, h: u32, params: usize, n: usize) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut v: Vec<f64> = (0..n)
            .map(|_| sample(w, h, params, [rng.random(), rng.random(), rng.random()]).as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn the_shape_matches_the_documented_figures() {
        let small = draws(800, 600, 0, 20_000);
        let median_small = small[small.len() / 2];
        assert!((3.6..4.4).contains(&median_small), "800x600 median {median_small}");
        let large = draws(1920, 1600, 8, 20_000);
        let (p10, p50, p90) = (large[2_000], large[10_000], large[17_000]);
        assert!(
            p10 > 4.5 && p50 > 5.5 && p50 < 7.0 && p90 < 10.0,
            "1920x1600+8: p10 {p10} p50 {p50} p85 {p90}"
        );
        let outliers = large.iter().filter(|s| **s >= 20.0).count() as f64 / large.len() as f64;
        assert!((0.03..0.05).contains(&outliers), "outlier share {outliers}");
        let timeouts = large.iter().filter(|s| **s > 29.0).count();
        assert!(
            timeouts > 0 && (timeouts as f64 / large.len() as f64) < 0.01,
            "{timeouts} past 29 s"
        );
    }
}
