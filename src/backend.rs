//! The backend the binaries and examples run on, chosen by Cargo feature:
//! `cuda`, else `wgpu`, else `flex` (the CPU default).

#[cfg(feature = "cuda")]
/// The backend chosen by the enabled features (`cuda` here).
pub type DefaultBackend = burn::backend::Cuda;

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
/// The backend chosen by the enabled features (`wgpu` here).
pub type DefaultBackend = burn::backend::Wgpu;

#[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
/// The backend chosen by the enabled features (`flex` here).
pub type DefaultBackend = burn::backend::Flex;

/// The backend's name, for reports.
pub const BACKEND_NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else {
    "flex (CPU)"
};
