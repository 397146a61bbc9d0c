//! The caffe-sandbox worker: the only crate that links the real BVLC Caffe 1.0.
//!
//! [`engine`] wraps `caffe::Net<float>` through a small C++ shim; the `caffe-sandbox-worker` binary serves the
//! supervisor's protocol inside the sandbox; `caffe-inprocess` is the unsandboxed in-process baseline used by
//! the golden tests and the bench.
pub mod engine;
pub mod filter;
pub mod mapped;
pub mod options;
pub mod pipeline;
