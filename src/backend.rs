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

/// A backend by its command-line name; only those compiled in (Cargo features) can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// Burn's pure-Rust CPU backend (feature `flex`, the default).
    Flex,
    /// WebGPU through wgpu: Vulkan, Metal, DX12 (feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

impl BackendName {
    /// The Cargo feature that compiles the backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendName::Flex => "flex",
            BackendName::Wgpu => "wgpu",
            BackendName::Cuda => "cuda",
        }
    }

    /// Whether this build has the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendName::Flex => cfg!(feature = "flex"),
            BackendName::Wgpu => cfg!(feature = "wgpu"),
            BackendName::Cuda => cfg!(feature = "cuda"),
        }
    }
}
