//! Test helper: stage-2 entry point + in-sandbox probes (used by the crate's integration tests only).
//!
//! `jail-test-probe probe CHECK [ARGS…]` runs one check inside the sandbox and exits 0 on success,
//! printing `PROBE-OK …` or `PROBE-FAIL …` on stderr.

fn main() {
    caffe_sandbox_jail::stage2_main_if_requested();
    std::process::exit(probe::main());
}

mod probe;
