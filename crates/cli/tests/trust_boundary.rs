//! The supervisor binary never links C/C++ model code: no libcaffe, protobuf, glog, OpenCV, HDF5, Python,
//! BLAS. Only the worker does (checked too, so this test cannot pass by looking at the wrong file).
mod common;
use common::*;
use std::process::Command;

const MODEL_CODE: [&str; 8] = [
    "libcaffe",
    "libprotobuf",
    "libglog",
    "libopencv",
    "libhdf5",
    "libpython",
    "libopenblas",
    "libboost",
];

fn ldd(path: &std::path::Path) -> String {
    let prefix = repo().join(".cache/caffe/prefix");
    let out = Command::new("ldd")
        .arg(path)
        .env(
            "LD_LIBRARY_PATH",
            format!("{0}/usr/lib/x86_64-linux-gnu:{0}/usr/lib", prefix.display()),
        )
        .output()
        .expect("ldd");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn supervisor_binary_links_no_model_code() {
    let libs = ldd(&bin());
    for lib in MODEL_CODE {
        assert!(!libs.contains(lib), "caffe-sandbox links {lib}:\n{libs}");
    }
}

#[test]
fn worker_binary_is_the_one_that_links_caffe() {
    let libs = ldd(&sibling("caffe-sandbox-worker"));
    assert!(libs.contains("libcaffe.so.1.0.0"), "{libs}");
    assert!(libs.contains("libglog"), "{libs}");
}
