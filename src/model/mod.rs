//! Llama and Mistral as Hugging Face transformers computes them, with its module names.
//!
//! - [`LlamaConfig`] reads `config.json`; [`LlamaForCausalLM`] is the model, loaded with
//!   [`LlamaForCausalLM::from_pretrained`] and written with [`LlamaForCausalLM::save_pretrained`].
//! - [`Tokenizer`] wraps `tokenizer.json` and the chat template; [`generate()`] continues a prompt.
//! - [`gguf`] turns a llama.cpp GGUF file into a Hugging Face folder.

mod attention;
mod cache;
mod chat_template;
pub mod config;
mod decoder;
pub mod generate;
pub mod gguf;
pub(crate) mod linear;
mod llama;
mod load;
pub mod mask;
mod mlp;
mod projection;
mod rms_norm;
pub mod rope;
pub mod sampling;
pub mod save;
mod tokenizer;

pub use attention::Attention;
pub use cache::KvCache;
pub use config::{Llama3RopeScaling, LlamaConfig, ModelType};
pub use decoder::DecoderLayer;
pub use generate::{Generation, GenerationConfig, eos_token_ids, generate};
pub use llama::{IGNORE_INDEX, LlamaForCausalLM, LlamaModel, ids_tensor};
pub use mlp::Mlp;
pub use projection::Projection;
pub use rms_norm::RmsNorm;
pub use tokenizer::{ChatMessage, Tokenizer};
