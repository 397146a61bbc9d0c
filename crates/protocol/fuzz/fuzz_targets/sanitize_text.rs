//! sanitize_text: never longer, no controls but \n/\t, no ESC, idempotent.
#![no_main]

use caffe_sandbox_protocol::sanitize_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let out = sanitize_text(text);
    assert!(out.len() <= text.len());
    assert!(out.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
    assert_eq!(sanitize_text(&out), out);
});
