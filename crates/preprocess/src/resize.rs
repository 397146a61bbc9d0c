//! Bilinear resize with Pillow's `Image.resize(..., Image.BILINEAR)` convention.
//!
//! Pillow (>= 2.7) resamples separably (horizontal pass, then vertical) with
//! a triangle filter whose support is scaled by the downscale factor, so
//! downscaling is antialiased; upscaling is ordinary half-pixel-centre
//! bilinear interpolation with edge clamping (identical to OpenCV
//! `INTER_LINEAR` and to skimage `resize(order=1, mode='edge',
//! anti_aliasing=False)` when upscaling). The coefficients below are Pillow's
//! `precompute_coeffs` computed in `f64`, applied in `f64` and stored as
//! `f32`, i.e. what Pillow does for a mode `"F"` (32-bit float) image. For
//! 8-bit images Pillow additionally rounds to integers after each pass
//! (differences up to about 1/255 per pass).
//!
//! Differences from pycaffe's `caffe.io.resize_image` (skimage
//! `resize(order=1, mode='constant')`): skimage blends with 0 beyond the
//! border and, in skimage >= 0.19, smooths with a Gaussian (not a triangle)
//! before downscaling; results differ mostly at the borders and on downscale.

use std::borrow::Cow;

use crate::config::MAX_TENSOR_BYTES;
use crate::decode::ImageF32;
use crate::error::{Error, Result};

/// Per-output-pixel taps: first input index and normalised weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f64>>,
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` for the whole input range.
fn coeffs(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support is 1.0
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C casts truncate toward zero; clamp as Pillow does.
        let xmin = ((center - support + 0.5).trunc().max(0.0)) as usize;
        let xmax = ((center + support + 0.5).trunc().max(0.0) as usize).min(in_size);
        let xmax = xmax.max(xmin + 1).min(in_size);
        let xmin = xmin.min(xmax - 1);
        let mut k: Vec<f64> = (xmin..xmax)
            .map(|x| bilinear((x as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|w| *w /= ww);
        } else {
            // Cannot happen for valid sizes; fall back to nearest.
            k.iter_mut().for_each(|w| *w = 0.0);
            k[0] = 1.0;
        }
        start.push(xmin);
        weights.push(k);
    }
    Taps { start, weights }
}

/// Resize `img` to `out_h`×`out_w`. Returns a clone when the size does not
/// change (as Pillow does). An error if either image is empty, the output
/// would exceed [`MAX_TENSOR_BYTES`], or `img.data` does not match its
/// dimensions.
pub fn resize_bilinear(img: &ImageF32, out_h: usize, out_w: usize) -> Result<ImageF32> {
    resize_cow(Cow::Borrowed(img), out_h, out_w).map(Cow::into_owned)
}

fn check(img: &ImageF32, out_h: usize, out_w: usize) -> Result<()> {
    let c = img.channels;
    let consistent = img
        .height
        .checked_mul(img.width)
        .and_then(|v| v.checked_mul(c))
        .is_some_and(|n| n == img.data.len());
    let out_bytes = (out_h as u64)
        .saturating_mul(out_w as u64)
        .saturating_mul(c as u64)
        .saturating_mul(4);
    if !consistent
        || img.data.is_empty()
        || out_h == 0
        || out_w == 0
        || out_bytes > MAX_TENSOR_BYTES
    {
        return Err(Error::Preprocess(format!(
            "resize: cannot resize a {}x{}x{c} image ({} values) to {out_h}x{out_w} (empty, inconsistent, or over {MAX_TENSOR_BYTES} bytes)",
            img.height,
            img.width,
            img.data.len()
        )));
    }
    Ok(())
}

/// Resize without copying when nothing changes.
pub(crate) fn resize_cow(
    img: Cow<'_, ImageF32>,
    out_h: usize,
    out_w: usize,
) -> Result<Cow<'_, ImageF32>> {
    check(&img, out_h, out_w)?;
    let mut cur = img;
    if out_w != cur.width {
        cur = Cow::Owned(horizontal(&cur, out_w));
    }
    if out_h != cur.height {
        cur = Cow::Owned(vertical(&cur, out_h));
    }
    Ok(cur)
}

fn horizontal(src: &ImageF32, out_w: usize) -> ImageF32 {
    let c = src.channels;
    let taps = coeffs(src.width, out_w);
    let mut data = vec![0f32; src.height * out_w * c];
    for y in 0..src.height {
        for (xx, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
            for ch in 0..c {
                let acc: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(i, w)| f64::from(src.at(y, s + i, ch)) * w)
                    .sum();
                data[(y * out_w + xx) * c + ch] = acc as f32;
            }
        }
    }
    ImageF32 {
        height: src.height,
        width: out_w,
        channels: c,
        data,
    }
}

fn vertical(src: &ImageF32, out_h: usize) -> ImageF32 {
    let c = src.channels;
    let taps = coeffs(src.height, out_h);
    let mut data = vec![0f32; out_h * src.width * c];
    for (yy, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
        for x in 0..src.width {
            for ch in 0..c {
                let acc: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(i, w)| f64::from(src.at(s + i, x, ch)) * w)
                    .sum();
                data[(yy * src.width + x) * c + ch] = acc as f32;
            }
        }
    }
    ImageF32 {
        height: out_h,
        width: src.width,
        channels: c,
        data,
    }
}
