//! # burn-spectrum
//!
//! Fine-tuning of large language models on [Burn](https://burn.dev) the
//! [Spectrum](https://arxiv.org/abs/2406.06623) way: score every weight matrix by the
//! signal-to-noise ratio (SNR) of its singular values, keep the top k% of each module type
//! trainable, and freeze the rest.
//!
//! ## A tour
//! - [`SpectrumSelector`] scans a Burn module tree ([`SpectrumSelector::scan_module`]) or a
//!   Hugging Face checkpoint on disk ([`SpectrumSelector::scan_checkpoint`]) into a
//!   [`ScanReport`]: per module the SNR, type, shape, largest singular value, threshold and
//!   number of signal values.
//! - [`ScanReport::select`] keeps the top k% per module type, as spectrum.py does, giving a
//!   [`Selection`] that answers [`Selection::is_selected`] for a parameter name and gives the
//!   [`burn::module::ParamId`]s to train with [`Selection::param_ids`].
//! - [`SnrTable`] and [`Selection`] read and write spectrum.py's files
//!   (`snr_results_<slug>.json`, `..._sorted.json`, `..._unfrozenparameters_<pct>percent.yaml`),
//!   which axolotl reads.
//! - Three thresholds ([`Threshold`]): `spectrum` (today's spectrum.py), `legacy` (the one the
//!   published tables were made with) and `mp` (a Marchenko–Pastur bulk edge, our own).
//!
//! - [`model`] holds Llama and Mistral as Hugging Face transformers computes them:
//!   [`model::LlamaForCausalLM`] (HF module names, so Burn parameter paths are checkpoint names),
//!   `from_pretrained` / `save_pretrained`, [`model::Tokenizer`], [`model::generate()`], and
//!   [`model::gguf`] to import llama.cpp files.
//! - [`data`] turns Alpaca records into prompt-masked, padded, seeded batches; [`peft`] has LoRA
//!   (PEFT's semantics and adapter files) and NF4 (bitsandbytes' quantization, packed);
//!   [`train`] has [`train::TrainStep`] (updates only the trainable parameters of any Burn
//!   module), [`train::Method`] (full, Spectrum, LoRA, QLoRA, Spectrum+QLoRA), the
//!   [`train::train`] loop and checkpoints that resume exactly, and the paper's two ideas for
//!   future work: learning rates scaled by SNR ([`train::snr_lr_scales`]) and re-selection
//!   between epochs ([`train::Reselect`]).
//!
//! The `spectrum` binary wraps all this: `spectrum scan <MODEL>`,
//! `spectrum select <SNR_JSON> --top-percent N`, `spectrum import-gguf <FILE> <OUT_DIR>` and
//! `spectrum generate <MODEL_DIR> --prompt TEXT`.

pub mod backend;
pub mod data;
pub mod error;
pub mod io;
pub mod model;
pub mod params;
pub mod peft;
pub mod spectrum;
pub mod train;

pub use error::{Error, Result};
pub use spectrum::{ScanReport, Selection, SnrTable, SpectrumSelector, Threshold};
