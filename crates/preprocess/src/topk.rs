//! Top-k selection over class scores.

use std::cmp::Ordering;

/// The `k` highest scores as `(index, score)`, highest first. Ties keep the
/// lower index first (stable); NaN ranks below every number, including
/// `-inf`. `k` larger than `probs.len()` returns all of them.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| desc_nan_last(probs[a], probs[b]));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, probs[i])).collect()
}

fn desc_nan_last(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // -0.0 == 0.0 here, so they tie and keep index order.
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}
