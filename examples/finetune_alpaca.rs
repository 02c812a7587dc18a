//! Fine-tunes one model on Alpaca data with Spectrum, LoRA, QLoRA, Spectrum + QLoRA and full
//! fine-tuning, the same data, split and steps for each, and compares them in
//! `runs/finetune_alpaca/report.md` (with `report.json`, `loss.png` and `snr.png`).
//!
//! ```sh
//! cargo run --release --example finetune_alpaca                 # all five methods
//! cargo run --release --example finetune_alpaca -- --method lora,spectrum --steps 10
//! ```
//!
//! Each method runs in a child process (this program again, with `--child METHOD`), so the
//! peak memory reported is that method's own. `--resume` continues runs killed at any point.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn_spectrum::report::{MethodRun, ReportConfig, write_report};
use burn_spectrum::spectrum::{SpectrumSelector, Threshold};
use burn_spectrum::train::{MethodName, RunConfig, TrainArgs, read_metrics, read_summary, run_on};
use burn_spectrum::{Error, Result};
use clap::{Parser, ValueEnum};

// The CPU backend's tensors churn through the allocator; mimalloc is much faster than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_MODEL: &str = "assets/models/SmolLM2-135M-Instruct";
const DEFAULT_DATA: &str = "assets/data/alpaca_en_demo.json";

#[derive(Parser)]
#[command(about = "Compare Spectrum, LoRA, QLoRA and full fine-tuning on Alpaca data")]
struct Cli {
    /// A Hugging Face model folder.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// An Alpaca JSON file.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// full, spectrum, lora, qlora, spectrum-qlora, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    method: Vec<String>,
    #[arg(long, default_value = "runs/finetune_alpaca")]
    output_dir: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    /// Internal: run this one method in this process.
    #[arg(long, hide = true)]
    child: Option<MethodName>,
}

fn main() {
    burn_spectrum::backend::retain_freed_memory();
    // Ctrl-C or a kill: temporary files (a half-written import is hundreds of MB) go too.
    burn_spectrum::remove_temporaries_on_signal();
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 1 } else { 0 })
    });
    let result = match cli.child {
        Some(name) => run_child(&cli, name),
        None => compare(&cli),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

/// Runs every method in its own process, then writes the report.
fn compare(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let methods = method_names(&cli.method)?;
    check_inputs(cli)?;
    std::fs::create_dir_all(&cli.output_dir).map_err(|e| Error::io(&cli.output_dir, e))?;
    let mut runs = Vec::new();
    for name in methods {
        let config = run_config(cli, name);
        println!("== {} (lr {:.1e})", config.method.name(), config.lr);
        let status =
            Command::new(std::env::current_exe().map_err(|e| Error::io("current_exe", e))?)
                .args(std::env::args_os().skip(1))
                .args([
                    "--child",
                    name.to_possible_value().expect("named").get_name(),
                ])
                .status()
                .map_err(|e| Error::io("current_exe", e))?;
        let dir = &config.output_dir;
        let outcome = match status.success() {
            true => read_summary(&dir.join("summary.json")).map_err(|e| e.to_string()),
            false => {
                Err(std::fs::read_to_string(dir.join("error.txt")).unwrap_or(status.to_string()))
            }
        };
        match &outcome {
            Ok(s) => println!(
                "{}: {:.2} s/step, eval loss {} -> {}",
                s.method,
                s.seconds_per_step,
                loss(s.eval_loss_before),
                loss(s.eval_loss_after)
            ),
            Err(reason) => println!("{}: failed: {reason}", config.method.name()),
        }
        let metrics = read_metrics(&dir.join("metrics.jsonl"))?;
        runs.push(MethodRun {
            method: config.method.name(),
            lr: config.lr,
            outcome,
            metrics,
        });
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let scan = SpectrumSelector::new(Threshold::Spectrum).scan_safetensors(&cli.model)?;
    let selection = scan.select(cli.train.top_percent)?;
    let config = report_config(cli, wall_seconds);
    write_report(&cli.output_dir, &config, &runs, Some((&scan, &selection)))?;
    println!(
        "compared {} methods in {wall_seconds:.0} s; wrote {}",
        runs.len(),
        cli.output_dir.join("report.md").display()
    );
    Ok(())
}

/// One method, in this process; its error is kept in `error.txt` for the parent's report.
fn run_child(cli: &Cli, name: MethodName) -> Result<()> {
    let config = run_config(cli, name);
    let _ = std::fs::remove_file(config.output_dir.join("error.txt"));
    let summary = run_on(cli.train.backend, &config).inspect_err(|error| {
        let _ = std::fs::create_dir_all(&config.output_dir);
        let _ = std::fs::write(config.output_dir.join("error.txt"), error.to_string());
    })?;
    if cli.train.quiet {
        println!(
            "{}: {} steps, {:.0} tokens/s",
            summary.method, summary.steps, summary.tokens_per_second
        );
    }
    Ok(())
}

/// `all` or a comma list of method names.
fn method_names(names: &[String]) -> Result<Vec<MethodName>> {
    if names.iter().any(|n| n == "all") {
        return Ok(MethodName::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            MethodName::from_str(n, false).map_err(|_| Error::InvalidSetting {
                name: "--method",
                value: n.clone(),
                expected: "full, spectrum, lora, qlora, spectrum-qlora or all",
            })
        })
        .collect()
}

/// Fetches the default model and data when missing; any other missing path is an error.
fn check_inputs(cli: &Cli) -> Result<()> {
    // Compiled in; the device is checked by each method's process (run_on), so that this
    // parent holds no GPU context while they run.
    cli.train.backend.check_compiled()?;
    for (path, default, script) in [
        (&cli.model, DEFAULT_MODEL, "scripts/get_smollm2.sh"),
        (&cli.data, DEFAULT_DATA, "scripts/get_alpaca.sh"),
    ] {
        if path.exists() {
            continue;
        }
        if path != Path::new(default) {
            return Err(Error::NotFound(path.clone()));
        }
        println!("{} is missing: fetching it with {script}", path.display());
        let ok = Command::new("bash")
            .arg(script)
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !path.exists() {
            return Err(Error::NotFound(path.clone()));
        }
    }
    if cli.output_dir.is_file() {
        return Err(Error::NotAFolder(cli.output_dir.clone()));
    }
    Ok(())
}

/// The run of method `name` with the command line's settings, in `<output-dir>/<method>`.
fn run_config(cli: &Cli, name: MethodName) -> RunConfig {
    let method = cli.train.method(name, None);
    let output_dir = cli.output_dir.join(method.name());
    let (model, data) = (cli.model.clone(), cli.data.clone());
    cli.train.run_config(name, method, model, data, output_dir)
}

fn report_config(cli: &Cli, wall_seconds: f64) -> ReportConfig {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    ReportConfig {
        model: cli.model.display().to_string(),
        data: cli.data.display().to_string(),
        steps: cli.train.steps,
        batch_size: cli.train.batch_size,
        grad_accum: cli.train.grad_accum,
        seq_len: cli.train.seq_len,
        eval_samples: cli.train.eval_samples,
        top_percent: cli.train.top_percent,
        backend: cli.train.backend.feature().to_string(),
        seed: cli.train.seed,
        wall_seconds,
        machine: format!(
            "{} {} with {cores} cores",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    }
}

fn loss(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.4}"))
}
