//! Caffe `BlobProto` (`mean.binaryproto`) reader, decoded with `prost` from a
//! hand-written message definition (no build-time code generation).
//!
//! From `caffe.proto`:
//! ```text
//! message BlobShape { repeated int64 dim = 1 [packed = true]; }
//! message BlobProto {
//!   optional BlobShape shape = 7;
//!   repeated float data = 5 [packed = true];
//!   repeated double double_data = 8 [packed = true];
//!   optional int32 num = 1; optional int32 channels = 2;
//!   optional int32 height = 3; optional int32 width = 4;
//! }
//! ```
//! `diff` / `double_diff` are not declared, so prost skips them without
//! keeping them.

use std::path::Path;

use prost::Message;

use crate::error::{read_capped, Error, Result};
use crate::mean::ArrayF32;

/// Largest `.binaryproto` file accepted.
pub const MAX_BINARYPROTO_BYTES: u64 = 64 * 1024 * 1024;
/// Largest number of elements accepted.
pub const MAX_BLOB_ELEMENTS: u64 = 16 * 1024 * 1024;
/// Largest number of axes accepted in `shape`.
pub const MAX_BLOB_NDIM: usize = 8;

/// Caffe `BlobShape`.
#[derive(Clone, PartialEq, Message)]
pub struct BlobShape {
    /// Dimensions.
    #[prost(int64, repeated, tag = "1")]
    pub dim: Vec<i64>,
}

/// Caffe `BlobProto` (the fields this crate uses).
#[derive(Clone, PartialEq, Message)]
pub struct BlobProto {
    /// Legacy 4-D shape: num.
    #[prost(int32, optional, tag = "1")]
    pub num: Option<i32>,
    /// Legacy 4-D shape: channels.
    #[prost(int32, optional, tag = "2")]
    pub channels: Option<i32>,
    /// Legacy 4-D shape: height.
    #[prost(int32, optional, tag = "3")]
    pub height: Option<i32>,
    /// Legacy 4-D shape: width.
    #[prost(int32, optional, tag = "4")]
    pub width: Option<i32>,
    /// Values (float).
    #[prost(float, repeated, tag = "5")]
    pub data: Vec<f32>,
    /// N-D shape; takes precedence over the legacy fields.
    #[prost(message, optional, tag = "7")]
    pub shape: Option<BlobShape>,
    /// Values (double), used when `data` is empty.
    #[prost(double, repeated, tag = "8")]
    pub double_data: Vec<f64>,
}

impl BlobProto {
    /// A blob with an N-D `shape` and float `data` (e.g. to write a mean file).
    pub fn from_array(shape: &[usize], data: &[f32]) -> Self {
        BlobProto {
            shape: Some(BlobShape {
                dim: shape.iter().map(|&d| d as i64).collect(),
            }),
            data: data.to_vec(),
            ..Default::default()
        }
    }
}

/// Read and parse a `.binaryproto` file, refusing files over [`MAX_BINARYPROTO_BYTES`].
pub fn read_binaryproto(path: &Path) -> Result<ArrayF32> {
    let bytes = read_capped(path, MAX_BINARYPROTO_BYTES)?;
    parse_binaryproto(&bytes, &path.display().to_string())
}

/// Parse `BlobProto` bytes into its shape and values. The shape is `shape.dim`
/// if present, otherwise `[num, channels, height, width]`. `file` is used in
/// error messages.
pub fn parse_binaryproto(bytes: &[u8], file: &str) -> Result<ArrayF32> {
    let err = |reason: String| Error::BinaryProto {
        file: file.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_BINARYPROTO_BYTES {
        return Err(err(format!(
            "larger than the cap of {MAX_BINARYPROTO_BYTES} bytes"
        )));
    }
    let blob = BlobProto::decode(bytes).map_err(|e| err(format!("not a BlobProto: {e}")))?;
    let dims: Vec<i64> = match &blob.shape {
        Some(s) => s.dim.clone(),
        None => vec![
            i64::from(blob.num.unwrap_or(0)),
            i64::from(blob.channels.unwrap_or(0)),
            i64::from(blob.height.unwrap_or(0)),
            i64::from(blob.width.unwrap_or(0)),
        ],
    };
    if dims.len() > MAX_BLOB_NDIM {
        return Err(err(format!(
            "shape has {} axes, more than the cap of {MAX_BLOB_NDIM}",
            dims.len()
        )));
    }
    let mut count: u64 = 1;
    for &d in &dims {
        let d =
            u64::try_from(d).map_err(|_| err(format!("negative dimension in shape {dims:?}")))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_BLOB_ELEMENTS)
            .ok_or_else(|| {
                err(format!(
                    "shape {dims:?} has more than the cap of {MAX_BLOB_ELEMENTS} elements"
                ))
            })?;
    }
    let data: Vec<f32> = if !blob.data.is_empty() {
        blob.data
    } else {
        blob.double_data.iter().map(|&v| v as f32).collect()
    };
    if data.len() as u64 != count {
        return Err(err(format!(
            "shape {dims:?} needs {count} values, the blob has {}",
            data.len()
        )));
    }
    // count <= MAX_BLOB_ELEMENTS and all dims >= 0: each fits in usize.
    let shape = dims.iter().map(|&d| d as usize).collect();
    Ok(ArrayF32 { shape, data })
}
