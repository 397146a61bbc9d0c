//! Builds the C++ shim over BVLC Caffe 1.0 and links the real libcaffe from the project-local prefix that
//! `scripts/setup` extracts (Debian bullseye's build). This crate is the only one that links libcaffe.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    println!("cargo:rerun-if-env-changed=CAFFE_PREFIX");
    let prefix = std::env::var_os("CAFFE_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".cache/caffe/prefix"));
    let include = prefix.join("usr/include");
    let libdir = prefix.join("usr/lib/x86_64-linux-gnu");
    if !include.join("caffe/caffe.hpp").exists() || !libdir.join("libcaffe.so.1.0.0").exists() {
        panic!(
            "\n\nthe real BVLC Caffe 1.0 prefix was not found at {} (need usr/include/caffe/caffe.hpp and \
             usr/lib/x86_64-linux-gnu/libcaffe.so.1.0.0).\nRun scripts/setup first, or point CAFFE_PREFIX at a \
             prefix made by it.\n",
            prefix.display()
        );
    }
    let shim = manifest.join("shim");
    for f in ["caffe_shim.cpp", "caffe_shim.h", "protobuf_compat.h"] {
        println!("cargo:rerun-if-changed={}", shim.join(f).display());
    }
    cc::Build::new()
        .cpp(true)
        .std("c++14")
        .file(shim.join("caffe_shim.cpp"))
        .flag("-include")
        .flag(shim.join("protobuf_compat.h").to_str().unwrap())
        // The defines Debian's libcaffe1 was built with; CPU_ONLY avoids the CUDA headers.
        .define("CPU_ONLY", None)
        .define("USE_OPENCV", None)
        .define("USE_LMDB", None)
        .define("USE_LEVELDB", None)
        .flag("-isystem")
        .flag(include.to_str().unwrap())
        .flag("-Wno-deprecated-declarations")
        .opt_level(2)
        .compile("caffe_shim");
    // libcaffe has no libcaffe.so.1 soname link; link the real file by its full name.
    println!("cargo:rustc-link-search=native={}", libdir.display());
    println!(
        "cargo:rustc-link-search=native={}",
        prefix.join("usr/lib").display()
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath-link,{}", libdir.display());
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath-link,{}",
        prefix.join("usr/lib").display()
    );
    println!(
        "cargo:rustc-link-arg={}",
        libdir.join("libcaffe.so.1.0.0").display()
    );
    println!(
        "cargo:rustc-link-arg={}",
        libdir.join("libprotobuf.so.23").display()
    );
    println!(
        "cargo:rustc-link-arg={}",
        libdir.join("libglog.so.0").display()
    );
    println!("cargo:rustc-link-lib=dylib=stdc++");
    // The binaries find the libraries at run time through LD_LIBRARY_PATH set by the supervisor (inside the
    // sandbox the prefix is bound read-only at the same path); rpath is set too for direct runs.
    // DT_RPATH (not RUNPATH) so that it also applies to libcaffe's own dependencies.
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}:{}",
        libdir.display(),
        prefix.join("usr/lib").display()
    );
}
