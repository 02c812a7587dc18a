//! Spectrum: score weight matrices by the signal-to-noise ratio of their singular values,
//! and select the top k% of each module type for training.
//!
//! The math ([`score`], [`quantile`], [`singular_values`], and the Marchenko–Pastur median
//! behind [`Threshold::Mp`]) is free of Burn types; [`SpectrumSelector`] reads weights from a
//! Burn module tree or from safetensors files on disk; [`SnrTable`] and [`Selection`] read and
//! write spectrum.py's files.

mod files;
mod mp_law;
mod naming;
mod python_json;
mod selection;
mod selector;
mod singular_values;
mod snr;
mod symmetric_matrix;
mod table;
mod tridiagonal;
mod tridiagonalize;
mod weights;

pub use files::write_spectrum_files;
pub use selection::{Selection, UnfrozenPattern};
pub use selector::{ModuleSnr, ScanReport, SpectrumSelector};
pub use singular_values::{SvdMethod, singular_values};
pub use snr::{SnrScore, Threshold, quantile, score};
pub use table::{SnrEntry, SnrTable};
