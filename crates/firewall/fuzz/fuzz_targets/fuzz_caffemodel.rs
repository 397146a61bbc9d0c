//! Arbitrary bytes as the caffemodel of a small fixed net: the wire walk, the shape matching and
//! the canonical encoding must not panic, and canonical weights must re-check identically.
#![no_main]

use caffe_sandbox_firewall::{check, FirewallPolicy};
use libfuzzer_sys::fuzz_target;

const NET: &str = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 2 } }
"#;

fuzz_target!(|data: &[u8]| {
    let policy = FirewallPolicy::default();
    if let Ok(m) = check(NET.as_bytes(), Some(data), &policy) {
        let w = m.canonical_weights_bytes().expect("weights given").to_vec();
        let again = check(NET.as_bytes(), Some(&w), &policy).expect("canonical weights re-check");
        assert_eq!(again.canonical_weights_bytes(), Some(w.as_slice()));
    }
});
