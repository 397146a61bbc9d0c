//! What the worker does with an encoded image: decode (pure-Rust decoders, bounded) and preprocess in
//! pycaffe Transformer order for the net's input blob. Shared by the sandboxed worker and the in-process
//! baseline so both compute exactly the same input tensor.
use caffe_sandbox_preprocess::{decode_image, preprocess, DecodeLimits, PreprocessConfig};

/// Decodes `bytes` and returns the CHW tensor for an input blob of shape `[n, c, h, w]` (one image).
pub fn image_to_tensor(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    input_dims: &[usize],
    limits: &DecodeLimits,
) -> Result<Vec<f32>, caffe_sandbox_preprocess::Error> {
    let dims: [usize; 4] = input_dims.try_into().map_err(|_| {
        caffe_sandbox_preprocess::Error::Preprocess(format!(
            "image inputs need a 4-axis input blob (N×C×H×W), this one has {} axes",
            input_dims.len()
        ))
    })?;
    let img = decode_image(bytes, limits)?;
    preprocess(&img, cfg, dims)
}
