//! The comparison report of several fine-tuning runs on the same model and data:
//! `report.json`, `report.md`, `loss.png` (training loss per method) and `snr.png` (the
//! Spectrum scan as a picture).

mod markdown;
mod plots;

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::io::{FileSet, json_text};
use crate::spectrum::{ScanReport, Selection};
use crate::train::{MetricsLine, RunSummary};

/// How the compared runs were made: the `config` of `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportConfig {
    /// The model folder.
    pub model: String,
    /// The Alpaca file.
    pub data: String,
    /// Optimizer steps per method.
    pub steps: usize,
    /// Records per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Tokens per record at most.
    pub seq_len: usize,
    /// Held-out records.
    pub eval_samples: usize,
    /// Spectrum's k.
    pub top_percent: u32,
    /// The backend's name.
    pub backend: String,
    /// The run seed.
    pub seed: u64,
    /// Wall time of the whole comparison, in seconds.
    pub wall_seconds: f64,
    /// The machine, in words (cores).
    pub machine: String,
}

/// One method's run: its summary, or why it failed; and its per-step metrics.
#[derive(Clone, Debug)]
pub struct MethodRun {
    /// The method's name (`spectrum-25`, ...).
    pub method: String,
    /// Its peak learning rate.
    pub lr: f64,
    /// The finished run's summary, or the error that stopped it.
    pub outcome: std::result::Result<RunSummary, String>,
    /// `metrics.jsonl` as far as it got.
    pub metrics: Vec<MetricsLine>,
}

/// Writes `report.json`, `report.md`, `loss.png` and, with a scan, `snr.png` into `dir`.
pub fn write_report(
    dir: &Path,
    config: &ReportConfig,
    runs: &[MethodRun],
    scan: Option<(&ScanReport, &Selection)>,
) -> Result<()> {
    let methods: Vec<serde_json::Value> = runs.iter().map(method_json).collect();
    let path = dir.join("report.json");
    let value = json!({ "config": config, "methods": methods });
    let text = json_text(&value).map_err(|e| Error::io(&path, e))?;
    // One set: the tables and pictures of the same runs, or the previous ones.
    let mut set = FileSet::new(dir);
    set.add_bytes("report.json", text)
        .add_bytes("report.md", markdown::report(config, runs))
        .add("loss.png", |path| {
            plots::loss_png(path, runs).map_err(std::io::Error::other)
        });
    if let Some((scan, selection)) = scan {
        set.add("snr.png", move |path| {
            plots::snr_png(path, scan, selection).map_err(std::io::Error::other)
        });
    }
    set.write().map_err(|(path, e)| Error::io(path, e))?;
    Ok(())
}

fn method_json(run: &MethodRun) -> serde_json::Value {
    match &run.outcome {
        Ok(summary) => serde_json::to_value(summary).expect("a summary serializes"),
        Err(reason) => json!({ "method": run.method, "lr": run.lr, "failed": reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(method: &str, seconds_per_step: f64, eval_after: f64) -> RunSummary {
        RunSummary {
            method: method.into(),
            trainable_params: 10,
            total_params: 100,
            steps: 2,
            tokens: 40,
            seconds_per_step,
            tokens_per_second: 10.0,
            peak_rss_mib: Some(100.0),
            weight_bytes: 400,
            grad_bytes: 40,
            optimizer_bytes: 80,
            eval_loss_before: Some(2.0),
            eval_loss_after: Some(eval_after),
            lr: 1e-4,
            prompt: Some("### Instruction:\nSay hi.".into()),
            answer: Some("Hi.".into()),
        }
    }

    fn line(step: usize, loss: f64) -> MetricsLine {
        MetricsLine {
            step,
            loss,
            grad_norm: 1.0,
            lr: 1e-4,
            tokens: 20,
            seconds: 2.0,
        }
    }

    #[test]
    fn a_failed_method_is_marked_and_the_others_are_compared_to_full() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [
            MethodRun {
                method: "full".into(),
                lr: 1e-4,
                outcome: Ok(summary("full", 4.0, 1.5)),
                metrics: vec![line(0, 2.0), line(1, 1.8)],
            },
            MethodRun {
                method: "lora".into(),
                lr: 2e-4,
                outcome: Ok(summary("lora", 2.0, 1.75)),
                metrics: vec![line(0, 2.0), line(1, 1.9)],
            },
            MethodRun {
                method: "qlora".into(),
                lr: 2e-4,
                outcome: Err("the loss is NaN at step 1: training stopped".into()),
                metrics: vec![line(0, 2.0)],
            },
        ];
        let config = ReportConfig {
            model: "m".into(),
            data: "d".into(),
            steps: 2,
            batch_size: 1,
            grad_accum: 1,
            seq_len: 8,
            eval_samples: 1,
            top_percent: 25,
            backend: "flex".into(),
            seed: 0,
            wall_seconds: 1.0,
            machine: "test".into(),
        };
        write_report(dir.path(), &config, &runs, None).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains("| qlora | 2.0e-4 | failed: the loss is NaN at step 1"),
            "{md}"
        );
        // LoRA's row: half full's step time, and its eval loss 0.25 above full's.
        let lora = md.lines().find(|l| l.starts_with("| lora |")).unwrap();
        assert!(
            lora.contains("2.00 (0.50x)") && lora.contains("+0.2500"),
            "{lora}"
        );
        assert!(md.contains("- **lora**: Hi."), "{md}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(
            json["methods"][2]["failed"],
            "the loss is NaN at step 1: training stopped"
        );
        assert_eq!(json["methods"][1]["eval_loss_after"], 1.75);
        let png = std::fs::read(dir.path().join("loss.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        assert!(!dir.path().join("snr.png").exists());
    }
}
