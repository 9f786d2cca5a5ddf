//! Unpaired training data: image files to tensors, and the seeded photo/cartoon streams.

pub mod image_io;
pub mod unpaired;

pub use image_io::{load_dynamic, load_rgb, scan_images, tensor_to_images};
pub use unpaired::{BatchOptions, ImageStream, UnpairedBatch, UnpairedData};
