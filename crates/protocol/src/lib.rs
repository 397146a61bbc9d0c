//! caffe-sandbox-protocol (skeleton; filled in by its owner).
