//! The textbook tests and estimators the reference policies use: Pearson's
//! chi-squared, Mann–Whitney with Hodges–Lehmann, Wilson's interval and a
//! beta-binomial e-value.

use super::special::{erfc, ln_beta, normal_sf};

/// Pearson's chi-squared test (1 df, no continuity correction) of a 2×2 table
/// of canary and baseline errors/successes. Returns (statistic, p-value).
pub fn chi_squared_2x2(e_c: u64, n_c: u64, e_b: u64, n_b: u64) -> (f64, f64) {
    let a = e_c as f64;
    let b = n_c.saturating_sub(e_c) as f64;
    let c = e_b as f64;
    let d = n_b.saturating_sub(e_b) as f64;
    let n = a + b + c + d;
    let denom = (a + b) * (c + d) * (a + c) * (b + d);
    if denom <= 0.0 {
        return (0.0, 1.0);
    }
    let stat = n * (a * d - b * c).powi(2) / denom;
    (stat, erfc((stat / 2.0).sqrt()))
}

/// The result of a two-sample Mann–Whitney U test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample.
    pub u: f64,
    /// Normal approximation (tie-corrected) of U.
    pub z: f64,
    /// Two-sided p-value from `z`.
    pub p_two_sided: f64,
    /// Hodges–Lehmann estimate of the shift (first − second).
    pub hodges_lehmann: f64,
}

/// Mann–Whitney U of `x` against `y` with mid-ranks for ties.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_sum_x += mid;
            }
        }
        i = j + 1;
    }
    let (f1, f2, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_x - f1 * (f1 + 1.0) / 2.0;
    let mean = f1 * f2 / 2.0;
    let var = f1 * f2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    let (z, p) = if var > 0.0 {
        let z = (u - mean) / var.sqrt();
        (z, (2.0 * normal_sf(z.abs())).min(1.0))
    } else {
        (0.0, 1.0)
    };
    Some(MannWhitney {
        u,
        z,
        p_two_sided: p,
        hodges_lehmann: hodges_lehmann(x, y),
    })
}

/// Median of all pairwise differences x_i − y_j.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> f64 {
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    median(&mut d)
}

/// Median (NaN for an empty slice); reorders the slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Wilson score interval for k successes out of n at normal quantile z.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// ln of the e-value of a beta-binomial mixture against a point null:
/// k of n events fall on the canary, H0 says each does with probability p0,
/// the alternative mixes over p ~ Beta(a, b).
pub fn beta_binomial_log_e(k: u64, n: u64, p0: f64, a: f64, b: f64) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    ln_beta(a + kf, b + nf - kf) - ln_beta(a, b) - kf * p0.ln() - (nf - kf) * (1.0 - p0).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::close;

    #[test]
    fn chi_squared_matches_hand_computation() {
        // Table [[10, 990], [100, 19900]]: N(ad−bc)²/(row·col products)
        // = 21000·(199000−99000)²/(1000·20000·110·20890) = 4.570 (by hand);
        // p = erfc(√(4.570/2)) = 0.03253 (python3 math.erfc).
        let (stat, p) = chi_squared_2x2(10, 1000, 100, 20000);
        assert!(close(
            stat,
            21000.0 * 1e10 / (1000.0 * 20000.0 * 110.0 * 20890.0),
            1e-12
        ));
        assert!(close(stat, 4.570, 1e-3));
        assert!(close(p, 0.032_53, 2e-3));
        // The 5% critical value of chi-squared with 1 df is 3.841459.
        let x = 3.841_459;
        assert!(close(erfc((x / 2.0f64).sqrt()), 0.05, 1e-5));
    }

    #[test]
    fn mann_whitney_matches_hand_counts() {
        // x = [1,2,3], y = [4,5,6]: every x below every y, U_x = 0.
        // Var = 3·3·7/12 = 5.25, z = (0 − 4.5)/√5.25 = −1.9640,
        // p = 2·Φ(−1.9640) = 0.04953 (python3: math.erfc(1.9640/math.sqrt(2))).
        let r = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert_eq!(r.u, 0.0);
        assert!(close(r.z, -4.5 / 5.25f64.sqrt(), 1e-12));
        assert!(close(r.p_two_sided, 0.049_53, 1e-3));
        // Pairwise differences of x − y: −5..−1, median −3.
        assert_eq!(r.hodges_lehmann, -3.0);
        // Ties: x = [1,1], y = [1,2]: ranks 2,2 | 2,4 → U_x = 4 − 3 = 1.
        let r = mann_whitney(&[1.0, 1.0], &[1.0, 2.0]).unwrap();
        assert_eq!(r.u, 1.0);
    }

    #[test]
    fn wilson_interval_matches_formula_values() {
        // 0 of 1000 at z=1.96: upper = z²/n/(1+z²/n) = 0.0038268 (closed form).
        let (lo, hi) = wilson(0, 1000, 1.96);
        assert_eq!(lo, 0.0);
        assert!(close(hi, 0.003_826_8, 1e-4));
        // Newcombe (1998), Statistics in Medicine 17:857, table I: 81 of 263
        // gives 0.2553–0.3662 by the Wilson score method.
        let (lo, hi) = wilson(81, 263, 1.959_964);
        assert!(
            close(lo, 0.2553, 2e-4) && close(hi, 0.3662, 2e-4),
            "({lo}, {hi})"
        );
    }

    #[test]
    fn beta_binomial_e_value_matches_closed_form() {
        // With a = b = 1, ∫p^k(1−p)^(n−k)dp = 1/((n+1)·C(n,k)); for n=10,
        // k=5, p0=½: 1/(11·252) / 2^-10 = 1024/2772 = 0.369408.
        let e = beta_binomial_log_e(5, 10, 0.5, 1.0, 1.0).exp();
        assert!(close(e, 1024.0 / 2772.0, 1e-10));
        // All 10 on the canary: 1/11 / 2^-10 = 93.0909.
        let e = beta_binomial_log_e(10, 10, 0.5, 1.0, 1.0).exp();
        assert!(close(e, 1024.0 / 11.0, 1e-10));
    }
}
