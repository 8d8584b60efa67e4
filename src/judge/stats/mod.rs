//! The statistics behind the judges, self-contained so every number in a
//! verdict can be traced to a formula here. One file per concern; the
//! judges name everything through this module (`stats::CountSums`).

mod classic;
mod count;
mod dispersion;
mod histogram;
mod special;
mod t_test;

pub use classic::{
    beta_binomial_log_e, chi_squared_2x2, hodges_lehmann, mann_whitney, median, wilson, MannWhitney,
};
pub use count::{
    bennett_psi, count_lambdas, log_mean_exp, CountSums, COUNT_EFFECTS, COUNT_LAMBDA_MAX,
};
pub use dispersion::BaselineDispersion;
pub use histogram::{count_above, histogram_quantile, same_bound};
pub use special::{erfc, ln_beta, ln_gamma, normal_cdf, normal_quantile, normal_sf};
pub use t_test::{t2_threshold, t_bf_log, t_mixture_log_e, PairSums, T_MIXTURE_GRID};

/// Whether `a` is within `rel` of `b`, relatively.
#[cfg(test)]
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}
