//! Shared helpers for the integration tests: locating external artefacts.

#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `path` if it exists; otherwise the test fails loudly (these tests need the real Caffe and model; they are
/// never skipped, locally or in CI).
pub fn require(path: PathBuf, what: &str, how: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {} ({how})",
        path.display()
    );
    path
}

/// The open_nsfw model directory (`$CAFFE_SANDBOX_MODELS/open_nsfw` or `<workspace>/.cache/models/open_nsfw`).
pub fn open_nsfw_dir() -> PathBuf {
    let base = std::env::var_os("CAFFE_SANDBOX_MODELS")
        .map_or_else(|| workspace().join(".cache/models"), PathBuf::from);
    require(
        base.join("open_nsfw"),
        "open_nsfw model",
        "run scripts/setup or set CAFFE_SANDBOX_MODELS",
    )
}

/// One random layer of an allowlisted type with random parameters, reading `bottom`.
pub fn layer_text(i: usize, ty: usize, bottom: &str, a: i64, b: i64, c: i64) -> String {
    let name = format!("l{i}");
    let (t, params) = match ty {
        0 => ("Convolution", format!("convolution_param {{ num_output: {} kernel_size: {} stride: {} pad: {} group: {} axis: {} }}", a.rem_euclid(5), b.rem_euclid(4), c.rem_euclid(3), a.rem_euclid(2), b.rem_euclid(3), c % 3)),
        1 => ("Deconvolution", format!("convolution_param {{ num_output: {} kernel_size: {} stride: {} }}", a.rem_euclid(5), b.rem_euclid(4), c.rem_euclid(3))),
        2 => ("Pooling", format!("pooling_param {{ pool: {} kernel_size: {} stride: {} pad: {} global_pooling: {} }}", ["MAX", "AVE", "STOCHASTIC"][a.rem_euclid(3) as usize], b.rem_euclid(4), c.rem_euclid(3), a.rem_euclid(2), c % 5 == 0)),
        3 => ("InnerProduct", format!("inner_product_param {{ num_output: {} axis: {} transpose: {} }}", a.rem_euclid(5), b % 4, c % 2 == 0)),
        4 => ("BatchNorm", String::new()),
        5 => ("Scale", format!("scale_param {{ axis: {} num_axes: {} bias_term: true }}", a % 4, b % 4)),
        6 => ("Softmax", format!("softmax_param {{ axis: {} }}", a % 5)),
        7 => ("LRN", format!("lrn_param {{ local_size: {} norm_region: {} }}", a.rem_euclid(8), ["ACROSS_CHANNELS", "WITHIN_CHANNEL"][b.rem_euclid(2) as usize])),
        8 => ("Flatten", format!("flatten_param {{ axis: {} end_axis: {} }}", a % 5, b % 5)),
        9 => ("Reshape", format!("reshape_param {{ shape {{ dim: {} dim: {} }} axis: {} num_axes: {} }}", a % 4, b % 4, c % 3, a % 3)),
        10 => ("Slice", format!("slice_param {{ axis: {} slice_point: {} }}", a % 4, b.rem_euclid(4))),
        11 => ("Concat", format!("concat_param {{ axis: {} }}", a % 4)),
        12 => ("Eltwise", format!("eltwise_param {{ operation: {} }}", ["PROD", "SUM", "MAX"][a.rem_euclid(3) as usize])),
        13 => ("Split", String::new()),
        14 => ("Dropout", format!("dropout_param {{ dropout_ratio: {} }}", a as f32 / 4.0)),
        _ => (["ReLU", "Sigmoid", "TanH", "Power", "AbsVal", "BNLL", "ELU"][(a.rem_euclid(7)) as usize], String::new()),
    };
    let (bottoms, tops) = match t {
        "Slice" | "Split" => (
            format!("bottom: \"{bottom}\""),
            format!("top: \"{name}\" top: \"{name}_b\""),
        ),
        "Concat" | "Eltwise" => (
            format!("bottom: \"{bottom}\" bottom: \"{bottom}\""),
            format!("top: \"{name}\""),
        ),
        _ => (format!("bottom: \"{bottom}\""), format!("top: \"{name}\"")),
    };
    format!("layer {{ name: \"{name}\" type: \"{t}\" {bottoms} {tops} {params} }}\n")
}

/// A deterministic pseudo-random chain of allowlisted layers after an Input (for comparing with
/// the real Caffe).
pub fn random_net(seed: u64) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |m: i64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % m as u64) as i64
    };
    let naxes = 2 + next(3);
    let dims: String = (0..naxes)
        .map(|i| format!("dim: {} ", if i == 0 { 1 + next(2) } else { 1 + next(9) }))
        .collect();
    let mut text = format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{ {dims} }} }} }}\n");
    let mut bottom = "data".to_owned();
    for i in 0..(1 + next(5)) as usize {
        let (ty, a, b, c) = (next(16) as usize, next(9), next(9), next(9));
        text.push_str(&layer_text(i, ty, &bottom, a, b, c));
        bottom = format!("l{i}");
    }
    text
}
