//! Spectrum-25 on SmolLM2 with burn-train's `Learner`: the top quarter of each module type by
//! SNR trains, the rest is frozen, and the standard Learner does the rest (loss, perplexity
//! and learning-rate metrics, validation on the held-out records, a checkpoint per epoch).
//!
//! ```sh
//! cargo run --release --example learner                       # 2 epochs over 64 records
//! cargo run --release --example learner -- --resume 1         # continue after epoch 1
//! ```
//!
//! The fine-tuned model is saved to `runs/learner/model` (Hugging Face files, with the
//! tokenizer).

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::record::DefaultRecorder;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use burn_spectrum::backend::DefaultBackend;
use burn_spectrum::data::{EncodeOptions, prepare, read_alpaca};
use burn_spectrum::model::Tokenizer;
use burn_spectrum::train::learner::{
    BatchLoader, LossPerplexity, MicroBatchSchedule, ProgressRenderer,
};
use burn_spectrum::train::{LrSchedule, Method, SelectiveAdamW, SpectrumSource, TrainConfig};
use burn_spectrum::{Error, Result};
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type B = Autodiff<DefaultBackend>;

#[derive(Parser)]
#[command(about = "Spectrum-25 fine-tuning with burn-train's Learner")]
struct Cli {
    /// A Hugging Face model folder.
    #[arg(long, default_value = "assets/models/SmolLM2-135M-Instruct")]
    model: PathBuf,
    /// An Alpaca JSON file.
    #[arg(long, default_value = "assets/data/alpaca_en_demo.json")]
    data: PathBuf,
    /// Where burn-train writes its logs and checkpoints, and the model goes at the end.
    #[arg(long, default_value = "runs/learner")]
    output_dir: PathBuf,
    /// Records to train on (the first ones after the seeded shuffle).
    #[arg(long, default_value_t = 64)]
    train_records: usize,
    /// Records held out for validation.
    #[arg(long, default_value_t = 16)]
    eval_records: usize,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 2)]
    grad_accumulation: usize,
    /// Tokens per record at most.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Peak learning rate (linear warmup over a tenth of the steps, then cosine).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Percent of each module type that trains.
    #[arg(long, default_value_t = 25)]
    top_percent: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the checkpoint of this epoch (counted from 1).
    #[arg(long)]
    resume: Option<usize>,
}

fn main() {
    burn_spectrum::remove_temporaries_on_signal();
    if let Err(error) = run(&Cli::parse()) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    let device = Default::default();
    let tokenizer = Tokenizer::from_dir(&cli.model)?;
    let eos = tokenizer.eos_id().ok_or_else(|| Error::Tokenizer {
        path: cli.model.clone(),
        reason: "no EOS token to end the answers with".into(),
    })?;
    let options = EncodeOptions {
        max_len: cli.seq_len,
        train_on_prompt: false,
    };
    let alpaca = read_alpaca(&cli.data)?;
    let mut data = prepare(
        &alpaca,
        &tokenizer,
        eos,
        &options,
        cli.eval_records,
        cli.seed,
    )?;
    data.train.truncate(cli.train_records);

    let method = Method::Spectrum(SpectrumSource::TopPercent(cli.top_percent));
    let prepared = method.load::<B>(&cli.model, &device)?;
    println!(
        "{}: {} of {} parameter tensors train",
        method.name(),
        prepared.trainable.len(),
        burn_spectrum::nn::float_params(&prepared.model).len()
    );

    let train = BatchLoader::new(data.train, cli.batch_size, eos, cli.seed)?;
    let valid = BatchLoader::new(data.eval, cli.batch_size, eos, cli.seed)?.in_order();
    let micro_batches = cli.grad_accumulation.max(1);
    let steps = cli.epochs * (train.num_batches() / micro_batches);
    let schedule = LrSchedule::warmup_cosine(cli.lr, steps / 10, steps);
    let config = TrainConfig {
        schedule,
        seed: cli.seed,
        ..TrainConfig::default()
    };
    let optimizer = SelectiveAdamW::new(&config).with_grad_accumulation(micro_batches);
    let scheduler = MicroBatchSchedule::new(schedule, micro_batches);
    let train = match cli.resume {
        Some(epoch) => train.from_epoch(epoch as u64),
        None => train,
    };

    let mut training = SupervisedTraining::new(&cli.output_dir, Arc::new(train), Arc::new(valid))
        .metrics((LossMetric::<DefaultBackend>::new(), LossPerplexity::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .grads_accumulation(micro_batches)
        .num_epochs(cli.epochs)
        .with_file_checkpointer(DefaultRecorder::new())
        .renderer(ProgressRenderer::new())
        .with_application_logger(None)
        .summary();
    if let Some(epoch) = cli.resume {
        // The Learner restores the model, the optimizer state and the schedule's position.
        training = training.checkpoint(epoch);
    }
    let result = training.launch(Learner::new(prepared.model, optimizer, scheduler));
    let out = cli.output_dir.join("model");
    result.model.export_merged(&cli.model, &out)?;
    println!("saved the fine-tuned model to {}", out.display());
    Ok(())
}
