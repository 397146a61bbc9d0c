//! In-process baseline (no sandbox, no protocol): placeholder, filled in below.
fn main() {}
