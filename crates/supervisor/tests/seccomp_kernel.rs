//! `seccomp_watch::confirm_from_kernel` against the real worker in the real sandbox: every thread in filter mode
//! with the listener filter after `Hello` and the stacked inference filter after `Loaded`; a worker started without
//! seccomp (explicitly allowed) and this unfiltered test process are reported as weakened.
//!
//! Needs `scripts/setup` (the Caffe prefix, open_nsfw) and the workspace built (`cargo test --workspace`).

use caffe_sandbox_supervisor::seccomp_watch::{confirm_from_kernel, kernel_seccomp};
use caffe_sandbox_supervisor::{Input, LaunchConfig, Layer, LayerState, ModelBundle, Worker};
use caffe_sandbox_testkit::{built, open_nsfw_dir};
use std::path::PathBuf;

fn cfg() -> LaunchConfig {
    let mut c = LaunchConfig::discover()
        .expect("launch config (run scripts/setup and build the workspace)");
    c.worker_exe = built("caffe-sandbox-worker");
    c.stage2_exe = Some(built("caffe-sandbox-jail-stage2"));
    c
}

fn open_nsfw() -> ModelBundle {
    ModelBundle::from_dir_checked(&open_nsfw_dir(), &Default::default(), &Default::default())
        .unwrap()
}

#[test]
fn kernel_confirms_the_listener_then_the_inference_filter_on_every_thread() {
    let mut w = Worker::start(&cfg(), Default::default()).expect("worker");
    let pid = w.pid().unwrap();
    let k = kernel_seccomp(pid).unwrap();
    assert!(k.threads >= 1 && k.unfiltered.is_empty(), "{k:?}");
    assert!(matches!(
        confirm_from_kernel(pid, 1, "worker.json"),
        LayerState::Enforced { .. }
    ));
    // Only the listener filter so far.
    assert!(
        matches!(
            confirm_from_kernel(pid, 2, "worker.json"),
            LayerState::Weakened { .. }
        ),
        "{k:?}"
    );
    w.load(&open_nsfw()).unwrap();
    let state = confirm_from_kernel(pid, 2, "worker.json");
    assert!(matches!(state, LayerState::Enforced { .. }), "{state:?}");
    let bytes = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/samples/chelsea.png"),
    )
    .expect("sample (run scripts/setup)");
    w.infer(&[Input::Image {
        name: "data".into(),
        bytes,
    }])
    .unwrap();
    assert!(matches!(
        confirm_from_kernel(pid, 2, "worker.json"),
        LayerState::Enforced { .. }
    ));
    w.shutdown();
}

#[test]
fn unfiltered_processes_are_reported_weakened() {
    let mut c = cfg();
    c.allow_weaker.insert(Layer::Seccomp);
    let w = Worker::start(&c, Default::default()).expect("worker without seccomp");
    let pid = w.pid().unwrap();
    let k = kernel_seccomp(pid).unwrap();
    assert_eq!(k.unfiltered.len(), k.threads, "{k:?}");
    assert!(matches!(
        confirm_from_kernel(pid, 1, "none"),
        LayerState::Weakened { .. }
    ));
    w.shutdown();
    let me = std::process::id() as i32;
    assert!(matches!(
        confirm_from_kernel(me, 1, "none"),
        LayerState::Weakened { .. }
    ));
    assert!(matches!(
        confirm_from_kernel(i32::MAX, 1, "none"),
        LayerState::Weakened { .. }
    ));
}
