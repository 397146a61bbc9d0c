//! The real libcaffe driven in-process through the shim: the reference the sandboxed path is compared with.
use caffe_sandbox_worker::engine::{self, Net, NetFormat};
use std::path::PathBuf;

extern "C" fn fatal(msg: *const std::ffi::c_char, len: usize) {
    // SAFETY: the shim passes a buffer of `len` bytes.
    let text = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    eprintln!("CHECK failed: {}", String::from_utf8_lossy(text));
    std::process::abort();
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("CAFFE_SANDBOX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"))
        .join("open_nsfw");
    assert!(
        dir.join("resnet_50_1by2_nsfw.caffemodel").exists(),
        "open_nsfw is missing at {} — run scripts/setup (this test needs the real model)",
        dir.display()
    );
    dir
}

fn load() -> Net {
    engine::init(1, fatal).unwrap();
    let dir = model_dir();
    let net = std::fs::read(dir.join("deploy.prototxt")).unwrap();
    let weights = std::fs::read(dir.join("resnet_50_1by2_nsfw.caffemodel")).unwrap();
    Net::new(&net, NetFormat::Text, Some(&weights)).unwrap()
}

#[test]
fn open_nsfw_constant_half_input_matches_reference_probabilities() {
    let mut net = load();
    assert_eq!(net.input_names(), vec!["data"]);
    assert_eq!(net.output_names(), vec!["prob"]);
    assert_eq!(net.blob_shape("data").unwrap(), vec![1, 3, 224, 224]);
    let input = vec![0.5f32; 3 * 224 * 224];
    net.set_input("data", &[1, 3, 224, 224], &input).unwrap();
    net.forward().unwrap();
    let (shape, prob) = net.blob("prob").unwrap();
    assert_eq!(shape, vec![1, 2]);
    assert!((prob[0] - 0.712694).abs() < 1e-5, "prob = {prob:?}");
    assert!((prob[1] - 0.287306).abs() < 1e-5, "prob = {prob:?}");
}

#[test]
fn bad_text_is_an_error_not_an_abort() {
    engine::init(1, fatal).unwrap();
    let err = Net::new(b"layer { this is not prototxt", NetFormat::Text, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("text format: 1:"), "{err}");
    let err = Net::new(b"\xff\xff\xff", NetFormat::Binary, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("binary"), "{err}");
}

#[test]
fn wrong_input_length_is_rejected_before_caffe() {
    let mut net = load();
    let err = net
        .set_input("data", &[1, 3, 224, 224], &[0.0; 10])
        .unwrap_err();
    assert!(err.to_string().contains("150528 values, 10 given"), "{err}");
    let err = net.set_input("nope", &[1], &[0.0]).unwrap_err();
    assert!(
        err.to_string().contains("no input blob named 'nope'"),
        "{err}"
    );
}
