//! Forward and generation throughput of our Llama on SmolLM2-135M-Instruct beside
//! transformers, on the CPU backend, as ratios measured in one run.
//!
//!     ./scripts/get_smollm2.sh
//!     SPECTRUM_BENCH_PYTHON=/path/to/python cargo bench --bench model
//!
//! Forward: batch 4 x 256 random ids, one warm-up, median of 3. Generation: greedy, 64 new
//! tokens after "The capital of France is" with the KV cache, EOS ignored, median of 3. The
//! reference is `scripts/bench_transformers.py` (same shapes, torch with 2 threads) run by
//! `SPECTRUM_BENCH_PYTHON` (default `python3`, needs torch and transformers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::backend::Flex;
use burn_spectrum::model::{GenerationConfig, LlamaForCausalLM, Tokenizer, generate, ids_tensor};

// The allocator matters on the CPU backend: glibc's returns large tensor buffers to the OS and
// page-faults them back in on every op, which cost a third of a forward pass (measured).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 4;
const SEQ: usize = 256;
const NEW_TOKENS: usize = 64;

fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// Token ids from a fixed linear congruential sequence, so every run sees the same batch.
fn random_ids(vocab: usize) -> Vec<Vec<u32>> {
    let mut state: u64 = 42;
    (0..BATCH)
        .map(|_| {
            (0..SEQ)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

fn ours(dir: &Path) -> (f64, f64) {
    let device = Default::default();
    let model = LlamaForCausalLM::<Flex>::from_pretrained(dir, &device).expect("model loads");
    let tokenizer = Tokenizer::from_dir(dir).expect("tokenizer loads");
    let batch = random_ids(model.config().vocab_size);
    let forward = median_seconds(3, || {
        let logits = model.forward(ids_tensor(&batch, &device).unwrap());
        let _ = logits.into_data();
    });
    let prompt = tokenizer
        .encode("The capital of France is", true)
        .expect("encodes");
    let config = GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        ..Default::default()
    };
    let generation = median_seconds(3, || {
        let out = generate(&model, &prompt, &config, &device, |_| {}).expect("generates");
        assert_eq!(out.generated_ids.len(), NEW_TOKENS);
    });
    (
        (BATCH * SEQ) as f64 / forward,
        NEW_TOKENS as f64 / generation,
    )
}

fn transformers(python: &str, dir: &Path) -> Option<(f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_transformers.py");
    let output = Command::new(python).arg(script).arg(dir).output().ok()?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some((
        json["forward_tok_s"].as_f64()?,
        json["generate_tok_s"].as_f64()?,
    ))
}

fn main() {
    burn_spectrum::backend::retain_freed_memory();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/models/SmolLM2-135M-Instruct");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("{} is missing: run ./scripts/get_smollm2.sh", dir.display());
        std::process::exit(1);
    }
    let python = std::env::var("SPECTRUM_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let (forward, generation) = ours(&dir);
    println!(
        "burn-spectrum (flex CPU): forward {forward:.1} tok/s (batch {BATCH} x {SEQ}), generate {generation:.2} tok/s"
    );
    match transformers(&python, &dir) {
        Some((ref_forward, ref_generation)) => {
            println!(
                "transformers (torch CPU, 2 threads): forward {ref_forward:.1} tok/s, generate {ref_generation:.2} tok/s"
            );
            println!(
                "ratio ours/transformers: forward {:.2}x, generate {:.2}x",
                forward / ref_forward,
                generation / ref_generation
            );
        }
        None => println!("transformers not run: `{python}` with torch and transformers is needed"),
    }
}
