//! Property tests: hostile bytes give errors, never panics.

use std::io::Cursor;

use caffe_sandbox_preprocess::{
    decode_image, parse_binaryproto, parse_labels, parse_mean, parse_npy, preprocess, DecodeLimits,
    ImageF32, ModelConfig, PreprocessConfig,
};
use image::{ImageBuffer, ImageFormat, Rgb};
use proptest::prelude::*;

fn small_limits() -> DecodeLimits {
    DecodeLimits {
        max_width: 512,
        max_height: 512,
        max_alloc: 8 << 20,
        max_input_bytes: 1 << 20,
    }
}

fn sample(format: ImageFormat) -> Vec<u8> {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_fn(12, 9, |x, y| Rgb([(x * 20) as u8, (y * 25) as u8, 7]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Valid files with some bytes overwritten and possibly truncated: reaches
/// far deeper into the decoders than purely random bytes.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    (proptest::collection::vec((0..n, any::<u8>()), 0..8), 0..=n).prop_map(move |(edits, cut)| {
        let mut v = base.clone();
        for (i, b) in edits {
            v[i] = b;
        }
        v.truncate(cut.max(1));
        v
    })
}

const NPY_PREFIX: &[u8] = b"\x93NUMPY\x01\x00";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_image(&bytes, &small_limits());
    }

    #[test]
    fn decode_with_magic_prefix(
        magic in prop::sample::select(vec![
            &b"\x89PNG\r\n\x1a\n"[..], &b"\xff\xd8\xff"[..], &b"BM"[..], &b"GIF89a"[..],
        ]),
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = magic.to_vec();
        bytes.extend(rest);
        let _ = decode_image(&bytes, &small_limits());
    }

    #[test]
    fn decode_mutated_png(bytes in mutated(sample(ImageFormat::Png))) {
        let _ = decode_image(&bytes, &small_limits());
    }

    #[test]
    fn decode_mutated_jpeg(bytes in mutated(sample(ImageFormat::Jpeg))) {
        let _ = decode_image(&bytes, &small_limits());
    }

    #[test]
    fn decode_mutated_bmp_gif(bytes in mutated(sample(ImageFormat::Bmp)), g in mutated(sample(ImageFormat::Gif))) {
        let _ = decode_image(&bytes, &small_limits());
        let _ = decode_image(&g, &small_limits());
    }

    #[test]
    fn npy_random(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_npy(&bytes, "x.npy");
        let mut b = NPY_PREFIX.to_vec();
        b.extend(&bytes);
        let _ = parse_npy(&b, "x.npy");
        let _ = parse_mean(&b, "x.npy");
    }

    #[test]
    fn npy_random_header_text(h in "[{}()',:a-z<>0-9 LTFue\\\\\"]{0,120}", data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = NPY_PREFIX.to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        let _ = parse_npy(&b, "x.npy");
    }

    #[test]
    fn binaryproto_random(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_binaryproto(&bytes, "m.binaryproto");
        let _ = parse_mean(&bytes, "m.binaryproto");
    }

    #[test]
    fn labels_random(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(l) = parse_labels(&bytes, "labels.txt") {
            for s in l {
                prop_assert!(!s.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn model_toml_random(s in "\\PC{0,200}") {
        let _ = ModelConfig::from_toml_str(&s, "model.toml");
    }

    #[test]
    fn preprocess_any_geometry(
        ih in 1usize..12, iw in 1usize..12, h in 1usize..12, w in 1usize..12,
        rh in 1u32..16, rw in 1u32..16, gray in any::<bool>(), center in any::<bool>(),
    ) {
        let img = ImageF32::new(ih, iw, 3, vec![0.5; ih * iw * 3]).unwrap();
        let cfg = PreprocessConfig {
            resize: Some([rh, rw]),
            color: !gray,
            crop: if center { caffe_sandbox_preprocess::Crop::Center } else { caffe_sandbox_preprocess::Crop::None },
            ..PreprocessConfig::default()
        };
        let c = if gray { 1 } else { 3 };
        if let Ok(out) = preprocess(&img, &cfg, [1, c, h, w]) {
            prop_assert_eq!(out.len(), c * h * w);
            // Constant 0.5 stays 0.5 * 255 through resize and crop.
            for v in out {
                prop_assert!((v - 127.5).abs() < 1e-3);
            }
        } else {
            prop_assert!(center && ((rh as usize) < h || (rw as usize) < w));
        }
    }
}
