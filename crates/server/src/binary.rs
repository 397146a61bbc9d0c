//! Triton's binary tensor data extension: a body is `<JSON header><binary tensors>`, the header's length given by
//! `Inference-Header-Content-Length`; tensors named with `parameters.binary_data_size` are taken from the binary
//! part in order. FP32 is little-endian; BYTES elements are each a 4-byte little-endian length and the bytes.
use crate::errors::ApiError;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The header naming the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a body into its JSON header and binary part.
pub fn split<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length is not a number"))?;
    if n > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length {n} is larger than the body ({} bytes)",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// Takes `size` bytes from `rest` at `*cursor`.
pub fn take<'a>(
    rest: &'a [u8],
    cursor: &mut usize,
    size: usize,
    what: &str,
) -> Result<&'a [u8], ApiError> {
    let end = cursor
        .checked_add(size)
        .filter(|&e| e <= rest.len())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "input '{what}': binary_data_size {size} runs past the end of the binary data ({} bytes left)",
                rest.len().saturating_sub(*cursor)
            ))
        })?;
    let s = &rest[*cursor..end];
    *cursor = end;
    Ok(s)
}

/// Little-endian FP32 values; the length must be a multiple of 4.
pub fn f32_le(raw: &[u8], what: &str) -> Result<Vec<f32>, ApiError> {
    if !raw.chunks_exact(4).remainder().is_empty() {
        return Err(ApiError::bad_request(format!(
            "input '{what}': {} bytes of FP32 data is not a multiple of 4",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Decodes length-prefixed BYTES elements.
pub fn bytes_elements<'a>(raw: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, ApiError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < raw.len() {
        let head = raw.get(at..at + 4).ok_or_else(|| {
            ApiError::bad_request(format!("input '{what}': truncated BYTES element length"))
        })?;
        let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        at += 4;
        let item = raw.get(at..at.saturating_add(n)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "input '{what}': BYTES element of {n} bytes runs past the end of its data"
            ))
        })?;
        at += n;
        out.push(item);
    }
    Ok(out)
}

/// Encodes BYTES elements.
pub fn encode_bytes_elements<T: AsRef<[u8]>>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        let i = i.as_ref();
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// A response: plain JSON when there is no binary part, else header + binary with the length header.
pub fn response(json: serde_json::Value, binary: Vec<u8>) -> Response {
    let header_bytes = json.to_string().into_bytes();
    if binary.is_empty() {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header_bytes,
        )
            .into_response();
    }
    let len = header_bytes.len();
    let mut body = header_bytes;
    body.extend_from_slice(&binary);
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        body,
    )
        .into_response();
    r.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(len));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_take_and_elements() {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, HeaderValue::from_static("2"));
        let (j, b) = split(&h, b"{}abcdef").unwrap();
        assert_eq!((j, b), (&b"{}"[..], &b"abcdef"[..]));
        h.insert(HEADER_LENGTH, HeaderValue::from_static("99"));
        assert!(split(&h, b"{}")
            .unwrap_err()
            .message
            .contains("larger than the body"));
        h.insert(HEADER_LENGTH, HeaderValue::from_static("x"));
        assert!(split(&h, b"{}").is_err());
        let mut c = 0;
        assert_eq!(take(b"abcdef", &mut c, 4, "i").unwrap(), b"abcd");
        assert!(take(b"abcdef", &mut c, 3, "i").is_err());
        assert!(take(b"abcdef", &mut c, usize::MAX, "i").is_err());
        let enc = encode_bytes_elements(&[b"png".to_vec(), vec![]]);
        assert_eq!(
            bytes_elements(&enc, "i").unwrap(),
            vec![&b"png"[..], &b""[..]]
        );
        assert!(bytes_elements(&enc[..5], "i").is_err());
        assert!(bytes_elements(&[255, 255, 255, 255, 1], "i").is_err());
        assert_eq!(f32_le(&1.5f32.to_le_bytes(), "i").unwrap(), vec![1.5]);
        assert!(f32_le(&[0, 0, 0], "i").is_err());
    }
}
