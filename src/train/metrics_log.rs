//! `metrics.jsonl`: one JSON line per optimizer step, appended as training goes, so that a run
//! killed at any moment keeps what it did; a resumed run first cuts it back to its checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::step::StepMetrics;
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// The step, from 0.
    pub step: usize,
    /// Mean loss of the step's micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate the step used.
    pub lr: f64,
    /// Target tokens the loss was computed on.
    pub tokens: usize,
    /// Wall time of the step, in seconds.
    pub seconds: f64,
}

impl MetricsLine {
    /// A step's metrics and its wall time.
    pub fn new(metrics: &StepMetrics, seconds: f64) -> Self {
        MetricsLine {
            step: metrics.step,
            loss: metrics.loss,
            grad_norm: metrics.grad_norm,
            lr: metrics.lr,
            tokens: metrics.tokens,
            seconds,
        }
    }
}

/// An open `metrics.jsonl`, appended to line by line.
pub(super) struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` keeping the lines of the steps before `keep_steps` (a resumed run) and
    /// dropping the rest, including a line cut short by a kill.
    pub(super) fn open(path: &Path, keep_steps: usize) -> Result<(Self, Vec<MetricsLine>)> {
        let kept: Vec<MetricsLine> = read_metrics(path)?
            .into_iter()
            .filter(|line| line.step < keep_steps)
            .collect();
        let text: String = kept.iter().map(|line| json_line(line) + "\n").collect();
        write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let log = MetricsLog {
            path: path.to_path_buf(),
            file,
        };
        Ok((log, kept))
    }

    /// Appends one line and flushes it to the OS.
    pub(super) fn append(&mut self, line: &MetricsLine) -> Result<()> {
        writeln!(self.file, "{}", json_line(line)).map_err(|e| Error::io(&self.path, e))
    }
}

/// The complete lines of a `metrics.jsonl` (none if there is no file).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut lines = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        // A line cut short by a kill does not parse: it and anything after it are dropped.
        match serde_json::from_str(&line) {
            Ok(parsed) => lines.push(parsed),
            Err(_) => break,
        }
    }
    Ok(lines)
}

fn json_line(line: &MetricsLine) -> String {
    serde_json::to_string(line).expect("numbers and integers serialize")
}
