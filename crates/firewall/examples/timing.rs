//! Rough timing of the firewall's stages on a model directory.

use std::time::Instant;

use caffe_sandbox_firewall::{check, inspect, parse, FirewallPolicy};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("MODEL_DIR"));
    let (p, w) = caffe_sandbox_firewall::model_files(&dir).expect("model dir");
    let p = std::fs::read(p).expect("prototxt");
    let w = std::fs::read(w.expect("caffemodel")).expect("weights");
    let pol = FirewallPolicy::default();
    for _ in 0..3 {
        let t = Instant::now();
        let _ = parse::parse_prototxt(&p, &pol);
        let t1 = t.elapsed();
        let t = Instant::now();
        let _ = caffe_sandbox_firewall::sha256_hex(&w);
        let t2 = t.elapsed();
        let t = Instant::now();
        let _ = inspect(&p, None, &pol);
        let t0 = t.elapsed();
        let t = Instant::now();
        let r = inspect(&p, Some(&w), &pol);
        let t3 = t.elapsed();
        let t = Instant::now();
        let c = check(&p, Some(&w), &pol).expect("accepted");
        let t4 = t.elapsed();
        println!(
            "parse_prototxt {t1:?}  inspect(net only) {t0:?}  sha256(weights) {t2:?}  inspect {t3:?}  check+canonical {t4:?}  accepted={} canon_w={}",
            r.accepted,
            c.canonical_weights_bytes().map_or(0, <[u8]>::len)
        );
    }
}
