//! "What was checked is what runs", against the real Caffe: the canonical net and weights of
//! open_nsfw load in Debian's Caffe 1.0 (`caffe test`) and give exactly the outputs of the
//! original files.

mod common;

use std::path::Path;
use std::process::Command;

use caffe_sandbox_firewall::{check_dir, model_files, proto, FirewallPolicy};
use prost_reflect::DynamicMessage;

fn caffe_outputs(prefix: &Path, model: &Path, weights: &Path) -> Vec<String> {
    let lib = format!("{0}/usr/lib/x86_64-linux-gnu:{0}/usr/lib", prefix.display());
    let out = Command::new(prefix.join("usr/bin/caffe"))
        .args(["test", "-iterations", "1", "-model"])
        .arg(model)
        .arg("-weights")
        .arg(weights)
        .env("LD_LIBRARY_PATH", lib)
        .env("GLOG_logtostderr", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .expect("run caffe");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "caffe failed:\n{log}");
    log.lines()
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m))
        .filter(|m| m.contains(" = "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn canonical_open_nsfw_runs_identically_in_real_caffe() {
    let prefix = std::env::var_os("CAFFE_PREFIX").map_or_else(
        || common::workspace().join(".cache/caffe/prefix"),
        Into::into,
    );
    let Some(prefix) = common::require(
        prefix,
        "Caffe prefix",
        "run scripts/setup or set CAFFE_PREFIX",
    ) else {
        return;
    };
    if common::require(
        prefix.join("usr/bin/caffe"),
        "caffe tool",
        "run scripts/setup",
    )
    .is_none()
    {
        return;
    }
    let Some(dir) = common::open_nsfw_dir() else {
        return;
    };
    let model = check_dir(&dir, &FirewallPolicy::default()).expect("open_nsfw accepted");
    let tmp = std::env::temp_dir().join(format!("fw-real-caffe-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    // Caffe's CLI reads text; render the canonical binary net as text for it.
    let net = DynamicMessage::decode(
        proto::net_parameter(),
        model.canonical_net_bytes().as_slice(),
    )
    .expect("decode");
    std::fs::write(tmp.join("net.prototxt"), net.to_text_format()).expect("write");
    std::fs::write(
        tmp.join("weights.caffemodel"),
        model.canonical_weights_bytes().expect("weights"),
    )
    .expect("write");
    let (p, w) = model_files(&dir).expect("files");
    let original = caffe_outputs(&prefix, &p, &w.expect("caffemodel"));
    let canonical = caffe_outputs(
        &prefix,
        &tmp.join("net.prototxt"),
        &tmp.join("weights.caffemodel"),
    );
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        original.iter().any(|l| l.contains("prob = ")),
        "{original:?}"
    );
    assert_eq!(original, canonical);
}
