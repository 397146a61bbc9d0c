//! Text from the worker: [`sanitize_text`] for free text, name validation for
//! blob and tensor names.
//!
//! Policy:
//! - Strings on the wire must be valid UTF-8; invalid UTF-8 is *rejected*
//!   (not lossily converted). The worker is Rust code that builds `String`s,
//!   so invalid UTF-8 can only come from a broken or compromised worker.
//! - Free text (`Error.message`, `Error.layer`, `Hello.caffe_version`) is at
//!   most [`crate::MAX_TEXT_LEN`] bytes and is passed through
//!   [`sanitize_text`] by the decoder, so what callers see is safe to print.
//! - Names (blob/tensor names) are at most [`crate::MAX_NAME_LEN`] bytes and
//!   must be non-empty and free of the characters [`sanitize_text`] would
//!   remove (and of `\n`/`\t`); otherwise the message is rejected. Names are
//!   identifiers, so they are never silently altered.

use crate::error::{ProtocolError, Result};

/// Removes control characters and terminal escape sequences from `text`,
/// keeping `\n` and `\t`.
///
/// Removed:
/// - ANSI/ECMA-48 escape sequences introduced by ESC (`\x1b`): CSI
///   (`ESC [ … final`), OSC/DCS/SOS/PM/APC strings (`ESC ] … BEL|ST`,
///   `ESC P`, `ESC X`, `ESC ^`, `ESC _`), and two-character / nF escapes;
/// - their 8-bit C1 forms (U+009B CSI, U+009D OSC, U+0090 DCS, …);
/// - every other C0/C1 control character and DEL, including `\r` (which can
///   overwrite what a log line appears to say);
/// - Unicode bidirectional formatting characters (U+061C, U+200E, U+200F,
///   U+202A–U+202E, U+2066–U+2069) and U+2028/U+2029 line/paragraph
///   separators, which can make a line render differently from its bytes.
///
/// An unterminated string sequence (e.g. OSC without BEL/ST) swallows the
/// rest of the text, as a terminal would. The output is never longer than
/// the input.
pub fn sanitize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => skip_after_esc(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if is_unsafe_char(c) => {}
            c => out.push(c),
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn in_range(c: Option<&char>, lo: char, hi: char) -> bool {
    matches!(c, Some(&c) if (lo..=hi).contains(&c))
}

/// ESC has been consumed; skip the rest of the sequence it introduces.
fn skip_after_esc(chars: &mut Chars<'_>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_string(chars);
        }
        // nF escape: intermediates 0x20..=0x2F then a final byte.
        c if in_range(c, '\u{20}', '\u{2f}') => {
            while in_range(chars.peek(), '\u{20}', '\u{2f}') {
                chars.next();
            }
            if in_range(chars.peek(), '\u{30}', '\u{7e}') {
                chars.next();
            }
        }
        // Fp / Fe / Fs two-character escapes.
        c if in_range(c, '\u{30}', '\u{7e}') => {
            chars.next();
        }
        // A lone ESC (or ESC before a non-ASCII char): drop the ESC only.
        _ => {}
    }
}

/// CSI introducer consumed: parameters 0x30..=0x3F, intermediates
/// 0x20..=0x2F, one final byte 0x40..=0x7E. Stops at anything else.
fn skip_csi(chars: &mut Chars<'_>) {
    while in_range(chars.peek(), '\u{20}', '\u{3f}') {
        chars.next();
    }
    if in_range(chars.peek(), '\u{40}', '\u{7e}') {
        chars.next();
    }
}

/// String introducer consumed: skip to BEL or ST (`ESC \` or U+009C).
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// Characters never allowed through: controls (Cc, incl. `\r`, DEL, C1),
/// bidi formatting characters and line/paragraph separators.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Checks a blob/tensor name: non-empty, at most `max` bytes, no unsafe
/// characters (not even `\n`/`\t`). `field` names it in the error.
pub(crate) fn validate_name(field: &str, name: &str, max: usize) -> Result<()> {
    let invalid = |reason| ProtocolError::InvalidName {
        field: field.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > max {
        return Err(ProtocolError::TooLong {
            field: field.to_owned(),
            len: name.len() as u64,
            max,
        });
    }
    if name.chars().any(is_unsafe_char) {
        return Err(invalid(
            "contains control, escape or bidirectional-formatting characters",
        ));
    }
    Ok(())
}

/// A name made safe and short for use inside an error message.
pub(crate) fn display_name(name: &str) -> String {
    const MAX_CHARS: usize = 64;
    let clean: String = sanitize_text(name)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    if clean.chars().count() > MAX_CHARS {
        let mut s: String = clean.chars().take(MAX_CHARS).collect();
        s.push('…');
        s
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_text_newlines_and_tabs() {
        let s = "layer conv1:\n\tbad shape (1, 3, 224, 224) — ünïcode ok";
        assert_eq!(sanitize_text(s), s);
    }

    #[test]
    fn strips_csi_sgr_and_cursor_moves() {
        assert_eq!(sanitize_text("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize_text("a\x1b[2J\x1b[1;1Hb"), "ab");
        assert_eq!(sanitize_text("a\x1b[?25lb"), "ab");
    }

    #[test]
    fn strips_osc_title_and_hyperlinks() {
        assert_eq!(sanitize_text("x\x1b]0;pwned\x07y"), "xy");
        assert_eq!(
            sanitize_text("\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\"),
            "click"
        );
        // unterminated OSC swallows the rest
        assert_eq!(sanitize_text("ok\x1b]0;title forever"), "ok");
    }

    #[test]
    fn strips_dcs_and_two_char_escapes() {
        assert_eq!(sanitize_text("a\x1bPq#0;2;0;0;0\x1b\\b"), "ab");
        assert_eq!(sanitize_text("a\x1bcb"), "ab"); // RIS (reset)
        assert_eq!(sanitize_text("a\x1b(Bb"), "ab"); // nF charset select
        assert_eq!(sanitize_text("a\x1b"), "a");
    }

    #[test]
    fn strips_c1_forms_and_controls() {
        assert_eq!(sanitize_text("a\u{9b}31mb"), "ab");
        assert_eq!(sanitize_text("a\u{9d}0;t\u{9c}b"), "ab");
        assert_eq!(sanitize_text("a\rb\x08c\x7fd\x00e\x07f"), "abcdef");
    }

    #[test]
    fn strips_bidi_overrides() {
        assert_eq!(sanitize_text("abc\u{202e}fed\u{202c}"), "abcfed");
        assert_eq!(sanitize_text("a\u{2066}b\u{2069}\u{2028}c"), "abc");
    }

    #[test]
    fn names_are_validated_not_altered() {
        assert!(validate_name("n", "prob", 256).is_ok());
        assert!(validate_name("n", "conv1/7x7_s2", 256).is_ok());
        assert!(matches!(
            validate_name("n", "", 256),
            Err(ProtocolError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("n", "a\x1b[31m", 256),
            Err(ProtocolError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("n", "a\nb", 256),
            Err(ProtocolError::InvalidName { .. })
        ));
        let long = "x".repeat(257);
        let err = validate_name("output name", &long, 256).unwrap_err();
        assert_eq!(
            err.to_string(),
            "output name: length 257 exceeds the limit of 256 bytes"
        );
    }

    #[test]
    fn display_name_is_short_and_clean() {
        assert_eq!(display_name("a\x1b[31mb\nc"), "ab c");
        let d = display_name(&"y".repeat(500));
        assert_eq!(d.chars().count(), 65);
    }
}
