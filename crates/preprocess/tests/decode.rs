//! Image decoding: exact values, limits, hostile inputs.

use std::io::Cursor;

use caffe_sandbox_preprocess::{decode_image, DecodeLimits, Error};
use image::{ImageBuffer, ImageFormat, Luma, Rgb, Rgba};

fn encode<P: image::PixelWithColorType>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    f: ImageFormat,
) -> Vec<u8>
where
    P::Subpixel: image::Primitive,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, f).expect("encode");
    out.into_inner()
}

/// 2×2 RGB: red, green / blue, (51, 102, 204).
pub fn rgb_2x2() -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_raw(2, 2, vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 51, 102, 204]).unwrap()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6,
            "index {i}: got {g}, want {w} (all: {got:?})"
        );
    }
}

#[test]
fn png_rgb8_decodes_to_hwc_in_unit_range() {
    let png = encode(&rgb_2x2(), ImageFormat::Png);
    let img = decode_image(&png, &DecodeLimits::default()).unwrap();
    assert_eq!((img.height, img.width, img.channels), (2, 2, 3));
    // u8 / 255: 51/255 = 0.2, 102/255 = 0.4, 204/255 = 0.8; HWC row-major.
    assert_close(
        &img.data,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.2, 0.4, 0.8],
    );
}

#[test]
fn gray16_png_is_divided_by_65535_and_tiled() {
    // 13107 * 5 = 65535 so 13107 -> 0.2; 65535 -> 1.0.
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(2, 1, vec![13107, 65535]).unwrap();
    let png = encode(&img, ImageFormat::Png);
    let d = decode_image(&png, &DecodeLimits::default()).unwrap();
    assert_eq!((d.height, d.width, d.channels), (1, 2, 3));
    assert_close(&d.data, &[0.2, 0.2, 0.2, 1.0, 1.0, 1.0]);
}

#[test]
fn rgba_png_alpha_is_dropped() {
    let img: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_raw(1, 1, vec![51, 102, 204, 0]).unwrap();
    let d = decode_image(&encode(&img, ImageFormat::Png), &DecodeLimits::default()).unwrap();
    assert_close(&d.data, &[0.2, 0.4, 0.8]);
}

#[test]
fn bmp_decodes() {
    let d = decode_image(
        &encode(&rgb_2x2(), ImageFormat::Bmp),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert_close(
        &d.data,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.2, 0.4, 0.8],
    );
}

#[test]
fn jpeg_of_constant_gray_decodes_close() {
    // A constant image survives JPEG almost exactly (DC only).
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_pixel(16, 16, Rgb([128, 128, 128]));
    let jpg = encode(&img, ImageFormat::Jpeg);
    let d = decode_image(&jpg, &DecodeLimits::default()).unwrap();
    assert_eq!((d.height, d.width), (16, 16));
    for v in &d.data {
        assert!((v * 255.0 - 128.0).abs() <= 2.0, "{v}");
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    v.extend_from_slice(&body);
    v.extend_from_slice(&crc32(&body).to_be_bytes());
    v
}

/// A PNG whose header declares `w`×`h` RGB8 pixels, followed by a tiny IDAT and IEND.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, filter 0, no interlace
    v.extend(chunk(b"IHDR", &ihdr));
    // zlib stream of a few zero bytes (a bomb would compress many more).
    v.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    v.extend(chunk(b"IEND", &[]));
    v
}

#[test]
fn crc_helper_matches_a_real_png_chunk() {
    // Sanity check of the test helper: IEND's CRC is the well-known AE 42 60 82.
    assert_eq!(crc32(b"IEND"), 0xae42_6082);
}

#[test]
fn decompression_bomb_width_refused_naming_the_limit() {
    let err =
        decode_image(&png_header_only(100_000, 100_000), &DecodeLimits::default()).unwrap_err();
    match &err {
        Error::ImageDimension {
            dimension,
            value,
            limit,
        } => {
            assert_eq!((*dimension, *value, *limit), ("width", 100_000, 8192));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("max_width") && msg.contains("8192"), "{msg}");
}

#[test]
fn decompression_bomb_height_refused() {
    let err = decode_image(&png_header_only(8, 8193), &DecodeLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageDimension {
                dimension: "height",
                value: 8193,
                limit: 8192
            }
        ),
        "{err:?}"
    );
}

#[test]
fn alloc_limit_refused_naming_the_limit() {
    // 20×20 RGB -> f32 output is 20*20*3*4 = 4800 bytes > 1000.
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_pixel(20, 20, Rgb([1, 2, 3]));
    let limits = DecodeLimits {
        max_alloc: 1000,
        ..DecodeLimits::default()
    };
    let err = decode_image(&encode(&img, ImageFormat::Png), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageAlloc {
                needed: 4800,
                limit: 1000
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_alloc = 1000"), "{err}");
}

#[test]
fn input_size_limit() {
    let png = encode(&rgb_2x2(), ImageFormat::Png);
    let limits = DecodeLimits {
        max_input_bytes: 10,
        ..DecodeLimits::default()
    };
    let err = decode_image(&png, &limits).unwrap_err();
    assert!(err.to_string().contains("max_input_bytes = 10"), "{err}");
}

#[test]
fn truncated_jpeg_is_an_error_not_a_panic() {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_fn(64, 64, |x, y| {
        Rgb([(x * 4) as u8, (y * 4) as u8, ((x ^ y) * 4) as u8])
    });
    let jpg = encode(&img, ImageFormat::Jpeg);
    assert!(decode_image(&jpg, &DecodeLimits::default()).is_ok());
    for cut in [jpg.len() / 2, jpg.len() - 2, 20, 4] {
        let err = decode_image(&jpg[..cut], &DecodeLimits::default());
        assert!(err.is_err(), "truncated at {cut} of {} decoded", jpg.len());
    }
}

#[test]
fn truncated_png_is_an_error() {
    let png = encode(&rgb_2x2(), ImageFormat::Png);
    for cut in [png.len() / 2, png.len() - 13, 30] {
        assert!(
            decode_image(&png[..cut], &DecodeLimits::default()).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn garbage_and_empty_are_unsupported() {
    for bytes in [&b""[..], b"hello world, not an image", &[0u8; 64]] {
        let err = decode_image(bytes, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat), "{err:?}");
    }
}
