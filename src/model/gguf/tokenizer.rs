//! Hugging Face tokenizer files rebuilt from a GGUF file's `tokenizer.*` metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is rebuilt. Its GGUF tokens are
//! already in byte-level form (`Ġthe`), and its merges are `"left right"` strings, so both go
//! into `tokenizer.json` unchanged; what must be chosen is the pre-tokenizer, which GGUF only
//! names (`tokenizer.ggml.pre`). The names supported, with what llama.cpp does for them:
//! - `gpt2`: the GPT-2 split regex -> `ByteLevel(use_regex = true)`;
//! - `smollm`: each digit split off first, then the GPT-2 regex ->
//!   `Sequence[Digits(individual_digits = true), ByteLevel(use_regex = true)]` (SmolLM2).

use serde_json::{Map, Value, json};

use crate::error::GgufError;
use crate::io::gguf::GgufFile;

type Result<T> = std::result::Result<T, GgufError>;

/// Pre-tokenizer names (`tokenizer.ggml.pre`) that [`hf_tokenizer`] rebuilds.
pub(super) const SUPPORTED_PRE: &[&str] = &["gpt2", "smollm"];

/// GGUF token types (`tokenizer.ggml.token_type`) that become `added_tokens`.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The vocabulary part of a GGUF tokenizer, checked.
struct Vocab<'a> {
    tokens: &'a [String],
    /// One GGUF token type per token (1 = normal when the file has none).
    types: Vec<i64>,
}

impl<'a> Vocab<'a> {
    fn read(gguf: &'a GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(gguf.unsupported(
                &format!("tokenizer model `{model}`"),
                "only byte-level BPE (`gpt2`) is rebuilt",
            ));
        }
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let key = "tokenizer.ggml.token_type";
        let types = match gguf.opt_int_array(key)? {
            None => vec![1; tokens.len()],
            Some(t) if t.len() == tokens.len() => t,
            Some(t) => {
                return Err(gguf.invalid(
                    key,
                    format!("{} types for {} tokens", t.len(), tokens.len()),
                ));
            }
        };
        Ok(Vocab { tokens, types })
    }

    /// The token with the id under `key`, if the key is present; an id out of range is an error.
    fn special(&self, gguf: &GgufFile, key: &str) -> Result<Option<(u32, &'a str)>> {
        let Some(id) = gguf.opt_u32(key)? else {
            return Ok(None);
        };
        match self.tokens.get(id as usize) {
            Some(token) => Ok(Some((id, token.as_str()))),
            None => Err(gguf.invalid(
                key,
                format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.tokens.len()
                ),
            )),
        }
    }

    /// `(id, token, special)` of control (special) and user-defined (not special) tokens.
    fn added(&self) -> impl Iterator<Item = (usize, &'a str, bool)> + '_ {
        self.tokens
            .iter()
            .zip(&self.types)
            .enumerate()
            .filter(|(_, (_, t))| **t == CONTROL || **t == USER_DEFINED)
            .map(|(id, (token, t))| (id, token.as_str(), *t == CONTROL))
    }
}

/// Build `tokenizer.json` (the `tokenizers` library's format, merges as `"a b"` strings).
///
/// Errors: a tokenizer model other than `gpt2`, a pre-tokenizer not in [`SUPPORTED_PRE`],
/// missing tokens or merges, `add_bos_token` without a BOS token.
pub(super) fn hf_tokenizer(gguf: &GgufFile) -> Result<Value> {
    let vocab = Vocab::read(gguf)?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let add_prefix_space = gguf
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(false);
    let byte_level = json!({
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": true,
        "use_regex": true,
    });
    let pre_tokenizer = match gguf.opt_str("tokenizer.ggml.pre")? {
        Some("gpt2") => byte_level,
        Some("smollm") => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level],
        }),
        other => {
            return Err(gguf.unsupported(
                &format!(
                    "pre-tokenizer {}",
                    other.map_or("(none given)".to_string(), |p| format!("`{p}`"))
                ),
                &format!("supported: {}", SUPPORTED_PRE.join(", ")),
            ));
        }
    };
    let added: Vec<Value> = vocab
        .added()
        .map(|(id, content, special)| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            })
        })
        .collect();
    let vocab_map: Map<String, Value> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(gguf, &vocab)?,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_map,
            "merges": merges,
        },
    }))
}

/// What transformers' GPT-2 converter sets: a template that prepends BOS when the GGUF says
/// `add_bos_token`, else a `ByteLevel` post-processor (which changes no ids).
fn post_processor(gguf: &GgufFile, vocab: &Vocab) -> Result<Value> {
    if !gguf
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false)
    {
        return Ok(
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
        );
    }
    let key = "tokenizer.ggml.bos_token_id";
    let Some((id, bos)) = vocab.special(gguf, key)? else {
        return Err(GgufError::MissingMetadata {
            path: gguf.path().to_path_buf(),
            key: key.into(),
        });
    };
    let bos_piece = json!({"SpecialToken": {"id": bos, "type_id": 0}});
    Ok(json!({
        "type": "TemplateProcessing",
        "single": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}},
    }))
}

/// Build `tokenizer_config.json` (keys sorted, as transformers writes it): GPT-2 tokenizer
/// class, special tokens as strings, the chat template, `model_max_length` = context length.
pub(super) fn hf_tokenizer_config(gguf: &GgufFile) -> Result<Value> {
    let vocab = Vocab::read(gguf)?;
    let token = |key: &str| -> Result<Value> {
        Ok(vocab
            .special(gguf, key)?
            .map_or(Value::Null, |(_, t)| json!(t)))
    };
    let decoder: Map<String, Value> = vocab
        .added()
        .map(|(id, content, special)| {
            let entry = json!({
                "content": content,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": special,
            });
            (id.to_string(), entry)
        })
        .collect();
    let mut c = Map::new();
    c.insert(
        "add_bos_token".into(),
        json!(
            gguf.opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false)
        ),
    );
    c.insert(
        "add_prefix_space".into(),
        json!(
            gguf.opt_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(false)
        ),
    );
    c.insert("added_tokens_decoder".into(), Value::Object(decoder));
    c.insert("bos_token".into(), token("tokenizer.ggml.bos_token_id")?);
    if let Some(template) = gguf.opt_str("tokenizer.chat_template")? {
        c.insert("chat_template".into(), json!(template));
    }
    c.insert("clean_up_tokenization_spaces".into(), json!(false));
    c.insert("eos_token".into(), token("tokenizer.ggml.eos_token_id")?);
    if let Some(n) = gguf.opt_u32("llama.context_length")? {
        c.insert("model_max_length".into(), json!(n));
    }
    c.insert(
        "pad_token".into(),
        token("tokenizer.ggml.padding_token_id")?,
    );
    c.insert("tokenizer_class".into(), json!("GPT2Tokenizer"));
    c.insert(
        "unk_token".into(),
        token("tokenizer.ggml.unknown_token_id")?,
    );
    c.insert("vocab_size".into(), json!(vocab.tokens.len()));
    Ok(Value::Object(c))
}

/// Build `generation_config.json`: the BOS, EOS and (when given) padding token ids.
pub(super) fn hf_generation_config(gguf: &GgufFile) -> Result<Value> {
    let mut c = Map::new();
    c.insert(
        "bos_token_id".into(),
        json!(gguf.opt_u32("tokenizer.ggml.bos_token_id")?),
    );
    c.insert(
        "eos_token_id".into(),
        json!(gguf.opt_u32("tokenizer.ggml.eos_token_id")?),
    );
    if let Some(pad) = gguf.opt_u32("tokenizer.ggml.padding_token_id")? {
        c.insert("pad_token_id".into(), json!(pad));
    }
    Ok(Value::Object(c))
}
