//! Llama and Mistral as Hugging Face transformers computes them, with its module names.
//!
//! - [`LlamaConfig`] reads `config.json` and builds the module tree ([`LlamaConfig::init`]);
//!   [`LlamaForCausalLM`] is the model, loaded with [`LlamaForCausalLM::from_pretrained`] and
//!   written with [`LlamaForCausalLM::save_pretrained`].
//! - [`Tokenizer`] wraps `tokenizer.json` and the chat template; [`generate()`] continues a prompt.
//! - [`gguf`] turns a llama.cpp GGUF file into a Hugging Face folder.

mod attention;
mod cache;
mod chat_template;
pub(crate) mod checkpoint_shapes;
mod config;
mod decoder;
mod generate;
pub mod gguf;
mod hf_layout;
mod llama;
mod load;
mod mlp;
mod sampling;
mod save;
mod tokenizer;

pub(crate) use attention::AttentionContext;
pub use attention::{Attention, AttentionConfig};
pub use cache::KvCache;
pub use chat_template::ChatMessage;
pub use config::{LlamaConfig, ModelType};
pub use decoder::{DecoderLayer, DecoderLayerConfig};
pub use generate::{Generation, GenerationConfig, eos_token_ids, generate};
pub use llama::{IGNORE_INDEX, LlamaForCausalLM, LlamaModel, ids_tensor};
pub(crate) use llama::{check_padding, next_token_pairs};
pub use mlp::{Mlp, MlpConfig};
pub use sampling::top_logits;
pub use tokenizer::Tokenizer;
