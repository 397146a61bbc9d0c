//! The firewall's checks, one module per family.

pub mod fields;
pub mod layers;
pub mod legacy;

/// A layer's display label: its name, or `#index` when unnamed or empty.
pub fn layer_label(name: Option<String>, index: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => n,
        _ => format!("#{index}"),
    }
}
