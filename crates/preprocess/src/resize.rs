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

use crate::decode::ImageF32;

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

/// Resize `img` to `out_h`×`out_w` (both ≥ 1). Returns a clone when the size
/// does not change (as Pillow does).
pub fn resize_bilinear(img: &ImageF32, out_h: usize, out_w: usize) -> ImageF32 {
    let c = img.channels;
    let mut cur = img.clone();
    if out_w != cur.width {
        let taps = coeffs(cur.width, out_w);
        let mut data = vec![0f32; cur.height * out_w * c];
        for y in 0..cur.height {
            for (xx, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
                for ch in 0..c {
                    let acc: f64 = k
                        .iter()
                        .enumerate()
                        .map(|(i, w)| f64::from(cur.at(y, s + i, ch)) * w)
                        .sum();
                    data[(y * out_w + xx) * c + ch] = acc as f32;
                }
            }
        }
        cur = ImageF32 {
            height: cur.height,
            width: out_w,
            channels: c,
            data,
        };
    }
    if out_h != cur.height {
        let taps = coeffs(cur.height, out_h);
        let mut data = vec![0f32; out_h * cur.width * c];
        for (yy, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
            for x in 0..cur.width {
                for ch in 0..c {
                    let acc: f64 = k
                        .iter()
                        .enumerate()
                        .map(|(i, w)| f64::from(cur.at(s + i, x, ch)) * w)
                        .sum();
                    data[(yy * cur.width + x) * c + ch] = acc as f32;
                }
            }
        }
        cur = ImageF32 {
            height: out_h,
            width: cur.width,
            channels: c,
            data,
        };
    }
    cur
}
