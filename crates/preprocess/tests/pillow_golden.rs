//! Resize against values produced by Pillow 13.0.0 (`Image.BILINEAR` on a
//! mode "F" image), generated once with:
//!
//! ```python
//! a = np.array([[10*y + x*x for x in range(5)] for y in range(3)], dtype=np.float32)
//! im = Image.fromarray(a)  # mode "F"
//! np.asarray(im.resize((ow, oh), Image.BILINEAR)).ravel()
//! ```
//!
//! These check the claim in the README that our resize equals Pillow's for
//! float images, in both directions (upscaling and antialiased downscaling).

use caffe_sandbox_preprocess::{resize_bilinear, ImageF32};

fn source() -> ImageF32 {
    let mut d = Vec::new();
    for y in 0..3 {
        for x in 0..5 {
            d.push((10 * y + x * x) as f32);
        }
    }
    ImageF32::new(3, 5, 1, d).unwrap()
}

#[rustfmt::skip]
/// Pillow's float32 outputs, printed exactly as f64.
const GOLDEN: &[((usize, usize), &[f64])] = &[
    ((4, 7), &[0.0, 0.5714285969734192, 1.8571428060531616, 4.0, 7.5714287757873535, 12.0, 16.0,
        6.25, 6.821428298950195, 8.107142448425293, 10.25, 13.821428298950195, 18.25, 22.25,
        13.75, 14.321428298950195, 15.607142448425293, 17.75, 21.321428298950195, 25.75, 29.75,
        20.0, 20.571428298950195, 21.85714340209961, 24.0, 27.571428298950195, 32.0, 36.0]),
    ((2, 2), &[5.477272987365723, 13.477272987365723, 17.977272033691406, 25.977272033691406]),
    ((7, 3), &[0.4285714328289032, 4.44444465637207, 13.0, 1.8571429252624512, 5.873015880584717,
        14.428571701049805, 6.142857074737549, 10.158730506896973, 18.714284896850586,
        10.428571701049805, 14.44444465637207, 23.0, 14.714285850524902, 18.730159759521484,
        27.285715103149414, 19.0, 23.015872955322266, 31.571428298950195, 20.428571701049805,
        24.44444465637207, 33.0]),
    ((1, 1), &[15.684210777282715]),
    ((3, 2), &[1.7272727489471436, 9.727272987365723, 11.727272987365723, 19.727272033691406,
        21.727272033691406, 29.727272033691406]),
];

#[test]
fn matches_pillow_bilinear_on_float_images() {
    let src = source();
    for ((h, w), want) in GOLDEN {
        let got = resize_bilinear(&src, *h, *w).unwrap();
        assert_eq!((got.height, got.width), (*h, *w));
        for (i, (g, e)) in got.data.iter().zip(want.iter()).enumerate() {
            assert!(
                (f64::from(*g) - e).abs() <= 2e-5,
                "{h}x{w} index {i}: got {g}, Pillow {e} (all: {:?})",
                got.data
            );
        }
    }
}
