//! Mapping between byte offsets, `line:col` positions and dotted field paths of a TOML document, so that every
//! error can point at the field it is about.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A path segment: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// `a.b`
    Key(String),
    /// `a[3]`
    Index(usize),
}

/// Renders `[Key(a), Key(b), Index(2)]` as `a.b[2]`.
pub fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses a dotted path like `rlimits.address_space` or `allow_weaker[1]`.
pub fn parse_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.split('.').filter(|x| !x.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|x| !x.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// The span document of a TOML text (None when it does not parse).
pub struct Spans<'i> {
    root: Option<Spanned<DeTable<'i>>>,
}

impl<'i> Spans<'i> {
    /// Parses `text` for spans only.
    pub fn new(text: &'i str) -> Self {
        Spans {
            root: DeTable::parse(text).ok(),
        }
    }

    /// The span of the value at `path`; when the path does not exist, the span of its deepest existing parent
    /// key (so a missing field points at the table that should hold it).
    pub fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let root = self.root.as_ref()?;
        let mut best = None;
        let mut cur_table: Option<&DeTable<'i>> = Some(root.get_ref());
        let mut cur_array: Option<&[Spanned<DeValue<'i>>]> = None;
        for seg in path {
            let next: Option<&Spanned<DeValue<'i>>> = match seg {
                Seg::Key(k) => cur_table.and_then(|t| {
                    t.iter()
                        .find(|(key, _)| key.get_ref() == k)
                        .map(|(key, v)| {
                            best = Some(key.span());
                            v
                        })
                }),
                Seg::Index(i) => cur_array.and_then(|a| a.get(*i)),
            };
            let Some(v) = next else {
                return best;
            };
            best = Some(v.span());
            cur_table = None;
            cur_array = None;
            match v.get_ref() {
                DeValue::Table(t) => cur_table = Some(t),
                DeValue::Array(a) => cur_array = Some(&a[..]),
                _ => {}
            }
        }
        best
    }

    /// The path of the innermost key or value whose span contains `offset` (for errors of the deserializer,
    /// which carry a span but no path). Standard tables' spans cover only their header, so every entry is
    /// visited and the smallest containing span wins.
    pub fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut best: Option<(usize, Vec<Seg>)> = None;
        if let Some(root) = &self.root {
            let mut path = Vec::new();
            visit_table(root.get_ref(), &mut path, &mut |p, span| {
                let contains = span.start <= offset && offset < span.end.max(span.start + 1);
                let len = span.end.saturating_sub(span.start);
                if contains && best.as_ref().is_none_or(|(l, _)| len <= *l) {
                    best = Some((len, p.to_vec()));
                }
            });
        }
        best.map(|(_, p)| p).unwrap_or_default()
    }

    /// The path of the table or value whose span is exactly `span` (a "missing field" error points at the
    /// table that lacks it); empty for the document itself.
    pub fn path_of_span(&self, span: &Range<usize>) -> Vec<Seg> {
        let mut found = Vec::new();
        if let Some(root) = &self.root {
            let mut path = Vec::new();
            visit_table(root.get_ref(), &mut path, &mut |p, s| {
                if s == *span && found.is_empty() {
                    found = p.to_vec();
                }
            });
        }
        found
    }
}

fn visit_table(t: &DeTable<'_>, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], Range<usize>)) {
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        f(path, k.span());
        f(path, v.span());
        visit_value(v.get_ref(), path, f);
        path.pop();
    }
}

fn visit_value(v: &DeValue<'_>, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], Range<usize>)) {
    match v {
        DeValue::Table(t) => visit_table(t, path, f),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                f(path, item.span());
                visit_value(item.get_ref(), path, f);
                path.pop();
            }
        }
        _ => {}
    }
}
