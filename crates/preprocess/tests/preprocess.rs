//! pycaffe-order preprocessing with hand-computed values.

use std::io::Cursor;

use caffe_sandbox_preprocess::{
    decode_image, preprocess, resize_bilinear, stack, Crop, DecodeLimits, ImageF32, MeanImage,
    PreprocessConfig,
};
use image::{ImageBuffer, ImageFormat, Luma, Rgb};

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "index {i}: got {g}, want {w} (all: {got:?})"
        );
    }
}

/// 2×2 RGB PNG: (0,0) red, (0,1) green, (1,0) blue, (1,1) = (51, 102, 204),
/// decoded to [0,1]: 51/255 = 0.2, 102/255 = 0.4, 204/255 = 0.8.
fn decoded_2x2() -> ImageF32 {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(2, 2, vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 51, 102, 204]).unwrap();
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png).unwrap();
    decode_image(png.get_ref(), &DecodeLimits::default()).unwrap()
}

/// Everything off: raw_scale 1, identity swap, no mean.
fn plain() -> PreprocessConfig {
    PreprocessConfig {
        raw_scale: 1.0,
        channel_swap: Some(vec![0, 1, 2]),
        ..PreprocessConfig::default()
    }
}

#[test]
fn step_transpose_only() {
    // CHW planes, each row-major over (0,0) (0,1) (1,0) (1,1):
    // R = [1, 0, 0, 0.2], G = [0, 1, 0, 0.4], B = [0, 0, 1, 0.8].
    let out = preprocess(&decoded_2x2(), &plain(), [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[1., 0., 0., 0.2, 0., 1., 0., 0.4, 0., 0., 1., 0.8],
        1e-6,
    );
}

#[test]
fn step_channel_swap_default_is_bgr() {
    let cfg = PreprocessConfig {
        channel_swap: None,
        ..plain()
    };
    // Output channel i = input channel [2,1,0][i]: B, G, R planes.
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[0., 0., 1., 0.8, 0., 1., 0., 0.4, 1., 0., 0., 0.2],
        1e-6,
    );
}

#[test]
fn step_raw_scale() {
    let cfg = PreprocessConfig {
        raw_scale: 255.0,
        ..plain()
    };
    // R*255 = [255,0,0,51], G = [0,255,0,102], B = [0,0,255,204].
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[255., 0., 0., 51., 0., 255., 0., 102., 0., 0., 255., 204.],
        1e-4,
    );
}

#[test]
fn full_pipeline_mean_is_in_swapped_order() {
    // Defaults: channel_swap [2,1,0], raw_scale 255.
    let cfg = PreprocessConfig {
        mean: Some(vec![10.0, 20.0, 30.0]),
        input_scale: 0.5,
        ..PreprocessConfig::default()
    };
    // After swap and ×255: B = [0,0,255,204], G = [0,255,0,102], R = [255,0,0,51].
    // The mean is in the swapped (BGR) order: B-10, G-20, R-30:
    //   B = [-10,-10,245,194], G = [-20,235,-20,82], R = [225,-30,-30,21].
    // ×0.5: B = [-5,-5,122.5,97], G = [-10,117.5,-10,41], R = [112.5,-15,-15,10.5].
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[
            -5., -5., 122.5, 97., -10., 117.5, -10., 41., 112.5, -15., -15., 10.5,
        ],
        1e-4,
    );
}

#[test]
fn custom_channel_swap() {
    // [1, 2, 0]: G, B, R planes.
    let cfg = PreprocessConfig {
        channel_swap: Some(vec![1, 2, 0]),
        ..plain()
    };
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[0., 1., 0., 0.4, 0., 0., 1., 0.8, 1., 0., 0., 0.2],
        1e-6,
    );
}

/// H×W×3 image with value 10*y + x in every channel.
fn coords(h: usize, w: usize) -> ImageF32 {
    let mut d = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = (10 * y + x) as f32;
            d.extend([v, v, v]);
        }
    }
    ImageF32::new(h, w, 3, d).unwrap()
}

#[test]
fn center_crop_offsets_floor_for_odd_sizes() {
    // 5×4 image, input 2×2: y0 = floor((5-2)/2) = 1, x0 = floor((4-2)/2) = 1.
    let cfg = PreprocessConfig {
        resize: Some([5, 4]),
        ..plain()
    };
    let out = preprocess(&coords(5, 4), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(&out[..4], &[11., 12., 21., 22.], 0.0);
    // 5×4 image, input 2×1: y0 = 1, x0 = floor(3/2) = 1.
    let out = preprocess(&coords(5, 4), &cfg, [1, 3, 2, 1]).unwrap();
    assert_close(&out[..2], &[11., 21.], 0.0);
    // 4×5 image, input 1×2: y0 = floor(3/2) = 1, x0 = floor(3/2) = 1.
    let cfg = PreprocessConfig {
        resize: Some([4, 5]),
        ..plain()
    };
    let out = preprocess(&coords(4, 5), &cfg, [1, 3, 1, 2]).unwrap();
    assert_close(&out[..2], &[11., 12.], 0.0);
    // 6×6 image, input 3×3: y0 = x0 = floor(3/2) = 1 (not rounded up to 2).
    let cfg = PreprocessConfig {
        resize: Some([6, 6]),
        ..plain()
    };
    let out = preprocess(&coords(6, 6), &cfg, [1, 3, 3, 3]).unwrap();
    assert_close(
        &out[..9],
        &[11., 12., 13., 21., 22., 23., 31., 32., 33.],
        0.0,
    );
}

#[test]
fn crop_smaller_than_input_is_an_error() {
    let cfg = PreprocessConfig {
        resize: Some([1, 4]),
        ..plain()
    };
    let err = preprocess(&coords(5, 4), &cfg, [1, 3, 2, 2]).unwrap_err();
    assert!(
        err.to_string().contains("smaller than the input blob 2x2"),
        "{err}"
    );
}

#[test]
fn crop_none_resizes_to_the_input() {
    // 1×2 [0, 10] resized to 1×4 first: [0, 2.5, 7.5, 10]; crop none then
    // resizes 1×4 -> 1×2 (Pillow triangle filter, support 2):
    //   out0: taps x=0,1,2 weights .75,.75,.25 (/1.75) -> (0 + 1.875 + 1.875)/1.75 = 2.142857
    //   out1: taps x=1,2,3 weights .25,.75,.75 (/1.75) -> (0.625 + 5.625 + 7.5)/1.75 = 7.857143
    let img = ImageF32::new(1, 2, 3, vec![0., 0., 0., 10., 10., 10.]).unwrap();
    let cfg = PreprocessConfig {
        resize: Some([1, 4]),
        crop: Crop::None,
        ..plain()
    };
    let out = preprocess(&img, &cfg, [1, 3, 1, 2]).unwrap();
    assert_close(&out[..2], &[2.142_857, 7.857_143], 1e-5);
    // With crop = center the 1×4 would be cropped at x0 = 1 instead: [2.5, 7.5].
    let cfg = PreprocessConfig {
        crop: Crop::Center,
        ..cfg
    };
    let out = preprocess(&img, &cfg, [1, 3, 1, 2]).unwrap();
    assert_close(&out[..2], &[2.5, 7.5], 1e-6);
}

#[test]
fn grayscale_from_rgb_uses_skimage_weights() {
    // color = false: gray = 0.2125 R + 0.7154 G + 0.0721 B, 1 channel.
    // Pixels: red -> 0.2125, green -> 0.7154, blue -> 0.0721,
    // (0.2,0.4,0.8) -> 0.0425 + 0.28616 + 0.05768 = 0.38634.
    // ×255 and minus mean 50: 4.1875, 132.427, -31.6145, 48.5167.
    let cfg = PreprocessConfig {
        color: false,
        mean: Some(vec![50.0]),
        ..PreprocessConfig::default()
    };
    let out = preprocess(&decoded_2x2(), &cfg, [1, 1, 2, 2]).unwrap();
    assert_close(&out, &[4.1875, 132.427, -31.6145, 48.5167], 1e-3);
}

#[test]
fn grayscale_png_stays_gray() {
    let img: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_raw(1, 2, vec![51, 204]).unwrap();
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png).unwrap();
    let d = decode_image(png.get_ref(), &DecodeLimits::default()).unwrap();
    let cfg = PreprocessConfig {
        color: false,
        ..PreprocessConfig::default()
    };
    // Weights sum to 1, so a gray pixel keeps its value: 51, 204.
    let out = preprocess(&d, &cfg, [1, 1, 2, 1]).unwrap();
    assert_close(&out, &[51., 204.], 1e-3);
    // A gray image with color = true is tiled: 3 equal planes.
    let out = preprocess(&d, &PreprocessConfig::default(), [1, 3, 2, 1]).unwrap();
    assert_close(&out, &[51., 204., 51., 204., 51., 204.], 1e-3);
}

#[test]
fn channel_mismatch_is_an_error() {
    let err = preprocess(&decoded_2x2(), &plain(), [1, 1, 2, 2]).unwrap_err();
    assert!(err.to_string().contains("1 channel"), "{err}");
}

#[test]
fn resize_constant_image_stays_constant() {
    let img = ImageF32::new(3, 5, 3, vec![0.3; 45]).unwrap();
    for (h, w) in [(7, 2), (2, 9), (1, 1), (3, 5), (11, 13)] {
        let r = resize_bilinear(&img, h, w).unwrap();
        assert_eq!((r.height, r.width, r.channels), (h, w, 3));
        assert!(
            r.data.iter().all(|v| (v - 0.3).abs() < 1e-6),
            "{h}x{w}: {:?}",
            r.data
        );
    }
}

fn gray_row(v: &[f32]) -> ImageF32 {
    ImageF32::new(1, v.len(), 1, v.to_vec()).unwrap()
}

#[test]
fn resize_upscale_half_pixel_centres() {
    // 1×2 [0, 1] -> 1×4: centres at 0.25, 0.75, 1.25, 1.75 in input pixels:
    // [0, 0.25, 0.75, 1] (edges clamp).
    let r = resize_bilinear(&gray_row(&[0.0, 1.0]), 1, 4).unwrap();
    assert_close(&r.data, &[0.0, 0.25, 0.75, 1.0], 1e-6);
    // 2×2 [[0,1],[2,3]] -> 4×4, value (1,1): rows at x=1: .25 and 2.25; then
    // .75 * .25 + .25 * 2.25 = 0.75.
    let img = ImageF32::new(2, 2, 1, vec![0., 1., 2., 3.]).unwrap();
    let r = resize_bilinear(&img, 4, 4).unwrap();
    assert!((r.at(1, 1, 0) - 0.75).abs() < 1e-6, "{:?}", r.data);
    assert!((r.at(3, 3, 0) - 3.0).abs() < 1e-6);
    assert!((r.at(0, 0, 0) - 0.0).abs() < 1e-6);
}

#[test]
fn resize_downscale_is_antialiased_like_pillow() {
    // 1×4 [7, 0, 0, 14] -> 1×2, scale 2, support 2:
    // out0: centre 1, taps x=0,1,2 with weights .75,.75,.25 -> (5.25)/1.75 = 3
    // out1: centre 3, taps x=1,2,3 with weights .25,.75,.75 -> (10.5)/1.75 = 6
    let r = resize_bilinear(&gray_row(&[7.0, 0.0, 0.0, 14.0]), 1, 2).unwrap();
    assert_close(&r.data, &[3.0, 6.0], 1e-6);
}

fn mean_image(c: usize, h: usize, w: usize) -> MeanImage {
    // Channel k plane: 100*k + index within the plane.
    let data = (0..c)
        .flat_map(|k| (0..h * w).map(move |i| (100 * k + i) as f32))
        .collect();
    MeanImage {
        channels: c,
        height: h,
        width: w,
        data,
    }
}

#[test]
fn mean_image_same_size_is_elementwise() {
    let cfg = PreprocessConfig {
        mean_image: Some(mean_image(3, 2, 2)),
        ..plain()
    };
    // R = [1,0,0,0.2] - [0,1,2,3]; G = [0,1,0,0.4] - [100..103]; B = [0,0,1,0.8] - [200..203].
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[
            1., -1., -2., -2.8, -100., -100., -102., -102.6, -200., -201., -201., -202.2,
        ],
        1e-5,
    );
}

#[test]
fn mean_image_other_size_uses_per_channel_average() {
    // 3×4×4 mean: channel k averages 100k + mean(0..16) = 100k + 7.5.
    let cfg = PreprocessConfig {
        mean_image: Some(mean_image(3, 4, 4)),
        ..plain()
    };
    let out = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap();
    assert_close(
        &out,
        &[
            -6.5, -7.5, -7.5, -7.3, -107.5, -106.5, -107.5, -107.1, -207.5, -207.5, -206.5, -206.7,
        ],
        1e-4,
    );
}

#[test]
fn mean_image_wrong_channels_is_an_error() {
    let cfg = PreprocessConfig {
        mean_image: Some(mean_image(1, 2, 2)),
        ..plain()
    };
    assert!(preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).is_err());
}

#[test]
fn unloaded_mean_file_is_an_error() {
    let cfg = PreprocessConfig {
        mean_file: Some("mean.binaryproto".into()),
        ..plain()
    };
    let err = preprocess(&decoded_2x2(), &cfg, [1, 3, 2, 2]).unwrap_err();
    assert!(err.to_string().contains("mean.binaryproto"), "{err}");
}

#[test]
fn stack_concatenates_and_checks_lengths() {
    assert_eq!(
        stack(&[vec![1.0, 2.0], vec![3.0, 4.0]]).unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    assert!(stack(&[vec![1.0, 2.0], vec![3.0]]).is_err());
    assert!(stack(&[]).unwrap().is_empty());
}

#[test]
fn resize_refuses_empty_or_inconsistent_images() {
    let empty = ImageF32 {
        height: 0,
        width: 3,
        channels: 3,
        data: vec![],
    };
    assert!(resize_bilinear(&empty, 2, 2).is_err());
    let bad = ImageF32 {
        height: 2,
        width: 2,
        channels: 3,
        data: vec![0.0; 5],
    };
    assert!(resize_bilinear(&bad, 2, 2).is_err());
    assert!(preprocess(&bad, &plain(), [1, 3, 2, 2]).is_err());
    let ok = ImageF32::new(1, 1, 3, vec![0.0; 3]).unwrap();
    assert!(resize_bilinear(&ok, 0, 2).is_err());
    assert!(resize_bilinear(&ok, 100_000, 100_000).is_err());
}
