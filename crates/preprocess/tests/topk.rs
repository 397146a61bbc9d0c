//! top_k ordering.

use caffe_sandbox_preprocess::top_k;

#[test]
fn highest_first() {
    assert_eq!(top_k(&[0.1, 0.7, 0.2], 2), vec![(1, 0.7), (2, 0.2)]);
}

#[test]
fn ties_keep_index_order() {
    assert_eq!(
        top_k(&[0.25, 0.5, 0.25, 0.5, 0.0, -0.0], 6),
        vec![
            (1, 0.5),
            (3, 0.5),
            (0, 0.25),
            (2, 0.25),
            (4, 0.0),
            (5, -0.0)
        ]
    );
    // -0.0 and 0.0 tie: index order, whichever sign comes first.
    let r = top_k(&[-0.0, 0.0], 2);
    assert_eq!((r[0].0, r[1].0), (0, 1));
}

#[test]
fn nan_is_lowest() {
    let r = top_k(&[f32::NAN, 0.1, f32::NEG_INFINITY, f32::NAN, 0.9], 5);
    let idx: Vec<usize> = r.iter().map(|p| p.0).collect();
    assert_eq!(idx, vec![4, 1, 2, 0, 3]);
    assert!(r[3].1.is_nan() && r[4].1.is_nan());
}

#[test]
fn k_bounds() {
    assert_eq!(top_k(&[0.3, 0.6], 10), vec![(1, 0.6), (0, 0.3)]);
    assert!(top_k(&[0.3], 0).is_empty());
    assert!(top_k(&[], 3).is_empty());
}
