//! Parameter-efficient fine-tuning: LoRA adapters with PEFT's semantics and file format.

mod adapter_file;
mod apply;
mod lora;
pub mod nf4;

pub use adapter_file::{load_adapter, save_adapter};
pub use apply::add_lora;
pub use lora::{LoraAdapter, LoraConfig, TargetModules};
