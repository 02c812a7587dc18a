//! `spectrum train`: one fine-tuning run.

use std::path::PathBuf;

use crate::stdout;
use burn_spectrum::train::{MethodName, TrainArgs, run_on};
use burn_spectrum::{Error, Result};

/// The files of a `spectrum train` run.
pub struct Paths {
    pub model_dir: PathBuf,
    pub data: PathBuf,
    pub unfrozen_yaml: Option<PathBuf>,
    pub output_dir: PathBuf,
}

pub fn train(paths: Paths, name: MethodName, args: &TrainArgs) -> Result<()> {
    let spectrum = matches!(name, MethodName::Spectrum | MethodName::SpectrumQlora);
    if paths.unfrozen_yaml.is_some() && !spectrum {
        return Err(Error::InvalidSetting {
            name: "--unfrozen-yaml",
            value: format!("with --method {name:?}").to_lowercase(),
            expected: "goes with --method spectrum or spectrum-qlora",
        });
    }
    let method = args.method(name, paths.unfrozen_yaml);
    let config = args.run_config(name, method, paths.model_dir, paths.data, paths.output_dir);
    eprintln!(
        "{}: {} steps of {} x {} records, lr {:.1e}, into {}",
        config.method.name(),
        config.steps,
        config.grad_accum,
        config.batch_size,
        config.lr,
        config.output_dir.display()
    );
    let summary = run_on(args.backend, &config)?;
    let eval = match (summary.eval_loss_before, summary.eval_loss_after) {
        (Some(before), Some(after)) => format!(", eval loss {before:.4} -> {after:.4}"),
        _ => String::new(),
    };
    stdout::println(&format!(
        "{}: {} steps, {:.2} s/step, {:.0} tokens/s{eval}; wrote {}",
        summary.method,
        summary.steps,
        summary.seconds_per_step,
        summary.tokens_per_second,
        config.output_dir.join("model").display()
    ))
}
