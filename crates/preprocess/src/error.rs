//! The crate's error type. Every message names the file, field or limit involved.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading model-side files, decoding an
/// image or preprocessing it. All inputs are treated as hostile, so every
/// variant is an ordinary error: nothing in this crate panics on bad input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// File name as given.
        file: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file is larger than this crate's cap for that kind of file.
    #[error("{file}: larger than the cap of {cap} bytes for this kind of file")]
    FileTooLarge {
        /// File name as given.
        file: String,
        /// The cap in bytes.
        cap: u64,
    },

    /// `model.toml` is not valid TOML or does not match the schema
    /// (the message names the unknown or mistyped field).
    #[error("{file}: {message}")]
    ConfigParse {
        /// File name as given.
        file: String,
        /// The parser's message (names the field and position).
        message: String,
    },

    /// A `model.toml` field has a value this crate refuses.
    #[error("{file}: field `{field}`: {reason}")]
    ConfigInvalid {
        /// File name as given.
        file: String,
        /// Dotted field name, e.g. `preprocess.mean`.
        field: String,
        /// Why the value is refused.
        reason: String,
    },

    /// The model directory does not identify a single weights file.
    #[error("{dir}: weights: {reason}")]
    Weights {
        /// Model directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },

    /// The encoded image is larger than `DecodeLimits::max_input_bytes`.
    #[error("image refused: {size} encoded bytes exceed the limit max_input_bytes = {limit}")]
    InputTooLarge {
        /// Encoded size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The image declares a width or height above the configured limit
    /// (decompression-bomb guard).
    #[error("image refused: {dimension} {value} exceeds the limit max_{dimension} = {limit}")]
    ImageDimension {
        /// `"width"` or `"height"`.
        dimension: &'static str,
        /// Declared value.
        value: u64,
        /// The limit.
        limit: u64,
    },

    /// The decoder itself refused the image under its `image::Limits`.
    #[error("image refused by the decoder limits (max_width = {max_width}, max_height = {max_height}): {message}")]
    ImageLimits {
        /// The width limit.
        max_width: u32,
        /// The height limit.
        max_height: u32,
        /// Decoder message.
        message: String,
    },

    /// Decoding would need more memory than `DecodeLimits::max_alloc`.
    #[error(
        "image refused: decoding needs {needed} bytes, more than the limit max_alloc = {limit}"
    )]
    ImageAlloc {
        /// Bytes needed (0 when the decoder did not say).
        needed: u64,
        /// The limit.
        limit: u64,
    },

    /// Content sniffing found no supported image format.
    #[error(
        "image refused: unrecognised or unsupported image format (supported: JPEG, PNG, BMP, GIF)"
    )]
    UnsupportedFormat,

    /// The image bytes are corrupt or truncated.
    #[error("image could not be decoded ({format}): {message}")]
    ImageDecode {
        /// Format name as sniffed.
        format: String,
        /// Decoder message.
        message: String,
    },

    /// A `.npy` file is malformed or not supported.
    #[error("{file}: npy: {reason}")]
    Npy {
        /// File name as given.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A `.binaryproto` file is malformed or not supported.
    #[error("{file}: binaryproto: {reason}")]
    BinaryProto {
        /// File name as given.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A labels file is malformed or exceeds a cap.
    #[error("{file}: labels: {reason}")]
    Labels {
        /// File name as given.
        file: String,
        /// What is wrong (names the line and the cap).
        reason: String,
    },

    /// The image, the configuration and the input blob's shape do not fit together.
    #[error("preprocess: {0}")]
    Preprocess(String),
}

/// Read a whole file, refusing it if it is larger than `cap` bytes.
/// Reads at most `cap + 1` bytes, so a huge or endless file costs no more.
pub(crate) fn read_capped(path: &std::path::Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        file: file.clone(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
    if buf.len() as u64 > cap {
        return Err(Error::FileTooLarge { file, cap });
    }
    Ok(buf)
}
