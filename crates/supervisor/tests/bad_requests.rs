//! A caller's malformed request is the caller's error: it is refused before anything reaches the channel,
//! names the input, and the worker keeps serving. (Shape checks are covered by the CLI tests; here the
//! request-level rules of the protocol.)
//!
//! Needs `scripts/setup` (the Caffe prefix, open_nsfw, the samples) and the workspace built.

use caffe_sandbox_supervisor::{Error, Input, LaunchConfig, ModelBundle, Worker};
use caffe_sandbox_testkit::{built, open_nsfw_dir, sample};

fn loaded_worker() -> Worker {
    let mut cfg = LaunchConfig::discover()
        .expect("launch config (run scripts/setup and build the workspace)");
    cfg.worker_exe = built("caffe-sandbox-worker");
    cfg.stage2_exe = Some(built("caffe-sandbox-jail-stage2"));
    let model =
        ModelBundle::from_dir_checked(&open_nsfw_dir(), &Default::default(), &Default::default())
            .unwrap();
    let mut w = Worker::start(&cfg, Default::default()).expect("worker");
    w.load(&model).unwrap();
    w
}

fn chelsea() -> Input {
    Input::Image {
        name: "data".into(),
        bytes: std::fs::read(sample("chelsea.png")).expect("sample (run scripts/setup)"),
    }
}

#[test]
fn an_input_given_twice_is_a_bad_input_and_the_worker_keeps_serving() {
    let mut w = loaded_worker();
    let pid = w.pid();
    match w.infer(&[chelsea(), chelsea()]) {
        Err(Error::BadInput { message, input }) => {
            assert_eq!(input.as_deref(), Some("data"), "{message}");
            assert!(message.contains("more than once"), "{message}");
        }
        other => panic!("expected BadInput, got {other:?}"),
    }
    assert!(w.is_alive());
    let out = w.infer(&[chelsea()]).expect("the next request is answered");
    assert!(
        out.iter().any(|o| o.name == "prob" && o.dims == [1, 2]),
        "{out:?}"
    );
    assert_eq!(w.pid(), pid, "the same worker answered");
    w.shutdown();
}

#[test]
fn an_input_the_model_does_not_have_is_a_bad_input_naming_it() {
    let mut w = loaded_worker();
    let input = Input::Image {
        name: "pixels".into(),
        bytes: b"\\x89PNG".to_vec(),
    };
    match w.infer(&[input]) {
        Err(Error::BadInput { message, input }) => {
            assert_eq!(input.as_deref(), Some("pixels"), "{message}");
            assert!(message.contains("inputs: data"), "{message}");
        }
        other => panic!("expected BadInput, got {other:?}"),
    }
    assert!(w.infer(&[chelsea()]).is_ok());
    w.shutdown();
}
