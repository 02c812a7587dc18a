//! LoRA (Hu et al. 2021) with Hugging Face PEFT's semantics.

use crate::nn::LoraAdapterConfig;

/// Which projections get adapters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetModules {
    /// Every linear projection except the output head, as PEFT's `"all-linear"`.
    AllLinear,
    /// Projections whose last name component is one of these (`q_proj`, `down_proj`, ...).
    Names(Vec<String>),
    /// These module paths exactly (`model.layers.3.mlp.down_proj`, ...).
    Paths(Vec<String>),
}

impl TargetModules {
    /// Whether the projection at `path` (e.g. `model.layers.0.self_attn.q_proj`) is targeted.
    pub fn matches(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        match self {
            TargetModules::AllLinear => last != "lm_head",
            TargetModules::Names(names) => names.iter().any(|n| n == last),
            TargetModules::Paths(paths) => paths.iter().any(|p| p == path),
        }
    }
}

/// LoRA hyper-parameters, named as in PEFT's `LoraConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// The rank.
    pub r: usize,
    /// The scale numerator: the update is multiplied by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout probability on the adapter's input.
    pub lora_dropout: f64,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// Which projections get adapters.
    pub target_modules: TargetModules,
}

impl Default for LoraConfig {
    /// PEFT's defaults (r 8, alpha 8, no dropout) on all linear projections.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            use_rslora: false,
            target_modules: TargetModules::AllLinear,
        }
    }
}

impl LoraConfig {
    /// The factor on `B(A(x))`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// The adapter of a `d_in -> d_out` projection.
    pub fn adapter(&self, d_in: usize, d_out: usize) -> LoraAdapterConfig {
        LoraAdapterConfig::new(d_in, d_out, self.r)
            .with_dropout(self.lora_dropout)
            .with_scaling(self.scaling())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_follows_peft() {
        let mut config = LoraConfig {
            r: 16,
            lora_alpha: 32.0,
            ..Default::default()
        };
        assert_eq!(config.scaling(), 2.0);
        config.use_rslora = true;
        assert_eq!(config.scaling(), 8.0);
    }

    #[test]
    fn all_linear_leaves_out_the_head() {
        let all = TargetModules::AllLinear;
        assert!(all.matches("model.layers.3.mlp.down_proj"));
        assert!(!all.matches("lm_head"));
        let names = TargetModules::Names(vec!["q_proj".into()]);
        assert!(names.matches("model.layers.0.self_attn.q_proj"));
        assert!(!names.matches("model.layers.0.self_attn.k_proj"));
    }
}
