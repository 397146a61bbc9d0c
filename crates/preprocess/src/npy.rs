//! A small, careful `.npy` reader (float32 / float64, little-endian, C order).
//!
//! Why not `npyz` / `ndarray-npy`: we need only two dtypes, want hard caps
//! on header length, rank, element count and file size applied *before*
//! anything is allocated, and want every malformed input to be an error
//! naming the file. The format is small (a magic string, a length and a
//! Python dict literal), so a ~150-line strict parser is easier to audit than
//! a general one. Header grammar accepted:
//! `{'descr': '<f4'|'<f8', 'fortran_order': False, 'shape': (d0, d1, ...), }`
//! in any key order, single or double quotes, optional trailing commas, and
//! Python 2's `3L` integer suffix (old Caffe-era files).

use std::path::Path;

use crate::error::{read_capped, Error, Result};
use crate::mean::ArrayF32;

/// Largest `.npy` file accepted.
pub const MAX_NPY_BYTES: u64 = 64 * 1024 * 1024;
/// Largest header accepted (numpy itself refuses headers above 10000 bytes by default).
pub const MAX_NPY_HEADER_BYTES: usize = 16 * 1024;
/// Largest number of axes accepted.
pub const MAX_NPY_NDIM: usize = 8;
/// Largest number of elements accepted.
pub const MAX_NPY_ELEMENTS: u64 = 16 * 1024 * 1024;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Read and parse a `.npy` file, refusing files over [`MAX_NPY_BYTES`].
pub fn read_npy(path: &Path) -> Result<ArrayF32> {
    let bytes = read_capped(path, MAX_NPY_BYTES)?;
    parse_npy(&bytes, &path.display().to_string())
}

/// Whether `bytes` start with the `.npy` magic string.
pub fn is_npy(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Parse `.npy` bytes. `file` is used in error messages. float64 data is
/// converted to float32.
pub fn parse_npy(bytes: &[u8], file: &str) -> Result<ArrayF32> {
    let err = |reason: String| Error::Npy {
        file: file.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_NPY_BYTES {
        return Err(err(format!("larger than the cap of {MAX_NPY_BYTES} bytes")));
    }
    if !bytes.starts_with(MAGIC) {
        return Err(err("missing the \\x93NUMPY magic string".into()));
    }
    let major = *bytes
        .get(6)
        .ok_or_else(|| err("truncated preamble".into()))?;
    let (header_len, header_start) = match major {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or_else(|| err("truncated preamble".into()))?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| err("truncated preamble".into()))?;
            let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(n).unwrap_or(usize::MAX), 12)
        }
        v => return Err(err(format!("unsupported format version {v}"))),
    };
    if header_len > MAX_NPY_HEADER_BYTES {
        return Err(err(format!(
            "header of {header_len} bytes exceeds the cap of {MAX_NPY_HEADER_BYTES}"
        )));
    }
    let header = bytes
        .get(header_start..header_start + header_len)
        .ok_or_else(|| err("truncated header".into()))?;
    if !header.is_ascii() {
        return Err(err("header is not ASCII".into()));
    }
    // is_ascii checked, so this cannot fail; map anyway rather than unwrap.
    let header = std::str::from_utf8(header).map_err(|e| err(format!("header: {e}")))?;
    let h = parse_header(header).map_err(|r| err(format!("header: {r}")))?;

    let itemsize = match h.descr.as_str() {
        "<f4" => 4usize,
        "<f8" => 8usize,
        d => {
            return Err(err(format!(
                "dtype {d:?} not supported; only little-endian float32 ('<f4') and float64 ('<f8')"
            )))
        }
    };
    if h.fortran_order {
        return Err(err(
            "fortran_order = True not supported; only C order".into()
        ));
    }
    if h.shape.len() > MAX_NPY_NDIM {
        return Err(err(format!(
            "shape has {} axes, more than the cap of {MAX_NPY_NDIM}",
            h.shape.len()
        )));
    }
    let mut count: u64 = 1;
    for &d in &h.shape {
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_NPY_ELEMENTS)
            .ok_or_else(|| {
                err(format!(
                    "shape {:?} has more than the cap of {MAX_NPY_ELEMENTS} elements",
                    h.shape
                ))
            })?;
    }
    let data = &bytes[header_start + header_len..];
    let expected = count * itemsize as u64;
    if data.len() as u64 != expected {
        return Err(err(format!(
            "shape {:?} of {} needs {expected} data bytes, the file has {}",
            h.shape,
            h.descr,
            data.len()
        )));
    }
    let values: Vec<f32> = if itemsize == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect()
    };
    // count <= MAX_NPY_ELEMENTS, so every dim fits in usize.
    let shape = h.shape.iter().map(|&d| d as usize).collect();
    Ok(ArrayF32 {
        shape,
        data: values,
    })
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> std::result::Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        self.ws();
        let q = self.peek().filter(|&c| c == b'\'' || c == b'"');
        let q = q.ok_or_else(|| format!("expected a string at byte {}", self.i))?;
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(v);
            }
            if c == b'\\' {
                return Err("escapes in strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }
    fn word(&mut self) -> &[u8] {
        self.ws();
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            _ => Err("fortran_order must be True or False".into()),
        }
    }
    fn int(&mut self) -> std::result::Result<u64, String> {
        let w = self.word();
        let w = w.strip_suffix(b"L").unwrap_or(w);
        if w.is_empty() || w.len() > 19 || !w.iter().all(u8::is_ascii_digit) {
            return Err("shape entries must be non-negative integers".into());
        }
        // Only ASCII digits, at most 19 of them: fits in u64.
        std::str::from_utf8(w)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad integer in shape".into())
    }
    fn tuple(&mut self) -> std::result::Result<Vec<u64>, String> {
        self.eat(b'(')?;
        let mut v = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(b')') {
                self.i += 1;
                return Ok(v);
            }
            if v.len() > MAX_NPY_NDIM {
                return Err(format!("shape has more than {MAX_NPY_NDIM} axes"));
            }
            v.push(self.int()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b')') => {}
                _ => return Err(format!("expected ',' or ')' in shape at byte {}", self.i)),
            }
        }
    }
}

fn parse_header(s: &str) -> std::result::Result<Header, String> {
    let mut p = P {
        s: s.as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.eat(b'{')?;
    loop {
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
            break;
        }
        let key = p.string()?;
        p.eat(b':')?;
        let dup = match key.as_str() {
            "descr" => descr.replace(p.string()?).is_some(),
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            k => return Err(format!("unknown key {k:?}")),
        };
        if dup {
            return Err(format!("duplicate key {key:?}"));
        }
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {}
            _ => return Err(format!("expected ',' or '}}' at byte {}", p.i)),
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected data after the dict at byte {}", p.i));
    }
    Ok(Header {
        descr: descr.ok_or("missing key 'descr'")?,
        fortran_order: fortran.ok_or("missing key 'fortran_order'")?,
        shape: shape.ok_or("missing key 'shape'")?,
    })
}
