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

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_e` (mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delay (ms) in the v3 we link (`options.c`; the header's comment
/// still says 10): what the option reads unless someone changed it.
const MI_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Keeps the memory that mimalloc frees for reuse instead of returning it to the OS.
///
/// Call it first thing in `main` when mimalloc is the global allocator (as in our binaries,
/// example and benches). The CPU backend allocates a fresh output for every op and frees it
/// soon after; with mimalloc's default purge delay (1 s) pages go back to the OS between the
/// steps' peaks and are faulted and zeroed again. Keeping them made a SmolLM2 training step 27%
/// faster (8.1 s to 5.9 s, `cargo bench --bench train_step`) for 4% more peak memory.
///
/// Leaves a delay set through `MIMALLOC_PURGE_DELAY` as it is, and returns whether it
/// changed the setting. Harmless when mimalloc is not the global allocator.
pub fn retain_freed_memory() -> bool {
    // SAFETY: reading and setting a mimalloc option take no pointers and are thread-safe.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) != MI_DEFAULT_PURGE_DELAY_MS {
            return false;
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_kept_once_asked() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // someone chose a delay: it must stay, which the next test covers
        }
        retain_freed_memory();
        // SAFETY: reading a mimalloc option takes no pointers.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, -1);
        assert!(!retain_freed_memory(), "a delay already set is left alone");
    }
}
