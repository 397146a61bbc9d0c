//! Worker-side image decoding and Caffe input preprocessing, in pure Rust.
//!
//! This crate runs inside the sandboxed worker (see `docs/DESIGN.md`). It
//! turns untrusted bytes — images, `model.toml`, `mean.binaryproto`,
//! `mean.npy`, labels files — into the `f32` input blob Caffe expects,
//! following pycaffe's `caffe.io.load_image` + `caffe.io.Transformer`
//! semantics. Memory-safe decoders (the `image` crate) replace OpenCV to
//! shrink the attack surface; every reader has size caps and returns a
//! [`Error`] naming the file, field or limit instead of panicking.
//!
//! Typical use:
//! ```no_run
//! # fn main() -> caffe_sandbox_preprocess::Result<()> {
//! use caffe_sandbox_preprocess::*;
//! let dir = std::path::Path::new("model");
//! let cfg = ModelConfig::load_from_dir(dir)?;
//! let img = decode_image(&std::fs::read("cat.jpg").unwrap(), &DecodeLimits::default())?;
//! let chw = preprocess(&img, &cfg.preprocess, [1, 3, 224, 224])?;
//! # let probs = vec![0.0f32; 1000];
//! let best = top_k(&probs, 5);
//! # Ok(()) }
//! ```
//!
//! The `model.toml` schema is documented in this crate's `README.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binaryproto;
pub mod config;
pub mod decode;
pub mod error;
pub mod labels;
pub mod load_options;
pub mod mean;
pub mod npy;
pub mod resize;
pub mod topk;
pub mod transform;

pub use binaryproto::{parse_binaryproto, read_binaryproto, BlobProto, BlobShape};
pub use config::{Crop, ModelConfig, ModelSection, PreprocessConfig};
pub use decode::{decode_image, DecodeLimits, ImageF32, RgbImageF32};
pub use error::{Error, Result};
pub use labels::{parse_labels, read_labels};
pub use load_options::LoadOptionsWire;
pub use mean::{load_mean_file, parse_mean, ArrayF32, MeanImage};
pub use npy::{parse_npy, read_npy};
pub use resize::resize_bilinear;
pub use topk::top_k;
pub use transform::{preprocess, stack};
