//! Signal-to-noise scores of a weight matrix from its singular values (pure math, no Burn).
//!
//! `spectrum` and `legacy` follow spectrum.py exactly, in f32 as torch computes it;
//! `mp` is our own Marchenko–Pastur bulk-edge rule (see [`Threshold::Mp`]).

use super::mp_law::mp_median;

/// How singular values are split into signal and noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Threshold {
    /// Today's spectrum.py: `eps = IQR/1.349 * (1 + sqrt(beta))`; when no value is `<= eps`
    /// the noise is taken as 1.0. Score: `signal / noise / S0`.
    #[default]
    Spectrum,
    /// The rule every published SNR table was made with: as `Spectrum`, but a noise of 0
    /// (no value `<= eps`) gives `SNR = inf`.
    Legacy,
    /// Marchenko–Pastur bulk edge: the noise level is estimated from the median singular value
    /// and the median of the MP law for `beta`; `eps = sigma * (sqrt(n) + sqrt(m))` plus one
    /// Tracy–Widom allowance `sigma * (1/sqrt(n) + 1/sqrt(m))^(1/3)`. Score: `signal / noise`,
    /// not divided by `S0`, so it does not depend on the scale of the weights.
    Mp,
}

impl Threshold {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Threshold::Spectrum => "spectrum",
            Threshold::Legacy => "legacy",
            Threshold::Mp => "mp",
        }
    }
}

/// The score of one matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnrScore {
    /// The ranking score (see [`Threshold`]); `NaN` for a matrix with non-finite values.
    pub snr: f32,
    /// The largest singular value `S0`.
    pub largest: f32,
    /// The noise threshold `eps`: values strictly above it are signal.
    pub noise_threshold: f32,
    /// How many singular values are above `noise_threshold`.
    pub signal_count: usize,
}

/// Scores a matrix of shape `rows x cols` from its singular values (`min(rows, cols)` of them,
/// in any order). A 1-D weight is a `1 x d` matrix.
pub fn score(singular_values: &[f32], rows: usize, cols: usize, threshold: Threshold) -> SnrScore {
    let mut sv = singular_values.to_vec();
    sv.sort_by(|a, b| b.total_cmp(a));
    if sv.is_empty() || sv.iter().any(|v| !v.is_finite()) {
        let largest = sv.first().copied().unwrap_or(f32::NAN);
        return SnrScore {
            snr: f32::NAN,
            largest,
            noise_threshold: f32::NAN,
            signal_count: 0,
        };
    }
    let eps = match threshold {
        Threshold::Spectrum | Threshold::Legacy => iqr_threshold(&sv, rows, cols),
        Threshold::Mp => mp_threshold(&sv, rows, cols),
    };
    let (signal, noise, signal_count, noise_count) = split(&sv, eps);
    let largest = sv[0];
    let snr = match threshold {
        Threshold::Spectrum => {
            let noise = if noise_count == 0 { 1.0 } else { noise };
            ratio(signal, noise) / largest
        }
        Threshold::Legacy => ratio(signal, noise) / largest,
        Threshold::Mp => ratio(signal, noise),
    };
    SnrScore {
        snr,
        largest,
        noise_threshold: eps,
        signal_count,
    }
}

/// `signal / noise`, with spectrum.py's rule that a zero noise gives `inf`.
fn ratio(signal: f32, noise: f32) -> f32 {
    if noise == 0.0 {
        f32::INFINITY
    } else {
        signal / noise
    }
}

/// Sums of the values above and at-or-below `eps`, and their counts. Sums in f64, rounded to
/// f32 once: closer to the exact sum than any f32 summation order.
fn split(sv_desc: &[f32], eps: f32) -> (f32, f32, usize, usize) {
    let signal_count = sv_desc.iter().take_while(|&&v| v > eps).count();
    let (above, below) = sv_desc.split_at(signal_count);
    let sum = |xs: &[f32]| xs.iter().map(|&v| v as f64).sum::<f64>() as f32;
    (sum(above), sum(below), signal_count, below.len())
}

/// spectrum.py's threshold: `sigma = (Q75 - Q25) / 1.349`, `eps = sigma * (1 + sqrt(beta))`.
fn iqr_threshold(sv_desc: &[f32], rows: usize, cols: usize) -> f32 {
    let mut ascending = sv_desc.to_vec();
    ascending.reverse();
    let iqr = quantile(&ascending, 0.75) - quantile(&ascending, 0.25);
    let sigma = iqr / 1.349_f32;
    let beta = rows.min(cols) as f64 / rows.max(cols) as f64;
    // spectrum.py writes sqrt((1 + sqrt(beta))^2) in f64 and multiplies the f32 sigma by it.
    let factor = ((1.0 + beta.sqrt()).powi(2)).sqrt();
    sigma * factor as f32
}

/// The `q`-quantile of ascending `values` with linear interpolation, computed in f32 the way
/// `torch.quantile` does (rank `q * (n - 1)`, then `lerp` between the neighbours).
///
/// # Panics
/// If `ascending` is empty.
pub fn quantile(ascending: &[f32], q: f32) -> f32 {
    let n = ascending.len();
    assert!(n > 0, "quantile of an empty slice");
    let rank = q * (n - 1) as f32;
    let below = rank.floor();
    let weight = rank - below;
    let lo = ascending[below as usize];
    let hi = ascending[(rank.ceil() as usize).min(n - 1)];
    // torch's lerp: the branch keeps it exact at both ends.
    if weight < 0.5 {
        lo + weight * (hi - lo)
    } else {
        hi - (hi - lo) * (1.0 - weight)
    }
}

/// Our Marchenko–Pastur rule: noise level from the median singular value, threshold at the
/// bulk edge plus one Tracy–Widom allowance.
fn mp_threshold(sv_desc: &[f32], rows: usize, cols: usize) -> f32 {
    let short = rows.min(cols) as f64;
    let long = rows.max(cols) as f64;
    let sigma = noise_sigma(sv_desc, short, long);
    let edge = short.sqrt() + long.sqrt();
    let tracy_widom = (1.0 / short.sqrt() + 1.0 / long.sqrt()).cbrt();
    (sigma * (edge + tracy_widom)) as f32
}

/// Entry-wise noise standard deviation of a `short x long` matrix whose singular values are
/// `sv_desc`, assuming most of them belong to the noise bulk: `s_med^2 / long` estimates
/// `sigma^2` times the median of the MP law with ratio `short / long`.
pub(super) fn noise_sigma(sv_desc: &[f32], short: f64, long: f64) -> f64 {
    let mut ascending: Vec<f64> = sv_desc.iter().map(|&v| v as f64).collect();
    ascending.reverse();
    let n = ascending.len();
    let median = if n % 2 == 1 {
        ascending[n / 2]
    } else {
        (ascending[n / 2 - 1] + ascending[n / 2]) / 2.0
    };
    median / (long * mp_median(short / long)).sqrt()
}
