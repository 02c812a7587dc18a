//! The Marchenko–Pastur law (pure math).

/// Median of the Marchenko–Pastur law with ratio `beta` in `(0, 1]` and variance 1: the law of
/// the eigenvalues of `X X^T / m` for an `n x m` matrix `X` of unit-variance noise, `beta = n/m`.
///
/// Computed by integrating the density over `theta` with `x = c - r cos(theta)` (centre `c`,
/// half-width `r` of the support), which removes the square-root ends and leaves a smooth
/// integrand; accurate to about 1e-9.
pub(super) fn mp_median(beta: f64) -> f64 {
    let beta = beta.clamp(f64::MIN_POSITIVE, 1.0);
    let lower = (1.0 - beta.sqrt()).powi(2);
    let upper = (1.0 + beta.sqrt()).powi(2);
    let centre = (lower + upper) / 2.0;
    let half_width = (upper - lower) / 2.0;
    let x = |theta: f64| centre - half_width * theta.cos();
    // density(x) dx = r^2 sin^2(theta) / (2 pi beta x) dtheta
    let integrand = |theta: f64| {
        let s = theta.sin();
        let xv = x(theta);
        if xv <= 0.0 {
            // beta = 1 at theta = 0, where x ~ r theta^2 / 2 and sin^2 ~ theta^2.
            return half_width / (std::f64::consts::PI * beta);
        }
        half_width * half_width * s * s / (2.0 * std::f64::consts::PI * beta * xv)
    };
    const STEPS: usize = 20_000;
    let h = std::f64::consts::PI / STEPS as f64;
    let mut cumulative = 0.0;
    let mut previous = integrand(0.0);
    for k in 1..=STEPS {
        let current = integrand(k as f64 * h);
        let step = (previous + current) * h / 2.0;
        if cumulative + step >= 0.5 {
            let fraction = (0.5 - cumulative) / step;
            return x((k as f64 - 1.0 + fraction) * h);
        }
        cumulative += step;
        previous = current;
    }
    upper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_to_one_and_median_is_inside_support() {
        for beta in [0.01, 0.25, 0.5, 1.0] {
            let m = mp_median(beta);
            let lower = (1.0 - f64::sqrt(beta)).powi(2);
            let upper = (1.0 + f64::sqrt(beta)).powi(2);
            assert!(m > lower && m < upper, "beta {beta}: median {m}");
        }
    }

    #[test]
    fn median_of_square_case_matches_closed_form_check() {
        // For beta = 1 the law of x = s^2 is the quarter-circle law of s = sqrt(x) on [0, 2]:
        // density of s is sqrt(4 - s^2) / pi. Its median m solves
        // (m sqrt(4 - m^2) / 2 + 2 asin(m / 2)) / pi = 1/2.
        let m = mp_median(1.0).sqrt();
        let cdf = (m * (4.0 - m * m).sqrt() / 2.0 + 2.0 * (m / 2.0).asin()) / std::f64::consts::PI;
        assert!((cdf - 0.5).abs() < 1e-6, "cdf at median {cdf}");
    }

    #[test]
    fn small_beta_concentrates_at_one() {
        assert!((mp_median(1e-6) - 1.0).abs() < 1e-2);
    }
}
