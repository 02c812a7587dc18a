//! Parameter-efficient fine-tuning: LoRA adapters with PEFT's semantics and file format.

mod adapter_file;
mod apply;
mod lora;
pub mod nf4;
mod nf4_weight;

pub use adapter_file::{load_adapter, save_adapter};
pub use apply::{add_lora, quantize_nf4};
pub use lora::{LoraAdapter, LoraConfig, TargetModules};
pub use nf4_weight::Nf4Weight;
