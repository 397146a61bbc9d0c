//! Minimal stage-2 executable: set `SandboxSpec::stage2_exe` to it when the spawning binary cannot call
//! `stage2_main_if_requested()` itself (e.g. a libtest harness) or to keep stage 2 small.

fn main() {
    caffe_sandbox_jail::stage2_main_if_requested();
    eprintln!("caffe-sandbox-jail-stage2: internal helper of caffe-sandbox, not for direct use");
    std::process::exit(2);
}
