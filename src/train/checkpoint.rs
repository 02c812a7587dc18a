//! Training checkpoints: the weights trained so far (named by module path, with their
//! `ParamId`s), which of them train now and at what learning-rate multiplier, the optimizer
//! state, and where training stood, in `checkpoint-<step>/` folders that appear whole or not
//! at all.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleMapper, Param, ParamId};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use super::step::TrainStep;
use crate::data::DataPosition;
use crate::error::{Error, Result};
use crate::io::SafetensorsFiles;
use crate::io::{
    StoredTensor, create_registered, critical_section, write_atomic, write_json, write_safetensors,
};
use crate::nn::float_params_f32;

const WEIGHTS: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.mpk";
const STATE: &str = "trainer_state.json";
const IDS: &str = "param_ids.json";
const TARGETS: &str = "targets.json";

/// Which saved parameters train now, and their learning-rate multipliers, by path.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Targets {
    trainable: Vec<String>,
    lr_scales: HashMap<String, f64>,
}

/// Where training stood when a checkpoint was written, besides weights and optimizer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps done.
    pub step: usize,
    /// The next batch of the data stream.
    pub data_position: DataPosition,
    /// The run's seed (data order and any sampling derive from it).
    pub seed: u64,
}

type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl<B: AutodiffBackend, M: AutodiffModule<B>> TrainStep<B, M> {
    /// Writes `checkpoint-<step>/` under `dir`: built in a hidden temporary folder and renamed,
    /// so a crash leaves the previous checkpoints as they were. Returns its path.
    pub fn save_checkpoint(&self, model: &M, state: &TrainerState, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = format!("checkpoint-{}", state.step);
        // A signal waits for the checkpoint to be whole (see `io::critical_section`).
        let uninterrupted = critical_section();
        let (tmp, registered) = create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(&format!(".{name}-"))
                    .tempdir_in(dir)
            },
            |tmp| tmp.path(),
        )
        .map_err(|e| Error::io(dir, e))?;
        let (tensors, ids, targets) = self.trained_tensors(model);
        let weights = tmp.path().join(WEIGHTS);
        write_safetensors(&weights, &tensors).map_err(|e| Error::io(&weights, e))?;
        for (file, value) in [
            (IDS, serde_json::to_value(&ids)),
            (TARGETS, serde_json::to_value(&targets)),
        ] {
            let value = value.expect("maps of names serialize");
            write_json(&tmp.path().join(file), &value).map_err(|e| Error::io(tmp.path(), e))?;
        }
        let optimizer = Recorder::<B>::record(&Bytes::default(), self.optimizer_record(), ())
            .map_err(|e| Error::OptimizerState(e.to_string()))?;
        write_atomic(&tmp.path().join(OPTIMIZER), &optimizer)?;
        let state_json = serde_json::to_value(state).expect("the state serializes");
        write_json(&tmp.path().join(STATE), &state_json).map_err(|e| Error::io(tmp.path(), e))?;
        let target = dir.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        let kept = tmp.keep();
        std::fs::rename(&kept, &target).map_err(|e| Error::io(&target, e))?;
        drop(registered);
        drop(uninterrupted);
        Ok(target)
    }

    /// Restores a checkpoint folder onto `model` (loaded and prepared as when the run began)
    /// and this step, so that training continues exactly where it stopped: the saved weights,
    /// the trainable set and multipliers of that moment (which re-selection may have changed),
    /// the optimizer state.
    pub fn resume(
        self,
        model: M,
        checkpoint: &Path,
        device: &B::Device,
    ) -> Result<(M, Self, TrainerState)> {
        let state: TrainerState = read_json(&checkpoint.join(STATE))?;
        let ids: HashMap<String, u64> = read_json(&checkpoint.join(IDS))?;
        let targets: Targets = read_json(&checkpoint.join(TARGETS))?;
        let (model, restored) =
            restore_trained(model, &checkpoint.join(WEIGHTS), &ids, &targets, device)?;
        let path = checkpoint.join(OPTIMIZER);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let record = Recorder::<B>::load(&Bytes::default(), bytes, device).map_err(|e| {
            Error::InvalidSafetensors {
                path: path.clone(),
                reason: format!("not an optimizer state: {e}"),
            }
        })?;
        let lr_scales = targets
            .lr_scales
            .iter()
            .filter_map(|(path, &scale)| restored.get(path).map(|&id| (id, scale)))
            .collect();
        let trained = restored.into_values().collect();
        let step = self.restored(&model, record, state.step, trained, lr_scales)?;
        Ok((model, step, state))
    }

    /// The parameters trained so far as f32 tensors named by path, their ids, and which of
    /// them train now.
    fn trained_tensors(
        &self,
        model: &M,
    ) -> (Vec<(String, StoredTensor)>, HashMap<String, u64>, Targets) {
        let mut targets = Targets::default();
        let params = float_params_f32(model, |p| {
            if p.require_grad {
                targets.trainable.push(p.path.clone());
            }
            if let Some(&scale) = self.lr_scales().get(&p.id) {
                targets.lr_scales.insert(p.path.clone(), scale);
            }
            p.require_grad || self.trained().contains(&p.id)
        });
        let ids = params
            .iter()
            .map(|p| (p.path.clone(), p.id.val()))
            .collect();
        let tensors = params
            .into_iter()
            .map(|p| (p.path, StoredTensor::from_f32(p.shape, &p.values)))
            .collect();
        (tensors, ids, targets)
    }
}

/// The newest complete `checkpoint-<step>` folder in `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(step, _)| *step)
        .map(|(_, path)| path)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Puts the saved values and ids back by path, and makes trainable exactly the parameters
/// `targets` lists (every other one frozen). Returns the model and the restored ids by path.
fn restore_trained<B: Backend, M: burn::module::Module<B>>(
    model: M,
    weights: &Path,
    ids: &HashMap<String, u64>,
    targets: &Targets,
    device: &B::Device,
) -> Result<(M, HashMap<String, ParamId>)> {
    let checkpoint = SafetensorsFiles::open(weights)?;
    let mut values = HashMap::new();
    for entry in checkpoint.tensors() {
        values.insert(
            entry.name.clone(),
            (entry.shape.clone(), checkpoint.read_f32(entry)?),
        );
    }
    let mut problems: Vec<String> = targets
        .trainable
        .iter()
        .filter(|path| !values.contains_key(*path))
        .map(|path| format!("{path}: trainable but its weights are not saved"))
        .collect();
    let mut restorer = Restorer {
        path: Vec::new(),
        values,
        ids,
        trainable: targets.trainable.iter().map(String::as_str).collect(),
        device: device.clone(),
        restored: HashMap::new(),
        problems: Vec::new(),
    };
    let model = model.map(&mut restorer);
    problems.extend(restorer.problems);
    problems.extend(
        restorer
            .values
            .keys()
            .map(|k| format!("{k}: the model has no such parameter")),
    );
    if !problems.is_empty() {
        problems.sort();
        return Err(Error::InvalidSafetensors {
            path: weights.to_path_buf(),
            reason: problems.join("; "),
        });
    }
    Ok((model, restorer.restored))
}

struct Restorer<'a, B: Backend> {
    path: Vec<String>,
    values: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ids: &'a HashMap<String, u64>,
    trainable: HashSet<&'a str>,
    device: B::Device,
    restored: HashMap<String, ParamId>,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Restorer<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let Some((shape, values)) = self.values.remove(&name) else {
            return param.set_require_grad(false);
        };
        if shape != param.dims() {
            self.problems.push(format!(
                "{name}: shape {shape:?}, the model has {:?}",
                param.dims()
            ));
            return param;
        }
        let id = self.ids.get(&name).map_or(param.id, |&v| ParamId::from(v));
        self.restored.insert(name.clone(), id);
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &self.device);
        let tensor = if self.trainable.contains(name.as_str()) {
            tensor.require_grad()
        } else {
            tensor
        };
        Param::initialized(id, tensor)
    }
}
