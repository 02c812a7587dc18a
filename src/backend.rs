//! The backend the binaries and examples run on, chosen by Cargo feature:
//! `cuda`, else `wgpu`, else `flex` (the CPU default).

use crate::error::{Error, Result};

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

    /// Checks that the backend can run here, before any work starts: it must be compiled in
    /// ([`Error::BackendMissing`]), and wgpu and CUDA must find a device that computes a first
    /// small sum ([`Error::BackendUnusable`]; Burn panics on the first use of a GPU backend
    /// that has no device, which this turns into a message).
    pub fn check_usable(self) -> Result<()> {
        self.check_compiled()?;
        let Some((first_sum, advice)) = self.device_check() else {
            return Ok(());
        };
        match quietly(first_sum) {
            Ok(Some(3.0)) => Ok(()),
            Ok(answer) => Err(Error::BackendUnusable {
                backend: self.feature(),
                reason: format!("its device computed 1 + 2 = {answer:?}"),
            }),
            Err(failure) => Err(Error::BackendUnusable {
                backend: self.feature(),
                reason: format!("it found no device ({failure}); {advice}"),
            }),
        }
    }

    /// For a GPU backend compiled in: its first computation and what to do when it fails.
    fn device_check(self) -> Option<(FirstSum, &'static str)> {
        match self {
            #[cfg(feature = "wgpu")]
            BackendName::Wgpu => Some((
                first_sum::<burn::backend::Wgpu>,
                "a Vulkan, Metal or DX12 driver is needed (on Linux without a GPU, Mesa's \
                 lavapipe: `apt-get install mesa-vulkan-drivers libvulkan1`), or use --backend \
                 flex",
            )),
            #[cfg(feature = "cuda")]
            BackendName::Cuda => Some((
                first_sum::<burn::backend::Cuda>,
                "an NVIDIA GPU with its driver is needed, or use --backend wgpu or flex",
            )),
            _ => None,
        }
    }

    /// [`Error::BackendMissing`] unless this build has the backend (no device is touched).
    pub fn check_compiled(self) -> Result<()> {
        if self.is_compiled() {
            Ok(())
        } else {
            Err(Error::BackendMissing {
                backend: self.feature(),
            })
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

/// A backend's first computation: `1 + 2` read back, `None` when it cannot be read.
type FirstSum = fn() -> Option<f32>;

/// `1 + 2` on the default device of `B`, read back to the host.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn first_sum<B: burn::tensor::backend::Backend>() -> Option<f32> {
    let device = B::Device::default();
    let values = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
    values
        .sum()
        .into_data()
        .to_vec::<f32>()
        .ok()?
        .first()
        .copied()
}

/// Runs `f`, turning a panic into a message without printing it: the first panic's, which is
/// the cause when a backend's own thread panicked and `f` only saw the channel close.
fn quietly<T>(f: fn() -> T) -> std::result::Result<T, String> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = std::panic::take_hook();
    let record = Arc::clone(&first);
    std::panic::set_hook(Box::new(move |info| {
        let mut first = record.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| panic_text(info.payload()));
    }));
    let outcome = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    outcome.map_err(|payload| {
        let first = first.lock().unwrap_or_else(|e| e.into_inner()).take();
        first.unwrap_or_else(|| panic_text(payload.as_ref()))
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
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
