//! Scan speed and memory, ours beside spectrum.py's formula in torch, in one run.
//!
//! ```text
//! cargo bench --bench scan
//! ```
//!
//! Inputs: the real SmolLM2-135M as an HF folder (`SPECTRUM_BENCH_MODEL`, default
//! `assets/models/SmolLM2-135M-Instruct`; see the README for how to make it), and a random
//! Llama-3-8B-shaped layer (4096x4096, 1024x4096, 14336x4096 in bf16) written to a temporary
//! folder. The reference is `scripts/spectrum_reference.py` run by `SPECTRUM_BENCH_PYTHON`
//! (default `python3`; it needs torch and safetensors). Each side runs as a child process, so
//! its peak resident memory is its own. Set `SPECTRUM_BENCH_SKIP_LAYER=1` to skip the layer,
//! and `SCAN_ROUNDS=N` (default 1) to run both sides N times, back to back, keeping the
//! fastest run of each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn_spectrum::spectrum::{Selection, SnrTable};

struct Run {
    seconds: f64,
    peak_rss_mb: f64,
}

/// Runs a command to completion; its wall time and peak resident memory.
fn run(command: &mut Command) -> Option<Run> {
    let started = Instant::now();
    let child = command.stdout(std::process::Stdio::null()).spawn().ok()?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writing.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    let exited_ok = pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    exited_ok.then(|| Run {
        seconds,
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn ours(model: &Path, out_dir: &Path, threshold: &str) -> Option<Run> {
    run(Command::new(env!("CARGO_BIN_EXE_spectrum"))
        .args([
            "scan",
            model.to_str()?,
            "--out-dir",
            out_dir.to_str()?,
            "--model-name",
            "bench",
        ])
        .args([
            "--threshold",
            threshold,
            "--top-percent",
            "25",
            "--top-percent",
            "50",
        ]))
}

fn reference(python: &str, model: &Path, out_json: &Path) -> Option<Run> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spectrum_reference.py");
    run(Command::new(python)
        .arg(script)
        .arg(model)
        .arg(out_json)
        .args(["--threads", "2"]))
}

/// Largest relative SNR difference over finite entries, and whether the top 25% and 50%
/// selections are identical.
fn compare(ours: &Path, theirs: &Path) -> (f64, bool) {
    let a = SnrTable::read(ours).expect("our table");
    let b = SnrTable::read(theirs).expect("reference table");
    let mut worst: f64 = 0.0;
    for (x, y) in a.entries.iter().zip(&b.entries) {
        assert_eq!(x.name, y.name, "same modules in the same order");
        if x.snr.is_finite() && y.snr.is_finite() {
            worst = worst.max((x.snr - y.snr).abs() / y.snr.abs().max(1e-30));
        } else {
            assert_eq!(x.snr.is_infinite(), y.snr.is_infinite(), "{}", x.name);
        }
    }
    let same = [25, 50].iter().all(|&p| select(&a, p) == select(&b, p));
    (worst, same)
}

/// The faster of two runs (the peak memory of either): one run is noisy on a shared machine.
fn best(a: Option<Run>, b: Option<Run>) -> Option<Run> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Run {
            seconds: a.seconds.min(b.seconds),
            peak_rss_mb: a.peak_rss_mb.max(b.peak_rss_mb),
        }),
        (a, b) => a.or(b),
    }
}

fn report(name: &str, largest_f32_mb: f64, model: &Path, python: &str, work: &Path) {
    println!("\n== {name} (largest tensor {largest_f32_mb:.0} MiB as f32)");
    let ours_dir = work.join(format!("ours-{name}"));
    let ref_json = work.join(format!("reference-{name}.json"));
    let rounds: usize = std::env::var("SCAN_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Ours and the reference back to back in each round; the best round of each is kept.
    let (mut spectrum, mut torch) = (None, None);
    for _ in 0..rounds {
        let Some(run) = ours(model, &ours_dir, "spectrum") else {
            println!("our scan failed");
            return;
        };
        spectrum = best(spectrum, Some(run));
        torch = best(torch, reference(python, model, &ref_json));
    }
    let spectrum = spectrum.expect("at least one round");
    let mp = ours(model, &work.join(format!("mp-{name}")), "mp");
    println!(
        "ours (threshold spectrum): {:8.2} s, peak RSS {:7.0} MiB = {:.2}x the largest tensor",
        spectrum.seconds,
        spectrum.peak_rss_mb,
        spectrum.peak_rss_mb / largest_f32_mb
    );
    if let Some(mp) = mp {
        println!(
            "ours (threshold mp):       {:8.2} s, peak RSS {:7.0} MiB",
            mp.seconds, mp.peak_rss_mb
        );
    }
    match torch {
        Some(torch) => {
            let (worst, same) = compare(&ours_dir.join("snr_results_bench.json"), &ref_json);
            println!(
                "torch (2 threads):         {:8.2} s, peak RSS {:7.0} MiB",
                torch.seconds, torch.peak_rss_mb
            );
            println!(
                "best of {rounds} round(s); speed-up {:.1}x, memory {:.2}x of torch; max relative SNR difference {worst:.2e}; same 25%/50% selections: {same}",
                torch.seconds / spectrum.seconds,
                spectrum.peak_rss_mb / torch.peak_rss_mb
            );
        }
        None => println!("reference not run: `{python}` with torch and safetensors is needed"),
    }
}

/// A random Llama-3-8B-shaped layer in bf16: q (4096x4096), k (1024x4096), gate (14336x4096).
fn write_layer(path: &Path) {
    let shapes = [
        ("model.layers.0.self_attn.q_proj.weight", [4096usize, 4096]),
        ("model.layers.0.self_attn.k_proj.weight", [1024, 4096]),
        ("model.layers.0.mlp.gate_proj.weight", [14336, 4096]),
    ];
    let mut state = 0x2545F4914F6CDD1Du64;
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, [r, c])| {
            (0..r * c)
                .flat_map(|_| {
                    // xorshift; a sum of 4 uniforms is near enough to Gaussian for a timing.
                    let mut sum = 0.0f32;
                    for _ in 0..4 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        sum += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    }
                    half::bf16::from_f32(sum * 0.02).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::BF16,
                    shape.to_vec(),
                    bytes,
                )
                .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write the layer");
}

fn main() {
    let python = std::env::var("SPECTRUM_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let work = tempfile::tempdir().expect("a temporary folder");
    let smollm: PathBuf = std::env::var("SPECTRUM_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/SmolLM2-135M-Instruct")
        });
    if smollm.exists() {
        // The largest SmolLM2 tensor is the 49152x576 embedding.
        report(
            "SmolLM2-135M",
            49152.0 * 576.0 * 4.0 / 1048576.0,
            &smollm,
            &python,
            work.path(),
        );
    } else {
        println!("{} not found: see the README to make it", smollm.display());
    }
    if std::env::var_os("SPECTRUM_BENCH_SKIP_LAYER").is_none() {
        let layer = work.path().join("llama3-8b-layer");
        std::fs::create_dir_all(&layer).unwrap();
        write_layer(&layer.join("model.safetensors"));
        report(
            "Llama-3-8B-layer",
            14336.0 * 4096.0 * 4.0 / 1048576.0,
            &layer,
            &python,
            work.path(),
        );
    }
}

/// spectrum.py's YAML of the top `pct`% of `table`.
fn select(table: &SnrTable, pct: u32) -> String {
    Selection::top_percent(table, pct).unwrap().to_yaml()
}
