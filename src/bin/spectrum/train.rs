//! `spectrum train`: one fine-tuning run.

use std::path::PathBuf;

use crate::stdout;
use burn_spectrum::train::{MethodName, NodeArgs, TrainArgs, run_on};
use burn_spectrum::{Error, Result};

/// The files of a `spectrum train` run.
pub struct Paths {
    pub model_dir: PathBuf,
    pub data: PathBuf,
    pub unfrozen_yaml: Option<PathBuf>,
    pub output_dir: PathBuf,
}

pub fn train(paths: Paths, name: MethodName, args: &TrainArgs, nodes: &NodeArgs) -> Result<()> {
    let spectrum = matches!(name, MethodName::Spectrum | MethodName::SpectrumQlora);
    if paths.unfrozen_yaml.is_some() && !spectrum {
        return Err(Error::InvalidSetting {
            name: "--unfrozen-yaml",
            value: format!("with --method {name:?}").to_lowercase(),
            expected: "goes with --method spectrum or spectrum-qlora",
        });
    }
    let method = args.method(name, paths.unfrozen_yaml);
    let mut config = args.run_config(name, method, paths.model_dir, paths.data, paths.output_dir);
    config.nodes = nodes.node_config()?;
    eprintln!(
        "{}: {} steps of {} x {} records, lr {:.1e}, into {}",
        config.method.name(),
        config.steps,
        config.grad_accum,
        config.batch_size,
        config.lr,
        config.output_dir.display()
    );
    if let Some(nodes) = &config.nodes {
        eprintln!(
            "node {} of {}, {} workers each, meeting at {}",
            nodes.node_rank, nodes.num_nodes, config.devices, nodes.orchestrator
        );
    }
    let summary = run_on(args.backend, &config)?;
    let eval = match (summary.eval_loss_before, summary.eval_loss_after) {
        (Some(before), Some(after)) => format!(", eval loss {before:.4} -> {after:.4}"),
        _ => String::new(),
    };
    let wrote = match &config.nodes {
        Some(nodes) if !config.writes_outputs() => {
            format!("node {}: node 0 wrote the run folder", nodes.node_rank)
        }
        _ => format!("wrote {}", config.output_dir.join("model").display()),
    };
    stdout::println(&format!(
        "{}: {} steps, {:.2} s/step, {:.0} tokens/s{eval}; {wrote}",
        summary.method, summary.steps, summary.seconds_per_step, summary.tokens_per_second,
    ))
}
