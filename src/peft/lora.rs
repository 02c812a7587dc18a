//! LoRA (Hu et al. 2021) with Hugging Face PEFT's semantics.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend, module::linear};

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
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
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
}

/// The low-rank update of one projection: `scaling * B(A(dropout(x)))`.
///
/// Weights are kept in Burn's `[in, out]` layout: `lora_a` is PEFT's `lora_A.weight`
/// transposed (`[in, r]`), `lora_b` is `lora_B.weight` transposed (`[r, out]`).
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[in, r]`
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[r, out]`
    pub lora_b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    pub scaling: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter as PEFT makes it: A kaiming-uniform with `a = sqrt(5)`, which is
    /// `U(-1/sqrt(in), 1/sqrt(in))`, and B zero, so the update starts at zero.
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Tensor::random(
            [d_in, config.r],
            Distribution::Uniform(-bound, bound),
            device,
        );
        let b = Tensor::zeros([config.r, d_out], device);
        Self::from_weights(a, b, config)
    }

    /// From `[in, r]` and `[r, out]` weights.
    pub fn from_weights(lora_a: Tensor<B, 2>, lora_b: Tensor<B, 2>, config: &LoraConfig) -> Self {
        LoraAdapter {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling: config.scaling(),
        }
    }

    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// The update for `x`, without ever forming `A @ B`.
    ///
    /// # Shapes
    /// - x: `[..., in]`; returns `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = self.dropout.forward(x);
        let low = linear(x, self.lora_a.val(), None);
        linear(low, self.lora_b.val(), None) * self.scaling
    }

    /// `scaling * A @ B`, `[in, out]`: the change merging makes to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.lora_a.val().matmul(self.lora_b.val()) * self.scaling
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
