//! The networks of Fig. 10, the VGG feature extractor of Eq. (7), the FID Inception and the
//! EfficientNet-Lite0 of the second feature distance.

pub mod discriminator;
pub mod efficientnet;
pub mod frozen;
pub mod generator;
mod generator_official;
mod generator_paper;
pub mod inception;
pub mod layers;
pub mod vgg;

pub use discriminator::{Discriminator, DiscriminatorConfig};
pub use generator::{Generator, GeneratorConfig, OfficialGenerator, PaperGenerator};
pub use vgg::{Vgg, VggConfig, VggInput, VggLayout};
