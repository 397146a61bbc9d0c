//! Image decoding with hard limits, producing `caffe.io.load_image`-style floats.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits};

use crate::error::{Error, Result};

/// Limits applied before and during decoding (decompression-bomb guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels. Default 8192.
    pub max_width: u32,
    /// Largest accepted height in pixels. Default 8192.
    pub max_height: u32,
    /// Largest allocation for the decoded pixels, counted both for the
    /// decoder's buffer and for the `f32` output (H×W×3×4 bytes). Default 256 MiB.
    pub max_alloc: u64,
    /// Largest accepted encoded input. Default 64 MiB.
    pub max_input_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_width: 8192,
            max_height: 8192,
            max_alloc: 256 * 1024 * 1024,
            max_input_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A float image, row-major H×W×C (interleaved), values normally in `[0, 1]`.
/// `channels` is 3 (RGB) or 1 (gray).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channels per pixel (1 or 3).
    pub channels: usize,
    /// `height * width * channels` values, HWC order.
    pub data: Vec<f32>,
}

/// What [`decode_image`] returns: an [`ImageF32`] with 3 channels in RGB order.
pub type RgbImageF32 = ImageF32;

/// skimage `rgb2gray` weights (what `caffe.io.load_image(color=False)` uses).
pub const GRAY_WEIGHTS: [f32; 3] = [0.2125, 0.7154, 0.0721];

impl ImageF32 {
    /// Build an image, checking that `data` has `height * width * channels` values.
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        let n = height
            .checked_mul(width)
            .and_then(|v| v.checked_mul(channels));
        if n != Some(data.len()) || !(channels == 1 || channels == 3) {
            return Err(Error::Preprocess(format!(
                "image buffer of {} values does not match {height}x{width}x{channels} (channels must be 1 or 3)",
                data.len()
            )));
        }
        Ok(ImageF32 {
            height,
            width,
            channels,
            data,
        })
    }

    /// Value at row `y`, column `x`, channel `c`.
    pub fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Grayscale version (skimage `rgb2gray` weights, [`GRAY_WEIGHTS`]);
    /// a 1-channel image is returned unchanged.
    pub fn to_gray(&self) -> ImageF32 {
        if self.channels == 1 {
            return self.clone();
        }
        let [wr, wg, wb] = GRAY_WEIGHTS;
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| wr * p[0] + wg * p[1] + wb * p[2])
            .collect();
        ImageF32 {
            height: self.height,
            width: self.width,
            channels: 1,
            data,
        }
    }

    /// 3-channel version (a gray image is tiled to R = G = B, as
    /// `caffe.io.load_image` does); a 3-channel image is returned unchanged.
    pub fn to_rgb(&self) -> ImageF32 {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        ImageF32 {
            height: self.height,
            width: self.width,
            channels: 3,
            data,
        }
    }
}

/// Decode JPEG/PNG/BMP/GIF bytes (format sniffed from the content) into an RGB
/// float image in `[0, 1]`, like pycaffe's `caffe.io.load_image` (skimage
/// `img_as_float`: 8-bit values / 255, 16-bit values / 65535). Alpha is
/// dropped; gray images are tiled to 3 channels; a GIF yields its first frame;
/// EXIF orientation is not applied (neither does skimage).
///
/// The declared width/height are checked against `limits` from the header
/// before any pixel is decoded, and the decoder runs with `image::Limits`.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImageF32> {
    if bytes.len() as u64 > limits.max_input_bytes {
        return Err(Error::InputTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_input_bytes,
        });
    }
    let reader = |check_dims: bool| -> Result<ImageReader<Cursor<&[u8]>>> {
        let mut r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::ImageDecode {
                format: "unknown".into(),
                message: e.to_string(),
            })?;
        if r.format().is_none() {
            return Err(Error::UnsupportedFormat);
        }
        let mut l = Limits::default();
        if check_dims {
            l.max_image_width = Some(limits.max_width);
            l.max_image_height = Some(limits.max_height);
        }
        l.max_alloc = Some(limits.max_alloc);
        r.limits(l);
        Ok(r)
    };
    let image_format = reader(true)?.format();
    let format = image_format.map(|f| format!("{f:?}")).unwrap_or_default();
    let map = |e: ImageError| map_image_error(e, &format, limits);

    // Header only, so that the error can name the dimension and its value:
    // refuse a bomb before the decoder allocates pixels. (The decoder's own
    // dimension limits would refuse it too, without saying which side.)
    let (w, h) = reader(false)?.into_dimensions().map_err(map)?;
    check_dims(u64::from(w), u64::from(h), limits)?;

    if image_format == Some(ImageFormat::Jpeg) {
        check_jpeg_complete(bytes)?;
    }
    let img = reader(true)?.decode().map_err(map)?;
    check_dims(u64::from(img.width()), u64::from(img.height()), limits)?;
    Ok(dynamic_to_f32(img))
}

/// The JPEG decoder fills a truncated scan with gray instead of failing.
/// PIL (and so skimage / pycaffe) refuses truncated files, and so do we: walk
/// the marker segments to the first start-of-scan (skipping APPn segments,
/// which may hold an EXIF thumbnail with markers of its own) and require an
/// end-of-image marker after it. In entropy-coded data 0xFF is stuffed as
/// `FF 00`, so `FF D9` there is a real marker.
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let bad = |message: &str| Error::ImageDecode {
        format: "Jpeg".into(),
        message: message.to_owned(),
    };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(bad("missing start-of-image marker"));
    }
    let mut pos = 2usize;
    let sos = loop {
        // Skip fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(bad("truncated or corrupt before the first scan"));
        };
        match marker {
            0xDA => break pos,
            0x01 | 0xD0..=0xD7 => pos += 2,
            0xD9 => return Err(bad("end-of-image marker before any scan")),
            _ => {
                let len = match bytes.get(pos + 2..pos + 4) {
                    Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
                    None => return Err(bad("truncated segment header")),
                };
                if len < 2 {
                    return Err(bad("corrupt segment length"));
                }
                pos += 2 + len;
            }
        }
    };
    if !bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(bad("truncated: no end-of-image marker after the scan data"));
    }
    Ok(())
}

fn check_dims(w: u64, h: u64, limits: &DecodeLimits) -> Result<()> {
    if w > u64::from(limits.max_width) {
        return Err(Error::ImageDimension {
            dimension: "width",
            value: w,
            limit: u64::from(limits.max_width),
        });
    }
    if h > u64::from(limits.max_height) {
        return Err(Error::ImageDimension {
            dimension: "height",
            value: h,
            limit: u64::from(limits.max_height),
        });
    }
    if w == 0 || h == 0 {
        return Err(Error::ImageDecode {
            format: "image".into(),
            message: format!("empty image ({w}x{h})"),
        });
    }
    // The f32 RGB output we are about to build.
    let needed = w.saturating_mul(h).saturating_mul(3 * 4);
    if needed > limits.max_alloc {
        return Err(Error::ImageAlloc {
            needed,
            limit: limits.max_alloc,
        });
    }
    Ok(())
}

fn map_image_error(e: ImageError, format: &str, limits: &DecodeLimits) -> Error {
    match e {
        ImageError::Limits(l) => match l.kind() {
            image::error::LimitErrorKind::DimensionError => Error::ImageLimits {
                max_width: limits.max_width,
                max_height: limits.max_height,
                message: l.to_string(),
            },
            _ => Error::ImageAlloc {
                needed: 0,
                limit: limits.max_alloc,
            },
        },
        ImageError::Unsupported(_) => Error::UnsupportedFormat,
        other => Error::ImageDecode {
            format: format.to_owned(),
            message: other.to_string(),
        },
    }
}

fn dynamic_to_f32(img: DynamicImage) -> ImageF32 {
    let height = img.height() as usize;
    let width = img.width() as usize;
    // to_rgb32f: u8 / 255, u16 / 65535 (skimage img_as_float), alpha dropped,
    // luma tiled to RGB.
    let rgb = img.to_rgb32f();
    drop(img);
    ImageF32 {
        height,
        width,
        channels: 3,
        data: rgb.into_raw(),
    }
}
