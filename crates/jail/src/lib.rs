//! caffe-sandbox-jail (skeleton; filled in by its owner).
