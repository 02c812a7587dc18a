//! Parameter-efficient fine-tuning with PEFT's semantics: LoRA configuration, putting adapters
//! on a model (and NF4 bases under them, for QLoRA), and PEFT's adapter folder format.
//!
//! The adapter and the NF4 weight themselves are building blocks in [`crate::nn`].

mod adapter_file;
mod apply;
mod lora;

pub use adapter_file::{load_adapter, save_adapter};
pub use apply::{add_lora, quantize_nf4};
pub use lora::{LoraConfig, TargetModules};
