//! The one place that knows which burn backend toonsmith runs on.
//!
//! Cargo features pick the backend; when several are enabled the fastest wins, in the order
//! `cuda`, `vulkan`, `wgpu`, `tch`, `flex`. Everything else in the library is generic over
//! `B: Backend` and receives the backend from the program's edge through [`Selected`].

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

#[cfg(feature = "cuda")]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Cuda<f32>;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "cuda";
}

#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Vulkan<f32>;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "vulkan";
}

#[cfg(all(feature = "wgpu", not(any(feature = "cuda", feature = "vulkan"))))]
mod selected {
    /// The backend selected by cargo features.
    pub type Selected = burn::backend::Wgpu<f32>;
    /// Name of the selected backend, for logs.
    pub const NAME: &str = "wgpu";
}

#[cfg(all(
    feature = "tch",
    not(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))
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
        feature = "cuda",
        feature = "vulkan",
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
    feature = "cuda",
    feature = "vulkan",
    feature = "wgpu",
    feature = "tch"
)))]
compile_error!("toonsmith needs one backend feature: flex (default), cuda, vulkan, wgpu or tch");

pub use selected::{Selected, NAME};

/// The selected backend with automatic differentiation, for training.
pub type SelectedAutodiff = burn::backend::Autodiff<Selected>;

/// The default device of the selected backend.
pub fn default_device() -> burn::tensor::Device<Selected> {
    Default::default()
}
