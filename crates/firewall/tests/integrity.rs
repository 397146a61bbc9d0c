//! Manifest digests and minisign signatures.

use caffe_sandbox_firewall::integrity::{verify_model_dir, verify_signature, Manifest};
use caffe_sandbox_firewall::FirewallError;

fn keypair() -> (minisign::KeyPair, String) {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
    let pk = kp.pk.to_base64();
    (kp, pk)
}

fn sign(kp: &minisign::KeyPair, data: &[u8]) -> String {
    minisign::sign(Some(&kp.pk), &kp.sk, std::io::Cursor::new(data), None, None)
        .expect("sign")
        .into_string()
}

#[test]
fn digest_mismatch_names_file_expected_and_actual() {
    let m = Manifest::for_files([("deploy.prototxt", b"abc".as_slice())]);
    m.verify_bytes("deploy.prototxt", b"abc").expect("matches");
    match m.verify_bytes("deploy.prototxt", b"abd") {
        Err(e @ FirewallError::DigestMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("deploy.prototxt"));
            assert!(
                text.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
                "{text}"
            );
            assert!(text.contains(&caffe_sandbox_firewall::sha256_hex(b"abd")));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(matches!(
        m.verify_bytes("other", b"abc"),
        Err(FirewallError::Manifest(_))
    ));
}

#[test]
fn manifest_rejects_path_names_and_bad_digests() {
    assert!(Manifest::from_toml("[files]\n\"../x\" = \"00\"\n").is_err());
    assert!(Manifest::from_toml("[files]\n\"a\" = \"zz\"\n").is_err());
    assert!(Manifest::from_toml("[files]\n\"a\" = \"00\"\n[extra]\n").is_err());
    let m = Manifest::for_files([("a", b"1".as_slice())]);
    assert_eq!(Manifest::from_toml(&m.to_toml()).expect("round trip"), m);
}

#[test]
fn signed_model_directory_verifies_and_tampering_is_detected() {
    let dir = std::env::temp_dir().join(format!("fw-integrity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    std::fs::write(dir.join("deploy.prototxt"), b"name: \"x\"").expect("write");
    std::fs::write(dir.join("w.caffemodel"), b"\x0a\x01x").expect("write");
    let m = Manifest::for_files([
        ("deploy.prototxt", b"name: \"x\"".as_slice()),
        ("w.caffemodel", b"\x0a\x01x".as_slice()),
    ]);
    let text = m.to_toml();
    std::fs::write(dir.join("manifest.toml"), &text).expect("write");
    let (kp, pk) = keypair();
    std::fs::write(
        dir.join("manifest.toml.minisig"),
        sign(&kp, text.as_bytes()),
    )
    .expect("write");

    assert_eq!(verify_model_dir(&dir, Some(&pk)).expect("verifies"), m);
    // A different key is refused.
    let (_, other) = keypair();
    assert!(matches!(
        verify_model_dir(&dir, Some(&other)),
        Err(FirewallError::Signature(_))
    ));
    // A tampered file is refused with its digest.
    std::fs::write(dir.join("w.caffemodel"), b"\x0a\x01y").expect("write");
    assert!(
        matches!(verify_model_dir(&dir, Some(&pk)), Err(FirewallError::DigestMismatch { ref file, .. }) if file == "w.caffemodel")
    );
    // A tampered manifest is refused by the signature.
    std::fs::write(
        dir.join("manifest.toml"),
        text.replace("w.caffemodel", "v.caffemodel"),
    )
    .expect("write");
    assert!(matches!(
        verify_model_dir(&dir, Some(&pk)),
        Err(FirewallError::Signature(_))
    ));
    std::fs::remove_dir_all(&dir).ok();
    assert!(verify_signature(&pk, b"data", "garbage").is_err());
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = std::env::temp_dir().join(format!("fw-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let fifo = dir.join("deploy.prototxt");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok);
    std::os::unix::fs::symlink("/dev/zero", dir.join("w.caffemodel")).expect("symlink");
    let policy = caffe_sandbox_firewall::FirewallPolicy::default();
    assert!(caffe_sandbox_firewall::inspect_dir(&dir, &policy).is_err());
    std::fs::remove_file(&fifo).expect("rm");
    std::fs::write(&fifo, b"name: \"x\"").expect("write");
    assert!(
        caffe_sandbox_firewall::inspect_dir(&dir, &policy).is_err(),
        "/dev/zero as weights"
    );
    let m = Manifest::for_files([("w.caffemodel", b"".as_slice())]);
    assert!(m.verify_dir(&dir).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
