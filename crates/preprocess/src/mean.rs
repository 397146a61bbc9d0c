//! Mean images (`mean.binaryproto` / `mean.npy`).

use std::path::Path;

use crate::binaryproto::{parse_binaryproto, MAX_BINARYPROTO_BYTES};
use crate::error::{read_capped, Error, Result};
use crate::npy::{is_npy, parse_npy, MAX_NPY_BYTES};

/// An N-D float array in C order, as read from `.npy` or `.binaryproto`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayF32 {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub data: Vec<f32>,
}

/// A mean image C×H×W in the network's channel order (after `channel_swap`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeanImage {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `channels * height * width` values, CHW order.
    pub data: Vec<f32>,
}

impl MeanImage {
    /// From an array of shape `[C]` (per-channel, becomes C×1×1), `[C, H, W]`
    /// or `[1, C, H, W]`. Values must be finite. `file` is used in messages.
    pub fn from_array(a: ArrayF32, file: &str) -> Result<Self> {
        let err = |reason: String| Error::Preprocess(format!("{file}: mean: {reason}"));
        let (c, h, w) = match a.shape.as_slice() {
            [c] => (*c, 1, 1),
            [c, h, w] | [1, c, h, w] => (*c, *h, *w),
            s => return Err(err(format!("shape {s:?} is not C, C×H×W or 1×C×H×W"))),
        };
        if c == 0 || h == 0 || w == 0 || a.data.len() != c * h * w {
            return Err(err(format!("shape {:?} is empty or inconsistent", a.shape)));
        }
        if a.data.iter().any(|v| !v.is_finite()) {
            return Err(err("contains NaN or infinite values".into()));
        }
        Ok(MeanImage {
            channels: c,
            height: h,
            width: w,
            data: a.data,
        })
    }

    /// Per-channel average (accumulated in `f64`).
    pub fn per_channel(&self) -> Vec<f32> {
        let plane = self.height * self.width;
        self.data
            .chunks_exact(plane.max(1))
            .map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
            .collect()
    }
}

/// Load a mean image; the format is sniffed (`.npy` magic string, otherwise
/// `BlobProto`).
pub fn load_mean_file(path: &Path) -> Result<MeanImage> {
    let file = path.display().to_string();
    let bytes = read_capped(path, MAX_NPY_BYTES.max(MAX_BINARYPROTO_BYTES))?;
    parse_mean(&bytes, &file)
}

/// Parse mean-file bytes (`.npy` or `BlobProto`, sniffed).
pub fn parse_mean(bytes: &[u8], file: &str) -> Result<MeanImage> {
    let a = if is_npy(bytes) {
        parse_npy(bytes, file)?
    } else {
        parse_binaryproto(bytes, file)?
    };
    MeanImage::from_array(a, file)
}
