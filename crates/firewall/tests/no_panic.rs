//! No panic (and no stack overflow) on arbitrary input: property tests over raw bytes, mutated
//! prototxt and random layer parameters.

mod common;

use caffe_sandbox_firewall::{check, inspect, FirewallPolicy};
use proptest::prelude::*;

const BASE: &str = r#"name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"#;

const TOKENS: &[&str] = &[
    "{",
    "}",
    "<",
    ">",
    "[",
    "]",
    ":",
    "\"",
    "#",
    "-1",
    "0",
    "2147483648",
    "4294967296",
    "-9223372036854775808",
    "layer",
    "dim",
    "type",
    "\"Python\"",
    "layers",
    "input_dim",
    "blobs",
    "[a/caffe.NetParameter]",
    "\\",
    "\n",
    "nan",
    "inf",
    "1e999",
    "group: 0",
    "stride: 0",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_prototxt_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = inspect(&bytes, None, &FirewallPolicy::default());
    }

    #[test]
    fn arbitrary_weights_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check(BASE.as_bytes(), Some(&bytes), &FirewallPolicy::default());
    }

    #[test]
    fn mutated_prototxt(edits in proptest::collection::vec((0usize..BASE.len(), 0usize..TOKENS.len(), any::<bool>()), 1..8)) {
        let mut s = BASE.to_owned();
        for (pos, tok, replace) in edits {
            let mut pos = pos.min(s.len());
            while !s.is_char_boundary(pos) { pos -= 1; }
            if replace {
                let end = (pos + TOKENS[tok].len()).min(s.len());
                let mut end = end;
                while !s.is_char_boundary(end) { end -= 1; }
                s.replace_range(pos..end, TOKENS[tok]);
            } else {
                s.insert_str(pos, TOKENS[tok]);
            }
        }
        let _ = inspect(s.as_bytes(), None, &FirewallPolicy::default());
    }

    #[test]
    fn random_layer_parameters(
        dims in proptest::collection::vec(prop_oneof![Just(-1i64), Just(0), 1i64..64, Just(i64::from(i32::MAX)), Just(1i64 << 32)], 0..6),
        kernel in prop_oneof![Just(0u32), 1u32..9, Just(u32::MAX)],
        stride in prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)],
        pad in prop_oneof![0u32..4, Just(u32::MAX)],
        dilation in prop_oneof![Just(0u32), 1u32..3, Just(u32::MAX)],
        group in prop_oneof![Just(0u32), 1u32..4],
        num_output in prop_oneof![Just(0u32), 1u32..16, Just(u32::MAX)],
        pool_kernel in prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX)],
        pool_stride in prop_oneof![Just(0u32), 1u32..3],
        axis in -6i32..6,
        deconv in any::<bool>(),
    ) {
        let dims: String = dims.iter().map(|d| format!("dim: {d} ")).collect();
        let ty = if deconv { "Deconvolution" } else { "Convolution" };
        let text = format!(r#"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "c" type: "{ty}" bottom: "data" top: "c" convolution_param {{ num_output: {num_output} kernel_size: {kernel} stride: {stride} pad: {pad} dilation: {dilation} group: {group} axis: {axis} }} }}
layer {{ name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param {{ pool: AVE kernel_size: {pool_kernel} stride: {pool_stride} }} }}
layer {{ name: "f" type: "Flatten" bottom: "p" top: "f" flatten_param {{ axis: {axis} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param {{ num_output: {num_output} axis: {axis} }} }}
layer {{ name: "s" type: "Softmax" bottom: "ip" top: "s" softmax_param {{ axis: {axis} }} }}
"#);
        let r = inspect(text.as_bytes(), None, &FirewallPolicy::default());
        if r.accepted {
            for l in &r.layers {
                for s in &l.top_shapes {
                    prop_assert!(s.iter().all(|&d| d > 0 && d <= i64::from(i32::MAX)), "{:?}", s);
                }
            }
        }
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for open in [
        "layer { ",
        "layer < ",
        "layer { [a/caffe.LayerParameter] { ",
    ] {
        let text = open.repeat(200_000);
        assert!(!inspect(text.as_bytes(), None, &FirewallPolicy::default()).accepted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_of_allowlisted_layers(
        dims in proptest::collection::vec(prop_oneof![1i64..6, Just(0), Just(-1)], 0..6),
        layers in proptest::collection::vec((0usize..16, -9i64..9, -9i64..9, -9i64..9), 1..6),
    ) {
        let dims: String = dims.iter().map(|d| format!("dim: {d} ")).collect();
        let mut text = format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{ {dims} }} }} }}\n");
        let mut bottom = "data".to_owned();
        for (i, &(ty, a, b, c)) in layers.iter().enumerate() {
            text.push_str(&common::layer_text(i, ty, &bottom, a, b, c));
            bottom = format!("l{i}");
        }
        let r = inspect(text.as_bytes(), None, &FirewallPolicy::default());
        if r.accepted {
            prop_assert!(r.inference_complete);
            let m = check(text.as_bytes(), None, &FirewallPolicy::default()).expect("accepted by check too");
            prop_assert!(!m.canonical_net_bytes().is_empty());
        }
    }
}
