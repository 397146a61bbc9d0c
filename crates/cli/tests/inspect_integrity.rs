//! `caffe-sandbox inspect` (the firewall's view, no Caffe) and model integrity (sha256 manifest, minisign).
mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// A world-readable copy of open_nsfw with a manifest pinning `weights_digest` for the weights.
fn pinned_copy(tag: &str, weights_digest: Option<&str>) -> TempDir {
    let src = open_nsfw();
    let d = tmpdir(tag);
    for f in [
        "deploy.prototxt",
        "resnet_50_1by2_nsfw.caffemodel",
        "model.toml",
        "labels.txt",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
        set_mode(&d.join(f), 0o644);
    }
    let w = weights_digest
        .map(str::to_string)
        .unwrap_or_else(|| sha(&d.join("resnet_50_1by2_nsfw.caffemodel")));
    std::fs::write(
        d.join("manifest.toml"),
        format!(
            "[files]\n\"deploy.prototxt\" = \"{}\"\n\"resnet_50_1by2_nsfw.caffemodel\" = \"{w}\"\n",
            sha(&d.join("deploy.prototxt"))
        ),
    )
    .unwrap();
    set_mode(&d.join("manifest.toml"), 0o644);
    d
}

#[test]
fn inspect_open_nsfw_reports_shapes_params_and_accepts() {
    let out = run(
        As::Invoker,
        &[
            "inspect".as_ref(),
            "--json".as_ref(),
            open_nsfw().as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["accepted"], true, "{v:#}");
    assert_eq!(v["outputs"][0][0], "prob");
    assert_eq!(v["outputs"][0][1], serde_json::json!([1, 2]));
    let params = v["total_params"].as_u64().unwrap();
    assert!((5_000_000..7_000_000).contains(&params), "{params}");
}

#[test]
fn inspect_refuses_a_python_layer_naming_layer_and_reason() {
    let d = model_dir(
        "py",
        r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "evil" type: "Python" bottom: "data" top: "x" python_param { module: "pwn" layer: "L" } }
"#,
        b"",
    );
    let out = run(
        As::Invoker,
        &["inspect".as_ref(), "--json".as_ref(), d.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["accepted"], false);
    let findings = serde_json::to_string(&v["findings"]).unwrap();
    assert!(
        findings.contains("evil") && findings.contains("Python"),
        "{findings}"
    );
}

#[test]
fn a_pinned_model_runs_and_a_mismatching_digest_is_refused_with_both_digests() {
    let img = sample("chelsea.png");
    let good = pinned_copy("pinned-ok", None);
    let out = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--manifest".as_ref(),
            "--model".as_ref(),
            good.as_os_str(),
            img.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let bad = pinned_copy("pinned-bad", Some(&"ab".repeat(32)));
    let out = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--manifest".as_ref(),
            "--model".as_ref(),
            bad.as_os_str(),
            img.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resnet_50_1by2_nsfw.caffemodel") && err.contains(&"ab".repeat(32)),
        "{err}"
    );
    assert!(
        err.contains("74b7c0374425c2b324f73b134f8a7254eab9bbddc9e452a22d934b8c17015ad2"),
        "{err}"
    );
}

#[test]
fn a_signed_manifest_is_verified_with_the_trusted_key_and_tampering_is_refused() {
    let img = sample("chelsea.png");
    let d = pinned_copy("signed", None);
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let manifest = std::fs::read(d.join("manifest.toml")).unwrap();
    let sig = minisign::sign(
        Some(&kp.pk),
        &kp.sk,
        std::io::Cursor::new(&manifest),
        None,
        None,
    )
    .unwrap()
    .into_string();
    std::fs::write(d.join("manifest.toml.minisig"), sig).unwrap();
    set_mode(&d.join("manifest.toml.minisig"), 0o644);
    let key_dir = tmpdir("key");
    let key = key_dir.join("minisign.pub");
    std::fs::write(&key, kp.pk.to_box().unwrap().into_string()).unwrap();
    set_mode(&key, 0o644);
    let args = |d: &Path| {
        run(
            As::Invoker,
            &[
                "infer".as_ref(),
                "--trusted-key".as_ref(),
                key.as_os_str(),
                "--model".as_ref(),
                d.as_os_str(),
                img.as_os_str(),
            ],
        )
    };
    let out = args(&d);
    assert!(out.status.success(), "{}", text(&out));
    // Tamper: re-pin a different (but self-consistent) prototxt digest without re-signing.
    let mut text_m = String::from_utf8(manifest).unwrap();
    text_m.push_str("# tampered\n");
    std::fs::write(d.join("manifest.toml"), text_m).unwrap();
    let out = args(&d);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("minisig"),
        "{}",
        text(&out)
    );
}
