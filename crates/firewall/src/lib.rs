//! caffe-sandbox-firewall (skeleton; filled in by its owner).
