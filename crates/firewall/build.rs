//! Compiles `proto/caffe.proto` with protox (pure Rust, no protoc) into a serialized
//! FileDescriptorSet (embedded for prost-reflect's text-format parser) and typed prost structs.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/caffe.proto");
    let fds = protox::compile(["caffe.proto"], ["proto"]).expect("compile proto/caffe.proto");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("caffe_descriptor.bin"), fds.encode_to_vec())
        .expect("write descriptor");
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(fds)
        .expect("generate prost types");
}
