//! `canonicalize MODEL_DIR OUT_DIR`: check a model and write what Caffe should receive:
//! `net.binaryproto` (canonical net), `net.prototxt` (the same, as text, for Caffe's CLI tools)
//! and `weights.caffemodel` (canonical weights).

use caffe_sandbox_firewall::{check_dir, proto, FirewallPolicy};
use prost::Message;
use prost_reflect::DynamicMessage;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out] = args.as_slice() else {
        eprintln!("usage: canonicalize MODEL_DIR OUT_DIR");
        std::process::exit(2);
    };
    let model = check_dir(dir.as_ref(), &FirewallPolicy::default()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out).expect("out dir");
    let net = model.canonical_net_bytes();
    std::fs::write(out.join("net.binaryproto"), &net).expect("write");
    let text = DynamicMessage::decode(proto::net_parameter(), net.as_slice())
        .expect("decode")
        .to_text_format();
    std::fs::write(out.join("net.prototxt"), text).expect("write");
    if let Some(w) = model.canonical_weights_bytes() {
        std::fs::write(out.join("weights.caffemodel"), w).expect("write");
    }
    let _ = model.net().encoded_len();
}
