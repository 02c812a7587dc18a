//! PEFT's adapter folder: `adapter_config.json` and `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `...lora_B.weight` (`[out, r]`).

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde_json::{Value, json};

use super::lora::{LoraConfig, TargetModules};
use crate::error::{Error, Result};
use crate::io::SafetensorsFiles;
use crate::io::{FileSet, StoredTensor, json_text, write_safetensors_to};
use crate::model::LlamaForCausalLM;
use crate::nn::{f32_values, transpose};

const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// Writes the model's LoRA adapters as a PEFT adapter folder that `PeftModel.from_pretrained`
/// loads onto the base model. `base_model` goes into `base_model_name_or_path`.
pub fn save_adapter<B: Backend>(
    model: &mut LlamaForCausalLM<B>,
    config: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> Result<()> {
    let mut tensors = Vec::new();
    let mut targets = BTreeSet::new();
    for (path, projection) in model.projections_mut() {
        let Some(lora) = projection.lora() else {
            continue;
        };
        targets.insert(path.rsplit('.').next().unwrap_or(&path).to_string());
        for (name, weight) in [("lora_A", lora.lora_a.val()), ("lora_B", lora.lora_b.val())] {
            // Burn's [in, r] / [r, out] back to PyTorch's [r, in] / [out, r].
            let [rows, cols] = weight.dims();
            let values = f32_values(weight);
            let tensor = StoredTensor::from_f32(vec![cols, rows], &transpose(&values, rows, cols));
            tensors.push((format!("{PREFIX}{path}.{name}.weight"), tensor));
        }
    }
    if tensors.is_empty() {
        return Err(Error::NoAdapters);
    }
    let config_path = dir.join(CONFIG_FILE);
    let value = adapter_config(config, &targets, base_model);
    let config_text = json_text(&value).map_err(|e| Error::io(&config_path, e))?;
    // One set: weights and config of the same adapter, or the old pair.
    let mut set = FileSet::new(dir);
    set.add(WEIGHTS_FILE, |path| write_safetensors_to(path, &tensors))
        .add_bytes(CONFIG_FILE, config_text);
    set.write().map_err(|(path, e)| Error::io(path, e))?;
    Ok(())
}

/// The fields PEFT 0.13 writes, with the targets expanded to names as PEFT saves them.
fn adapter_config(config: &LoraConfig, targets: &BTreeSet<String>, base_model: &str) -> Value {
    json!({
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": config.r,
        "target_modules": targets.iter().collect::<Vec<_>>(),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": config.use_rslora,
    })
}

/// Reads a PEFT LoRA adapter folder onto `model`, replacing any adapters it had, and returns
/// its config. Keys that name no projection of the model, wrong shapes and adapter kinds we do
/// not implement (DoRA, per-module rank or alpha patterns) are errors.
pub fn load_adapter<B: Backend>(
    model: &mut LlamaForCausalLM<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<LoraConfig> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config = parse_config(&text).map_err(|reason| Error::InvalidConfig {
        path: config_path,
        reason,
    })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let checkpoint = SafetensorsFiles::open(&weights_path)?;
    let mut unused: BTreeSet<String> = checkpoint
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let mut problems = Vec::new();
    for (path, projection) in model.projections_mut() {
        let key = |part: &str| format!("{PREFIX}{path}.{part}.weight");
        let (a_key, b_key) = (key("lora_A"), key("lora_B"));
        let (Some(a), Some(b)) = (find(&checkpoint, &a_key), find(&checkpoint, &b_key)) else {
            continue;
        };
        unused.remove(&a_key);
        unused.remove(&b_key);
        let (d_in, d_out) = projection.dims();
        if a.shape != [config.r, d_in] || b.shape != [d_out, config.r] {
            problems.push(format!(
                "{path}: lora_A {:?} / lora_B {:?}, expected [{}, {d_in}] / [{d_out}, {}]",
                a.shape, b.shape, config.r, config.r
            ));
            continue;
        }
        let burn_layout = |entry: &crate::io::TensorEntry| -> Result<Tensor<B, 2>> {
            let (rows, cols) = (entry.shape[0], entry.shape[1]);
            let values = transpose(&checkpoint.read_f32(entry)?, rows, cols);
            Ok(Tensor::from_data(
                TensorData::new(values, [cols, rows]),
                device,
            ))
        };
        let adapter = config.adapter(d_in, d_out);
        projection.set_lora(adapter.init_with(burn_layout(a)?, burn_layout(b)?));
    }
    problems.extend(
        unused
            .into_iter()
            .map(|k| format!("{k}: names no projection of the model")),
    );
    if !problems.is_empty() {
        return Err(Error::InvalidSafetensors {
            path: weights_path,
            reason: problems.join("; "),
        });
    }
    Ok(config)
}

fn find<'a>(checkpoint: &'a SafetensorsFiles, name: &str) -> Option<&'a crate::io::TensorEntry> {
    checkpoint.tensors().iter().find(|t| t.name == name)
}

/// The LoRA settings of an `adapter_config.json`.
fn parse_config(text: &str) -> std::result::Result<LoraConfig, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if v["peft_type"] != "LORA" {
        return Err(format!("peft_type {} is not LORA", v["peft_type"]));
    }
    if v["use_dora"] == true {
        return Err("`use_dora` (DoRA) is not supported".into());
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if v[key].as_object().is_some_and(|o| !o.is_empty()) {
            return Err(format!("`{key}` (per-module settings) is not supported"));
        }
    }
    let number = |key: &str| v[key].as_f64().ok_or(format!("`{key}` must be a number"));
    let target_modules = match &v["target_modules"] {
        Value::String(s) if s == "all-linear" => TargetModules::AllLinear,
        Value::String(s) => TargetModules::Names(vec![s.clone()]),
        Value::Array(names) => TargetModules::Names(
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
        ),
        other => {
            return Err(format!(
                "target_modules {other} is not a name, a list or all-linear"
            ));
        }
    };
    let r = number("r")?;
    if r < 1.0 || r.fract() != 0.0 {
        return Err(format!("r {r} must be a positive integer"));
    }
    Ok(LoraConfig {
        r: r as usize,
        lora_alpha: number("lora_alpha")?,
        lora_dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        use_rslora: v["use_rslora"] == true,
        target_modules,
    })
}
