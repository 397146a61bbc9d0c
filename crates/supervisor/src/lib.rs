//! caffe-sandbox-supervisor (skeleton; filled in by its owner).
