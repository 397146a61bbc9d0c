//! Bounded parsing of the deploy prototxt (protobuf text format) into Caffe's `NetParameter`.
//!
//! prost-reflect's text parser is recursive and has no depth limit, and it expands
//! `[type.googleapis.com/caffe.X] { ... }` names into any message of the pool, so nesting is not
//! bounded by the schema. [`prescan_depth`] therefore counts `{`/`<` nesting outside strings and
//! comments before the parser runs.

use prost::Message;
use prost_reflect::DynamicMessage;

use crate::finding::{Finding, FindingCode};
use crate::policy::FirewallPolicy;
use crate::proto::{caffe::NetParameter, net_parameter};

/// The parsed net: the reflective message (for schema-generic checks) and the typed one.
pub struct ParsedNet {
    /// Reflective view, used by field-generic checks.
    pub dynamic: DynamicMessage,
    /// Typed view, used by the layer checks and re-encoded canonically.
    pub net: NetParameter,
}

/// Maximum `{`/`<` nesting depth of protobuf text, ignoring strings and `#` comments.
/// Returns `Err(offset)` at the first byte where `limit` is exceeded.
pub fn prescan_depth(text: &[u8], limit: usize) -> Result<usize, usize> {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut i = 0usize;
    while i < text.len() {
        match text[i] {
            b'#' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < text.len() && text[i] != q && text[i] != b'\n' {
                    if text[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' | b'<' => {
                depth += 1;
                max = max.max(depth);
                if depth > limit {
                    return Err(i);
                }
            }
            b'}' | b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(max)
}

/// Parse a deploy prototxt under the policy's caps. Errors are findings.
pub fn parse_prototxt(bytes: &[u8], policy: &FirewallPolicy) -> Result<ParsedNet, Finding> {
    if bytes.len() > policy.max_prototxt_bytes {
        return Err(Finding::error(
            FindingCode::InputTooLarge,
            format!(
                "prototxt is {} bytes, limit {}",
                bytes.len(),
                policy.max_prototxt_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Finding::error(
            FindingCode::ParseError,
            format!("prototxt is not UTF-8: {e}"),
        )
    })?;
    if let Err(at) = prescan_depth(bytes, policy.max_text_depth) {
        return Err(Finding::error(
            FindingCode::ParseError,
            format!("nesting deeper than {} at byte {at}", policy.max_text_depth),
        ));
    }
    let dynamic = DynamicMessage::parse_text_format(net_parameter(), text)
        .map_err(|e| Finding::error(FindingCode::ParseError, format!("prototxt: {e}")))?;
    // The typed LayerParameter is ~3 KB: cap the count before materialising it.
    for field in ["layer", "layers"] {
        let n = dynamic
            .get_field_by_name(field)
            .and_then(|v| v.as_list().map(<[_]>::len))
            .unwrap_or(0);
        if n > policy.max_layers {
            return Err(Finding::error(
                FindingCode::LimitExceeded,
                format!("{n} `{field}` entries, limit {}", policy.max_layers),
            )
            .at_field(field));
        }
    }
    let net = NetParameter::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
        Finding::error(
            FindingCode::ParseError,
            format!("re-decoding parsed net: {e}"),
        )
    })?;
    Ok(ParsedNet { dynamic, net })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_strings_and_comments() {
        assert_eq!(
            prescan_depth(b"a { b: \"{{{{\" # {{{{\n c < d {} > }", 8),
            Ok(3)
        );
        assert_eq!(prescan_depth(b"a { b: '\\'{{' }", 8), Ok(1));
        assert_eq!(prescan_depth(&b"{".repeat(100), 32), Err(32));
    }

    #[test]
    fn layer_count_is_capped_before_typed_decode() {
        let many = "layer {} ".repeat(10_000);
        let f = parse_prototxt(many.as_bytes(), &FirewallPolicy::default())
            .err()
            .unwrap();
        assert_eq!(f.code, FindingCode::LimitExceeded);
    }

    #[test]
    fn deep_any_nesting_is_refused_not_overflowing() {
        let deep = "layer { ".repeat(100_000);
        let f = parse_prototxt(deep.as_bytes(), &FirewallPolicy::default())
            .err()
            .unwrap();
        assert_eq!(f.code, FindingCode::ParseError);
    }
}
