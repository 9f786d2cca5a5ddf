//! The networks of Fig. 10, the VGG feature extractor of Eq. (7) and the FID Inception.

pub mod discriminator;
pub mod generator;
mod generator_official;
mod generator_paper;
pub mod inception;
pub mod layers;
pub mod vgg;

pub use discriminator::{Discriminator, DiscriminatorConfig};
pub use generator::{Generator, GeneratorConfig, OfficialGenerator, PaperGenerator};
pub use vgg::{Vgg, VggConfig, VggInput, VggLayout};
