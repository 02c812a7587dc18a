//! What the benchmarks that run one case per child process share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate's root folder (where `assets/` and `target/` are): where the bench was built, or
/// `SPECTRUM_REPO_DIR` when a bench built here runs on another machine (`scripts/gpu_check.sh`).
pub fn root() -> PathBuf {
    std::env::var_os("SPECTRUM_REPO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// This process's peak resident memory (`VmHWM`), in KiB; 0 where it cannot be read.
pub fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs case `index` in a child process (`exe` with `variable=index`) and returns the line it
/// printed; exits with its error output when it fails.
pub fn run_child(exe: &Path, variable: &str, index: usize) -> String {
    run_line(Command::new(exe).env(variable, index.to_string()))
}

/// Runs `command` and returns the line it printed; exits with its error output when it fails.
pub fn run_line(command: &mut Command) -> String {
    let output = command.output().expect("runs");
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || line.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        std::process::exit(1);
    }
    line
}

/// The `rows` longest records of the Alpaca demo data, cut to `seq` tokens, as one batch
/// (labels on every token).
#[allow(dead_code)] // not every bench trains
pub fn longest_records(
    tokenizer: &burn_spectrum::model::Tokenizer,
    seq: usize,
    rows: usize,
) -> burn_spectrum::data::Batch {
    use burn_spectrum::data::{Batches, EncodeOptions, prepare, read_alpaca};
    let data = read_alpaca(&root().join("assets/data/alpaca_en_demo.json")).expect("alpaca data");
    let eos = tokenizer.token_id("<|im_end|>").expect("SmolLM2's EOS");
    let options = EncodeOptions {
        max_len: seq,
        train_on_prompt: true,
    };
    let mut prepared = prepare(&data, tokenizer, eos, &options, 0, 0).expect("encodes");
    prepared
        .train
        .sort_by_key(|e| std::cmp::Reverse(e.ids.len()));
    Batches::new(&prepared.train[..rows], rows, eos, 0)
        .expect("batches")
        .next()
        .expect("a batch")
}

/// The Python that runs the PyTorch peers (`SPECTRUM_BENCH_PYTHON`, default `python3`), or
/// `None` (said on stdout) when it lacks torch, transformers or peft.
#[allow(dead_code)] // not every bench has a peer
pub fn peer_python() -> Option<String> {
    let python = std::env::var("SPECTRUM_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let usable = Command::new(&python)
        .args(["-c", "import torch, transformers, peft"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        println!("PyTorch peer not run: `{python}` with torch, transformers and peft is needed");
    }
    usable.then_some(python)
}

/// Writes `batch` as the PyTorch peers read it: `input_ids`, `attention_mask`, `labels`.
#[allow(dead_code)] // not every bench has a peer
pub fn write_batch(batch: &burn_spectrum::data::Batch, path: &Path) {
    let json = serde_json::json!({
        "input_ids": batch.ids,
        "attention_mask": batch.attention_mask,
        "labels": batch.labels,
    });
    std::fs::write(path, json.to_string()).expect("writes the batch");
}
