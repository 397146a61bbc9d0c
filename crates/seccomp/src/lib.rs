//! caffe-sandbox-seccomp (skeleton).
