//! Labels file: UTF-8, one label per line.

use std::path::Path;

use crate::error::{read_capped, Error, Result};

/// Largest labels file accepted.
pub const MAX_LABELS_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest number of labels accepted.
pub const MAX_LABELS: usize = 100_000;
/// Longest line accepted, in bytes (without the line ending).
pub const MAX_LABEL_LINE_BYTES: usize = 1024;

/// Read a labels file, refusing files over [`MAX_LABELS_FILE_BYTES`].
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let bytes = read_capped(path, MAX_LABELS_FILE_BYTES)?;
    parse_labels(&bytes, &path.display().to_string())
}

/// Parse labels: one per line (`\n` or `\r\n`; a final newline does not add
/// a label), strictly UTF-8, at most [`MAX_LABELS`] lines of at most
/// [`MAX_LABEL_LINE_BYTES`] bytes. A leading BOM, control characters and
/// bidirectional-override characters are removed, then surrounding
/// whitespace is trimmed. Empty lines are kept (as empty labels) so indices
/// stay aligned with the net's classes.
pub fn parse_labels(bytes: &[u8], file: &str) -> Result<Vec<String>> {
    let err = |reason: String| Error::Labels {
        file: file.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_LABELS_FILE_BYTES {
        return Err(err(format!(
            "larger than the cap of {MAX_LABELS_FILE_BYTES} bytes"
        )));
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        if n > MAX_LABELS {
            return Err(err(format!("more than the cap of {MAX_LABELS} lines")));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LABEL_LINE_BYTES {
            return Err(err(format!(
                "line {n}: {} bytes, more than the cap of {MAX_LABEL_LINE_BYTES}",
                line.len()
            )));
        }
        let s = std::str::from_utf8(line).map_err(|e| err(format!("line {n}: not UTF-8: {e}")))?;
        let s = if n == 1 {
            s.strip_prefix('\u{feff}').unwrap_or(s)
        } else {
            s
        };
        let clean: String = s.chars().filter(|&c| !is_stripped(c)).collect();
        out.push(clean.trim().to_owned());
    }
    Ok(out)
}

fn is_stripped(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
