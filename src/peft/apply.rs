//! Putting fresh LoRA adapters on a model.

use burn::module::Module;
use burn::tensor::backend::Backend;

use super::lora::{LoraConfig, TargetModules};
use crate::error::Result;
use crate::model::LlamaForCausalLM;

/// Adds a fresh adapter (A random, B zero) to every projection `config.target_modules`
/// selects, and freezes everything else, as PEFT's `get_peft_model` does. Returns the model
/// and the module paths that got adapters.
pub fn add_lora<B: Backend>(
    model: LlamaForCausalLM<B>,
    config: &LoraConfig,
    device: &B::Device,
) -> (LlamaForCausalLM<B>, Vec<String>) {
    // Freeze first: the adapters added after this stay trainable.
    let mut model = model.no_grad();
    let mut targeted = Vec::new();
    for (path, projection) in model.projections_mut() {
        if config.target_modules.matches(&path) {
            let (d_in, d_out) = projection.dims();
            projection.set_lora(config.adapter(d_in, d_out).init(device));
            targeted.push(path);
        }
    }
    (model, targeted)
}

/// Quantizes to NF4 (with double quantization) the base weight of every projection `targets`
/// selects, as QLoRA does before adding adapters. Returns the paths quantized.
pub fn quantize_nf4<B: Backend>(
    model: &mut LlamaForCausalLM<B>,
    targets: &TargetModules,
) -> Result<Vec<String>> {
    let mut quantized = Vec::new();
    for (path, projection) in model.projections_mut() {
        if targets.matches(&path) {
            projection.quantize_nf4()?;
            quantized.push(path);
        }
    }
    Ok(quantized)
}
