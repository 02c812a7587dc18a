//! `spectrum generate`: continue a prompt with a model folder.

use std::path::Path;

use burn_spectrum::Result;
use burn_spectrum::backend::DefaultBackend;
use burn_spectrum::model::top_logits;
use burn_spectrum::model::{
    ChatMessage, GenerationConfig, LlamaForCausalLM, Tokenizer, eos_token_ids, generate,
};
use serde_json::json;

use crate::stdout;

/// How many of the largest last-prompt logits `--format json` reports.
const TOP_LOGITS: usize = 20;

pub struct Options {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub chat: bool,
    pub json: bool,
}

pub fn run(model_dir: &Path, prompt: &str, options: &Options) -> Result<()> {
    let mut config = GenerationConfig {
        max_new_tokens: options.max_new_tokens,
        temperature: options.temperature,
        top_p: options.top_p,
        seed: options.seed,
        eos_token_ids: Vec::new(),
    };
    config.validate()?;
    let device = Default::default();
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let model = LlamaForCausalLM::<DefaultBackend>::from_pretrained(model_dir, &device)?;
    config.eos_token_ids = eos_token_ids(model_dir, model.config(), &tokenizer)?;
    // As transformers: a chat template already holds its special tokens, plain text gets the
    // tokenizer's own (none for SmolLM2, a BOS for Llama).
    let prompt_ids = if options.chat {
        let text = tokenizer.apply_chat_template(&[ChatMessage::user(prompt)], true)?;
        tokenizer.encode(&text, false)?
    } else {
        tokenizer.encode(prompt, true)?
    };
    let mut printer = Printer::new(&tokenizer, !options.json);
    let generation = generate(&model, &prompt_ids, &config, &device, |id| printer.push(id))?;
    let text = tokenizer.decode(&generation.generated_ids, true)?;
    if options.json {
        let top: Vec<_> = top_logits(&generation.last_prompt_logits, TOP_LOGITS)
            .into_iter()
            .map(|(id, logit)| json!([id, logit]))
            .collect();
        let line = json!({
            "prompt_ids": generation.prompt_ids,
            "generated_ids": generation.generated_ids,
            "text": text,
            "last_logits_top": top,
        });
        stdout::println(&line.to_string())
    } else {
        printer.finish()?;
        stdout::println("")
    }
}

/// Prints the text of the tokens as they come. Decoding the whole continuation each time
/// (not token by token) keeps multi-byte characters split over tokens whole.
struct Printer<'a> {
    tokenizer: &'a Tokenizer,
    enabled: bool,
    ids: Vec<u32>,
    printed: usize,
    /// The first write error: printing stops there, and the command fails with it after.
    failed: Option<burn_spectrum::Error>,
}

impl<'a> Printer<'a> {
    fn new(tokenizer: &'a Tokenizer, enabled: bool) -> Self {
        Printer {
            tokenizer,
            enabled,
            ids: Vec::new(),
            printed: 0,
            failed: None,
        }
    }

    fn push(&mut self, id: u32) {
        if !self.enabled || self.failed.is_some() {
            return;
        }
        self.ids.push(id);
        let Ok(text) = self.tokenizer.decode(&self.ids, true) else {
            return;
        };
        // A character still incomplete decodes to U+FFFD; wait for its next bytes.
        if text.ends_with('\u{FFFD}') || !text.is_char_boundary(self.printed.min(text.len())) {
            return;
        }
        if text.len() > self.printed {
            if let Err(e) = stdout::print(&text[self.printed..]) {
                self.failed = Some(e);
            }
            self.printed = text.len();
        }
    }

    /// The write error that stopped printing, if any.
    fn finish(self) -> Result<()> {
        self.failed.map_or(Ok(()), Err)
    }
}
