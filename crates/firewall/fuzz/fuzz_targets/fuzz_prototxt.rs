//! Arbitrary bytes as a deploy prototxt: the text parser and every check must not panic.
#![no_main]

use caffe_sandbox_firewall::{check, FirewallPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = FirewallPolicy::default();
    if let Ok(m) = check(data, None, &policy) {
        // What was checked is what runs: the canonical bytes re-check to an accepted model.
        let _ = m.canonical_net_bytes();
    }
});
