//! Replays the committed cargo-fuzz corpora (crates/firewall/fuzz/corpus) through the same properties as the
//! fuzz targets, on the stable toolchain, in every test run: no input may panic, and accepted weights must
//! re-check to identical canonical bytes. (Running the fuzzers themselves needs nightly; see fuzz/README.md.)
use caffe_sandbox_firewall::{check, FirewallPolicy};
use std::path::PathBuf;

const NET: &str = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 2 } }
"#;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the fuzz corpus is committed with the crate)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() > 50,
        "corpus {} has only {} files",
        dir.display(),
        files.len()
    );
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn prototxt_corpus_never_panics_and_accepted_nets_recheck() {
    let policy = FirewallPolicy::default();
    let mut accepted = 0;
    for data in corpus("fuzz_prototxt") {
        if let Ok(m) = check(&data, None, &policy) {
            accepted += 1;
            let _ = m.canonical_net_bytes();
        }
    }
    eprintln!("prototxt corpus: {accepted} accepted");
}

#[test]
fn caffemodel_corpus_never_panics_and_canonical_weights_are_stable() {
    let policy = FirewallPolicy::default();
    for data in corpus("fuzz_caffemodel") {
        if let Ok(m) = check(NET.as_bytes(), Some(&data), &policy) {
            let w = m.canonical_weights_bytes().expect("weights given").to_vec();
            let again =
                check(NET.as_bytes(), Some(&w), &policy).expect("canonical weights re-check");
            assert_eq!(again.canonical_weights_bytes(), Some(w.as_slice()));
        }
    }
}
