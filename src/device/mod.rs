//! The one place that knows which burn backend toonsmith runs on.
//!
//! Cargo features pick the backend; when several are enabled the fastest wins, in the order
//! `cuda`, `vulkan`, `wgpu`, `tch`, `flex`. Everything else in the library is generic over
//! `B: Backend` and receives the backend from the program's edge through [`Selected`].

pub mod faults;

#[cfg(feature = "flex")]
pub use burn::backend::flex::FlexDevice;
#[cfg(feature = "flex")]
pub use burn::backend::Flex;

/// The pure-Rust CPU backend (SIMD, threads); always available with the default `flex` feature.
#[cfg(feature = "flex")]
pub type CpuBackend = Flex<f32>;

/// The CPU device.
#[cfg(feature = "flex")]
pub const CPU: FlexDevice = FlexDevice;

#[cfg(feature = "cuda-backend")]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Cuda<f32>;
    /// Name of the selected backend, for logs.
    #[cfg(feature = "cuda")]
    pub const NAME: &str = "cuda";
    /// Name of the selected backend, for logs (built with `cuda-untuned`: no autotuning).
    #[cfg(not(feature = "cuda"))]
    pub const NAME: &str = "cuda-untuned";
}

#[cfg(all(feature = "vulkan-backend", not(feature = "cuda-backend")))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Vulkan<f32>;
    /// Name of the selected backend, for logs.
    #[cfg(feature = "vulkan")]
    pub const NAME: &str = "vulkan";
    /// Name of the selected backend, for logs (built with `vulkan-untuned`: no autotuning).
    #[cfg(not(feature = "vulkan"))]
    pub const NAME: &str = "vulkan-untuned";
}

#[cfg(all(
    feature = "wgpu",
    not(any(feature = "cuda-backend", feature = "vulkan-backend"))
))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Wgpu<f32>;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "wgpu";
}

#[cfg(all(
    feature = "tch",
    not(any(feature = "cuda-backend", feature = "vulkan-backend", feature = "wgpu"))
))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::LibTorch<f32>;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "tch";
}

#[cfg(all(
    feature = "flex",
    not(any(
        feature = "cuda-backend",
        feature = "vulkan-backend",
        feature = "wgpu",
        feature = "tch"
    ))
))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = super::CpuBackend;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "flex (CPU)";
}

#[cfg(not(any(
    feature = "flex",
    feature = "cuda-backend",
    feature = "vulkan-backend",
    feature = "wgpu",
    feature = "tch"
)))]
compile_error!("toonsmith needs one backend feature: flex (default), cuda, vulkan, wgpu or tch");

pub use selected::{Selected, NAME};

/// Whether `B` is the plain CPU backend: its tensors live in host memory, and toonsmith's own
/// CPU kernels may replace its ops (`kernels`).
pub fn is_cpu_backend<B: burn::tensor::backend::Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<CpuBackend>()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

/// The selected backend with automatic differentiation, for training.
pub type SelectedAutodiff = burn::backend::Autodiff<Selected>;

/// The default device of the selected backend.
pub fn default_device() -> burn::tensor::Device<Selected> {
    Default::default()
}

/// The largest single buffer the selected backend's device gives, in bytes: CubeCL's page
/// limit (through wgpu, the device's largest storage binding, 128 MiB on Mesa's lavapipe; on
/// CUDA a quarter of the card's memory). A tensor larger than it cannot be allocated. `None` on
/// the CPU backends, whose tensors are host memory.
pub fn largest_buffer(device: &burn::tensor::Device<Selected>) -> Option<u64> {
    #[cfg(feature = "cube-ops")]
    {
        use cubecl::Runtime as _;
        let client = crate::kernels::cube_op::Runtime::client(device);
        Some(client.properties().memory.max_page_size)
    }
    #[cfg(not(feature = "cube-ops"))]
    {
        let _ = device;
        None
    }
}

/// Checks that the selected backend can start on this machine: on CUDA, that the driver
/// (`libcuda.so`) and NVRTC load, which burn's backend would otherwise find missing by
/// panicking in its device thread. Nothing to check on the other backends.
pub fn check_available() -> crate::error::Result<()> {
    #[cfg(feature = "cuda-backend")]
    if let Some(missing) = missing_cuda_library() {
        return Err(crate::error::Error::MissingTool {
            tool: missing.into(),
            hint: "this toonsmith was built with --features cuda; install the NVIDIA driver \
                   and CUDA toolkit (or add their library folders to LD_LIBRARY_PATH), or build \
                   without --features cuda to run on the CPU"
                .into(),
        });
    }
    Ok(())
}

/// The first of the CUDA driver and NVRTC that does not load, in words.
#[cfg(feature = "cuda-backend")]
fn missing_cuda_library() -> Option<&'static str> {
    // SAFETY: these only try to open the libraries (dlopen) and close them again.
    let (driver, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    match (driver, nvrtc) {
        (true, true) => None,
        (false, _) => Some("the CUDA driver (libcuda.so)"),
        (true, false) => Some("NVRTC (libnvrtc.so, CUDA's run-time compiler)"),
    }
}

/// Keeps CubeCL's compiled kernels between runs on the GPU backends; call first in `main`,
/// before any device is used (CubeCL's configuration can be set once, before it is read).
///
/// CubeCL keeps its autotune results between processes by default (in the Cargo workspace's
/// `target/`, else the user cache folder, `~/.cache/cubecl` on Linux) but compiles every kernel
/// it runs again in each process (NVRTC on CUDA). This turns on its compilation cache (PTX on
/// CUDA, SPIR-V on Vulkan) in the same folder, so a second `toonsmith` run starts warm. A
/// `cubecl.toml` in the working folder or above that names a compilation cache wins. Measured
/// on Vulkan (lavapipe, 64x64 forward): first call 22.6 s cold, 1.13 s with the autotune
/// cache alone, 0.74-0.88 s with both (docs/performance.md "GPU").
#[cfg(any(feature = "cuda-backend", feature = "wgpu", feature = "vulkan-backend"))]
pub fn keep_compiled_kernels() {
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if config.compilation.cache.is_none() {
        config.compilation.cache = Some(config.autotune.cache.clone());
    }
    CubeClRuntimeConfig::set(config);
}

/// Nothing to keep on the CPU backends.
#[cfg(not(any(feature = "cuda-backend", feature = "wgpu", feature = "vulkan-backend")))]
pub fn keep_compiled_kernels() {}
