//! pycaffe-order preprocessing: resize → center crop → HWC→CHW →
//! channel_swap → raw_scale → mean → input_scale.

use std::borrow::Cow;

use crate::config::{Crop, PreprocessConfig, MAX_TENSOR_BYTES};
use crate::decode::ImageF32;
use crate::error::{Error, Result};
use crate::resize::resize_cow;

/// Turn one decoded image into the C×H×W `f32` buffer for one item of the
/// input blob of shape `input_dims = [n, c, h, w]` (`n` is not used here; see
/// [`stack`]).
///
/// Order, following `caffe.io.Transformer.preprocess` with the resize/crop of
/// open_nsfw's `caffe_preprocess_and_compute` in front of it:
///
/// 0. colour handling as `caffe.io.load_image`: `color = false` turns an RGB
///    image gray (skimage weights), `color = true` tiles a gray image to RGB;
/// 1. bilinear resize to `resize` (default: h×w), see [`crate::resize`];
/// 2. `crop = "center"`: crop h×w at offsets `floor((H-h)/2)`, `floor((W-w)/2)`;
///    `crop = "none"`: resize again to h×w if the size still differs
///    (as `Transformer.preprocess` does);
/// 3. transpose HWC → CHW;
/// 4. `channel_swap`: output channel `i` = input channel `channel_swap[i]`;
/// 5. multiply by `raw_scale`;
/// 6. subtract the mean (in the swapped channel order): `mean` per channel, or
///    the loaded mean image — element-wise if its H×W equals h×w, otherwise its
///    per-channel average (as Caffe's `classification.cpp` and the pycaffe
///    examples' `mean(1).mean(1)` do);
/// 7. multiply by `input_scale`.
pub fn preprocess(
    img: &ImageF32,
    cfg: &PreprocessConfig,
    input_dims: [usize; 4],
) -> Result<Vec<f32>> {
    cfg.validate("model.toml")?;
    let [_n, c, h, w] = input_dims;
    if c != cfg.channels() {
        return Err(Error::Preprocess(format!(
            "input blob has {c} channel(s) but preprocess.color = {} gives {}",
            cfg.color,
            cfg.channels()
        )));
    }
    let tensor_bytes = (c as u64)
        .saturating_mul(h as u64)
        .saturating_mul(w as u64)
        .saturating_mul(4);
    if h == 0 || w == 0 || tensor_bytes > MAX_TENSOR_BYTES {
        return Err(Error::Preprocess(format!(
            "input blob {c}x{h}x{w} is empty or larger than {MAX_TENSOR_BYTES} bytes"
        )));
    }
    if img.height == 0 || img.width == 0 || img.data.len() != img.height * img.width * img.channels
    {
        return Err(Error::Preprocess(format!(
            "image buffer does not match {}x{}x{}",
            img.height, img.width, img.channels
        )));
    }

    // 0. colour handling (as at load time in pycaffe).
    let img = match (cfg.color, img.channels) {
        (true, 3) | (false, 1) => Cow::Borrowed(img),
        (true, 1) => Cow::Owned(img.to_rgb()),
        (false, 3) => Cow::Owned(img.to_gray()),
        (_, other) => {
            return Err(Error::Preprocess(format!(
                "image has {other} channels; expected 1 or 3"
            )))
        }
    };

    // 1. resize.
    let (rh, rw) = match cfg.resize {
        Some([rh, rw]) => (rh as usize, rw as usize),
        None => (h, w),
    };
    let img = resize_cow(img, rh, rw)?;

    // 2. crop.
    let (img, y0, x0) = match cfg.crop {
        Crop::Center => {
            if rh < h || rw < w {
                return Err(Error::Preprocess(format!(
                    "crop = \"center\": resized image {rh}x{rw} is smaller than the input blob {h}x{w}; \
                     set preprocess.resize to at least {h}x{w} or crop = \"none\""
                )));
            }
            (img, (rh - h) / 2, (rw - w) / 2)
        }
        Crop::None => (resize_cow(img, h, w)?, 0, 0),
    };

    // Mean, per output (swapped) channel.
    enum M<'a> {
        None,
        PerChannel(Vec<f32>),
        Full(&'a [f32]),
    }
    let mean = if let Some(mi) = &cfg.mean_image {
        if mi.channels != c {
            return Err(Error::Preprocess(format!(
                "mean image has {} channel(s), the input blob has {c}",
                mi.channels
            )));
        }
        if mi.height == h && mi.width == w {
            M::Full(&mi.data)
        } else {
            M::PerChannel(mi.per_channel())
        }
    } else if let Some(name) = &cfg.mean_file {
        return Err(Error::Preprocess(format!(
            "preprocess.mean_file = {name:?} was not loaded (PreprocessConfig::load_mean_file)"
        )));
    } else if let Some(m) = &cfg.mean {
        M::PerChannel(m.clone())
    } else {
        M::None
    };

    // 3.–7.
    let swap = cfg.effective_channel_swap(c);
    let raw_scale = cfg.raw_scale;
    let input_scale = cfg.input_scale;
    let mut out = Vec::with_capacity(c * h * w);
    for (oc, &ic) in swap.iter().enumerate() {
        for y in 0..h {
            for x in 0..w {
                let mut v = img.at(y0 + y, x0 + x, ic);
                v *= raw_scale;
                v -= match &mean {
                    M::None => 0.0,
                    M::PerChannel(m) => m[oc],
                    M::Full(d) => d[(oc * h + y) * w + x],
                };
                v *= input_scale;
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Concatenate N preprocessed C×H×W buffers into one N×C×H×W batch; all must
/// have the same length.
pub fn stack(items: &[Vec<f32>]) -> Result<Vec<f32>> {
    let len = items.first().map_or(0, Vec::len);
    if let Some((i, v)) = items.iter().enumerate().find(|(_, v)| v.len() != len) {
        return Err(Error::Preprocess(format!(
            "stack: item {i} has {} values, item 0 has {len}",
            v.len()
        )));
    }
    let mut out = Vec::with_capacity(len * items.len());
    for v in items {
        out.extend_from_slice(v);
    }
    Ok(out)
}
