//! A progress bar for burn-train (its plain renderer prints a debug line per iteration; its
//! dashboard is the `tui` feature).

use std::collections::HashMap;

use burn::train::LearnerSummary;
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::{ProgressBar, ProgressStyle};

/// One bar per epoch and split on stderr, with the latest value of each metric (hidden when
/// stderr is not a terminal, as indicatif does); the metrics per epoch are printed at the end
/// (burn-train's own summary prints the whole module tree first).
#[derive(Default)]
pub struct ProgressRenderer {
    names: HashMap<MetricId, String>,
    /// The latest formatted value per metric name, train then valid.
    latest: [Vec<(String, String)>; 2],
    bar: Option<(usize, ProgressBar)>,
}

impl ProgressRenderer {
    /// A renderer with no bar drawn yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&mut self, split: usize, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let name = self
            .names
            .get(&entry.metric_id)
            .cloned()
            .unwrap_or_default();
        let latest = &mut self.latest[split];
        let value = entry.serialized_entry.formatted;
        match latest.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => latest.push((name, value)),
        }
    }

    fn render(&mut self, split: usize, item: TrainingProgress) {
        let Some(progress) = item.progress else {
            return;
        };
        let epoch = item.global_progress.items_processed;
        let key = epoch * 2 + split;
        let stale = self.bar.as_ref().is_none_or(|(k, _)| *k != key);
        if stale {
            if let Some((_, bar)) = self.bar.take() {
                bar.finish();
            }
            let bar = ProgressBar::new(progress.items_total as u64);
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> ");
            bar.set_style(style);
            let split_name = ["train", "valid"][split];
            bar.set_prefix(format!(
                "epoch {epoch}/{} {split_name}",
                item.global_progress.items_total
            ));
            self.bar = Some((key, bar));
        }
        let (_, bar) = self.bar.as_ref().expect("a bar was just made");
        bar.set_position(progress.items_processed as u64);
        let message: Vec<String> = self.latest[split]
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        bar.set_message(message.join("  "));
    }
}

impl MetricsRendererTraining for ProgressRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.update(0, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.update(1, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.render(0, item);
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.render(1, item);
    }

    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish();
        }
        if let Some(summary) = summary {
            eprint!("{}", metrics_table(&summary));
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for ProgressRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.update(1, state);
    }

    fn render_test(&mut self, item: EvaluationProgress, _indicators: Vec<ProgressType>) {
        self.render(1, TrainingProgress::from(&item));
    }
}

impl MetricsRenderer for ProgressRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

/// Each metric's epoch means, one line per split and metric.
fn metrics_table(summary: &LearnerSummary) -> String {
    let mut table = String::new();
    for (split, metrics) in [
        ("train", &summary.metrics.train),
        ("valid", &summary.metrics.valid),
    ] {
        for metric in metrics.iter() {
            let values: Vec<String> = metric
                .entries
                .iter()
                .map(|e| format!("epoch {}: {:.4}", e.step, e.value))
                .collect();
            table.push_str(&format!("{split} {}: {}\n", metric.name, values.join(", ")));
        }
    }
    table
}
