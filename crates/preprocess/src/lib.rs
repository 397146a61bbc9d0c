//! caffe-sandbox-preprocess (skeleton; filled in by its owner).
