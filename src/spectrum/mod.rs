//! Spectrum: score weight matrices by the signal-to-noise ratio of their singular values,
//! and select the top k% of each module type for training.
//!
//! The math ([`snr`], [`mp_law`]) is free of Burn types; [`SpectrumSelector`] reads weights
//! from a Burn module tree or a checkpoint on disk; [`SnrTable`] and [`Selection`] read and
//! write spectrum.py's files.

pub mod checkpoint;
pub mod mp_law;
pub mod naming;
mod python_json;
pub mod selection;
pub mod selector;
pub mod singular_values;
pub mod snr;
pub mod table;
pub mod weights;

pub use selection::{Selection, UnfrozenPattern};
pub use selector::{ModuleSnr, ScanReport, SpectrumSelector};
pub use snr::{SnrScore, Threshold};
pub use table::{SnrEntry, SnrTable};
