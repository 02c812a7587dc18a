//! The report's two pictures, drawn with plotters on a bitmap with an embedded font (no
//! system font needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::MethodRun;
use crate::error::{Error, Result};
use crate::spectrum::{ScanReport, Selection};

/// One colour per method, in report order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Weight of the newest loss in the plotted moving average.
const SMOOTHING: f64 = 0.3;

/// Training loss per step (exponential moving average) for every method, with the eval losses
/// before (step 0) and after (last step) as circles.
pub(super) fn loss_png(path: &Path, runs: &[MethodRun]) -> Result<()> {
    let steps = runs
        .iter()
        .map(|r| r.metrics.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let losses = runs.iter().flat_map(|r| {
        let evals = r
            .outcome
            .iter()
            .flat_map(|s| [s.eval_loss_before, s.eval_loss_after]);
        r.metrics.iter().map(|m| m.loss).chain(evals.flatten())
    });
    let (low, high) = losses.fold((f64::MAX, f64::MIN), |(lo, hi), l| (lo.min(l), hi.max(l)));
    let (low, high) = if low < high { (low, high) } else { (0.0, 1.0) };
    draw(path, (900, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Training loss (moving average); circles: held-out loss",
                font(20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..steps as f64, (low * 0.95)..(high * 1.02))?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("loss")
            .label_style(font(14))
            .draw()?;
        for (run, color) in runs.iter().zip(PALETTE.iter().cycle()) {
            let color = *color;
            let smoothed = smooth(run.metrics.iter().map(|m| m.loss));
            let points = smoothed
                .into_iter()
                .enumerate()
                .map(|(i, l)| ((i + 1) as f64, l));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(run.method.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
            if let Ok(summary) = &run.outcome {
                let marks = [
                    (0.0, summary.eval_loss_before),
                    (steps as f64, summary.eval_loss_after),
                ];
                let marks = marks.into_iter().filter_map(|(x, l)| Some((x, l?)));
                chart.draw_series(marks.map(|p| Circle::new(p, 5, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(font(14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Layers (rows) by module types (columns); the colour is the weight's SNR rank within its
/// type (yellow highest), and a dot marks the weights the selection trains.
pub(super) fn snr_png(path: &Path, scan: &ScanReport, selection: &Selection) -> Result<()> {
    let mut types: Vec<&str> = Vec::new();
    let mut cells = Vec::new();
    for module in &scan.modules {
        let Some(layer) = layer_of(&module.name) else {
            continue;
        };
        if !types.contains(&module.module_type.as_str()) {
            types.push(&module.module_type);
        }
        let column = types
            .iter()
            .position(|t| *t == module.module_type)
            .unwrap_or(0);
        let selected = selection.is_selected(&module.param_name);
        cells.push((layer, column, f64::from(module.score.snr), selected));
    }
    let layers = cells.iter().map(|c| c.0 + 1).max().unwrap_or(1);
    let rank = rank_within_columns(&cells, types.len());
    draw(path, (900, 40 + 22 * layers as u32 + 90), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "SNR rank within each module type (yellow high); dots: trained",
                font(20),
            )
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..types.len() as f64, 0f64..layers as f64)?;
        let names = types.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(types.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                let centre = (x - x.floor() - 0.5).abs() < 0.01;
                match names.get(i) {
                    Some(name) if centre => name.rsplit('.').next().unwrap_or(name).to_string(),
                    _ => String::new(),
                }
            })
            .y_labels(layers.min(16))
            .y_label_formatter(&|y| format!("{}", y.floor() as usize))
            .y_desc("layer")
            .label_style(font(13))
            .draw()?;
        let boxes = cells.iter().zip(&rank).map(|(&(layer, column, _, _), &r)| {
            let (x, y) = (column as f64, layer as f64);
            Rectangle::new([(x, y), (x + 1.0, y + 1.0)], heat(r).filled())
        });
        chart.draw_series(boxes)?;
        let dots = cells.iter().filter(|c| c.3).map(|&(layer, column, _, _)| {
            Circle::new((column as f64 + 0.5, layer as f64 + 0.5), 4, BLACK.filled())
        });
        chart.draw_series(dots)?;
        Ok(())
    })
}

/// Renders into a temporary PNG beside `path` and renames it over `path`.
fn draw(
    path: &Path,
    size: (u32, u32),
    plot: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> PlotResult,
) -> Result<()> {
    register_font();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.png"));
    let failed = |reason: String| Error::Plot {
        path: path.to_path_buf(),
        reason,
    };
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
        plot(&root).map_err(|e| failed(e.to_string()))?;
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// plotters looks fonts up by family name; ours comes from the crate, not the system.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let bytes = epaint_default_fonts::UBUNTU_LIGHT;
        // The bytes are a valid TrueType font shipped by the crate; if they were not, text
        // would be missing from the pictures, not the pictures themselves.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().into()
}

/// Exponential moving average of `values`.
fn smooth(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut average = None;
    values
        .map(|v| {
            let next = average.map_or(v, |a: f64| a + SMOOTHING * (v - a));
            average = Some(next);
            next
        })
        .collect()
}

/// The layer index of `model.layers.N....`: the first all-digit path component.
fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|part| part.parse().ok())
}

/// Each cell's SNR rank within its column, 0 (lowest) to 1 (highest): the share of the
/// column's other cells with a lower SNR, so that ties (the norms' equal scores) share a rank.
fn rank_within_columns(cells: &[(usize, usize, f64, bool)], columns: usize) -> Vec<f64> {
    let mut rank = vec![0.0; cells.len()];
    for column in 0..columns {
        let members: Vec<usize> = (0..cells.len()).filter(|&i| cells[i].1 == column).collect();
        let others = members.len().saturating_sub(1).max(1) as f64;
        for &i in &members {
            let below = members.iter().filter(|&&j| cells[j].2 < cells[i].2).count();
            rank[i] = below as f64 / others;
        }
    }
    rank
}

/// Dark blue (0) through teal to yellow (1).
fn heat(t: f64) -> RGBColor {
    let stops = [
        (68.0, 1.0, 84.0),
        (33.0, 145.0, 140.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * 2.0;
    let (i, f) = if t >= 2.0 {
        (1, 1.0)
    } else {
        (t as usize, t.fract())
    };
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
