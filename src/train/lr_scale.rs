//! Learning rates scaled per weight matrix by its SNR, one of the Spectrum paper's ideas for
//! future work: among the trained matrices of a type, one with more signal relative to its
//! peers takes larger steps.

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::nn::float_params;
use crate::spectrum::{ScanReport, SnrEntry};

/// How SNRs become learning-rate multipliers: within a module type, a matrix's SNR divided by
/// the mean SNR of that type's trained matrices, clamped to `[min_scale, max_scale]`.
///
/// Dividing by the mean keeps a type's average multiplier near 1, so the schedule's learning
/// rate stays the overall step size; the clamp keeps one outlier from dominating.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnrLrScaling {
    /// The smallest multiplier.
    pub min_scale: f64,
    /// The largest multiplier.
    pub max_scale: f64,
}

impl Default for SnrLrScaling {
    /// Multipliers between 0.5 and 2.
    fn default() -> Self {
        SnrLrScaling {
            min_scale: 0.5,
            max_scale: 2.0,
        }
    }
}

impl SnrLrScaling {
    /// Both bounds finite, positive, and `min_scale <= max_scale`.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if ok(self.min_scale) && ok(self.max_scale) && self.min_scale <= self.max_scale {
            return Ok(());
        }
        Err(Error::InvalidSetting {
            name: "SNR learning-rate scaling",
            value: format!("[{}, {}]", self.min_scale, self.max_scale),
            expected: "needs 0 < min_scale <= max_scale",
        })
    }

    /// The multipliers of the modules that `trained` keeps, by module name. A module whose
    /// SNR is not finite, or whose type has no positive finite mean, gets 1.
    pub fn scales(
        &self,
        entries: &[SnrEntry],
        trained: impl Fn(&str) -> bool,
    ) -> HashMap<String, f64> {
        let kept: Vec<&SnrEntry> = entries.iter().filter(|e| trained(&e.name)).collect();
        let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
        for entry in kept.iter().filter(|e| e.snr.is_finite()) {
            let sum = sums.entry(&entry.module_type).or_default();
            sum.0 += entry.snr;
            sum.1 += 1;
        }
        kept.iter()
            .map(|entry| {
                let mean = sums
                    .get(entry.module_type.as_str())
                    .map_or(f64::NAN, |&(sum, n)| sum / n as f64);
                let scale = if entry.snr.is_finite() && mean.is_finite() && mean > 0.0 {
                    (entry.snr / mean).clamp(self.min_scale, self.max_scale)
                } else {
                    1.0
                };
                (entry.name.clone(), scale)
            })
            .collect()
    }
}

/// The multipliers of `module`'s trainable weights that `report` scored, by parameter id.
/// Parameters the scan did not score (norms, embeddings, LoRA adapters) are left out, so they
/// train at the schedule's rate. Pass the result to
/// [`TrainStep::set_lr_scales`](super::TrainStep::set_lr_scales).
pub fn snr_lr_scales<B: Backend, M: Module<B>>(
    module: &M,
    report: &ScanReport,
    scaling: SnrLrScaling,
) -> Result<HashMap<ParamId, f64>> {
    scaling.validate()?;
    let params = float_params(module);
    let trained: HashSet<&str> = params
        .iter()
        .filter(|p| p.require_grad)
        .map(|p| p.path.as_str())
        .collect();
    // The table names modules: a parameter name without `.weight`.
    let scales = scaling.scales(&report.table().entries, |name| {
        trained.contains(format!("{name}.weight").as_str())
    });
    Ok(params
        .iter()
        .filter_map(|p| {
            let name = p.path.strip_suffix(".weight")?;
            scales.get(name).map(|&s| (p.id, s))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, module_type: &str, snr: f64) -> SnrEntry {
        SnrEntry {
            name: name.into(),
            module_type: module_type.into(),
            snr,
        }
    }

    #[test]
    fn scales_are_snr_over_the_mean_of_the_trained_of_each_type_clamped() {
        let entries = [
            entry("q0", "q", 3.0),
            entry("q1", "q", 1.0),
            entry("q2", "q", 100.0), // not trained: leaves the mean alone
            entry("v0", "v", 10.0),
            entry("v1", "v", 0.5),
            entry("v2", "v", f64::NAN),
        ];
        let scaling = SnrLrScaling {
            min_scale: 0.25,
            max_scale: 1.8,
        };
        let scales = scaling.scales(&entries, |name| name != "q2");
        // q: mean 2 -> 1.5 and 0.5.
        assert_eq!(scales["q0"], 1.5);
        assert_eq!(scales["q1"], 0.5);
        assert!(!scales.contains_key("q2"));
        // v: mean of the finite ones 5.25 -> 10/5.25 = 1.905 clamped to 1.8; 0.5/5.25 = 0.095
        // clamped to 0.25; NaN -> 1.
        assert_eq!(scales["v0"], 1.8);
        assert_eq!(scales["v1"], 0.25);
        assert_eq!(scales["v2"], 1.0);
    }

    #[test]
    fn bad_bounds_are_refused() {
        for (min_scale, max_scale) in [(0.0, 1.0), (2.0, 1.0), (0.5, f64::INFINITY)] {
            let scaling = SnrLrScaling {
                min_scale,
                max_scale,
            };
            assert!(matches!(
                scaling.validate(),
                Err(Error::InvalidSetting { .. })
            ));
        }
        assert!(SnrLrScaling::default().validate().is_ok());
    }
}
