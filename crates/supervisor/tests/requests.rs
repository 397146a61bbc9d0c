//! How requests reach a worker:
//! - a caller's malformed request is the caller's error: it is refused before anything reaches the channel,
//!   names the input, and the worker keeps serving (shape checks are covered by the CLI tests; here the
//!   request-level rules of the protocol);
//! - inputs travel in the worker's input arena (crates/protocol/src/arena.rs): one file per worker, rewritten in
//!   place by every request and replaced by a larger one when a request does not fit; results must not depend on
//!   what an earlier request left in it, nor on a replacement.
//!
//! Needs `scripts/setup` (the Caffe prefix, open_nsfw, the samples) and the workspace built.

use caffe_sandbox_supervisor::{Error, Input, LaunchConfig, ModelBundle, Output, Worker};
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
        bytes: b"\x89PNG".to_vec(),
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

fn prob(out: Vec<Output>) -> Output {
    out.into_iter().find(|o| o.name == "prob").expect("prob")
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
}

#[test]
fn results_do_not_depend_on_earlier_requests_or_on_the_arena_growing() {
    let mut w = loaded_worker();
    let image = |name: &str| Input::Image {
        name: "data".into(),
        bytes: std::fs::read(sample(name)).expect("sample (run scripts/setup)"),
    };
    let tensor = |n: usize, values: &[f32]| Input::Tensor {
        name: "data".into(),
        dims: vec![n, 3, 224, 224],
        data: values
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, 3 * 224 * 224))
            .collect(),
    };

    // The first arena (1 MiB) holds one image or one 602 KB tensor.
    let chelsea = prob(w.infer(&[image("chelsea.png")]).unwrap());
    let astronaut = prob(w.infer(&[image("astronaut.png")]).unwrap());
    assert!(
        !close(&chelsea.data, &astronaut.data),
        "two photos, one result"
    );
    let values = [0.0f32, 40.0, -40.0, 120.0];
    let singles: Vec<Vec<f32>> = values
        .iter()
        .map(|&v| prob(w.infer(&[tensor(1, &[v])]).unwrap()).data)
        .collect();
    assert!(
        (1..4).all(|i| !close(&singles[0], &singles[i])),
        "the rows must differ for the order check to mean anything: {singles:?}"
    );
    // A batch of four (2.4 MB) does not fit: a new arena comes with the request.
    let batch = prob(w.infer(&[tensor(4, &values)]).unwrap());
    assert_eq!(batch.dims, [4, 2]);
    for (i, row) in batch.data.chunks(2).enumerate() {
        assert!(
            close(row, &singles[i]),
            "row {i}: {row:?} vs {:?}",
            singles[i]
        );
    }
    // A smaller request after it, in the same (larger) arena, over the batch's bytes.
    assert!(close(
        &prob(w.infer(&[image("chelsea.png")]).unwrap()).data,
        &chelsea.data
    ));
    assert!(close(
        &prob(w.infer(&[tensor(1, &[values[1]])]).unwrap()).data,
        &singles[1]
    ));
    w.shutdown();
}

/// The memfds of input arenas this process holds, with their size and the bytes they keep allocated.
fn input_arenas() -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_arena = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:input-arena"));
        // Another test's worker may close its fds meanwhile: what cannot be opened any more is skipped.
        if let (true, Ok(meta)) = (is_arena, std::fs::metadata(entry.path())) {
            use std::os::unix::fs::MetadataExt;
            found.push((meta.size(), meta.blocks() * 512));
        }
    }
    found
}

#[test]
fn a_large_request_does_not_keep_its_arena_pages_allocated() {
    use caffe_sandbox_supervisor::worker::ARENA_KEPT_BYTES;
    let mut w = loaded_worker();
    // 20 MiB that are no image: the worker answers with a decode error after reading them from its arena, which
    // grows to 32 MiB (no other test makes one that large).
    let junk = Input::Image {
        name: "data".into(),
        bytes: vec![0x5A; 20 << 20],
    };
    match w.infer(&[junk]) {
        Err(Error::BadInput { message, .. }) if message.starts_with("ImageDecode") => {}
        other => panic!("expected an image decode error, got {other:?}"),
    }
    let large: Vec<(u64, u64)> = input_arenas()
        .into_iter()
        .filter(|&(size, _)| size == 32 << 20)
        .collect();
    assert!(!large.is_empty(), "no 32 MiB input arena found");
    for (_, allocated) in &large {
        assert!(
            *allocated <= ARENA_KEPT_BYTES,
            "the arena still holds {allocated} bytes after the request"
        );
    }
    // The worker still reads the next request's bytes right, in the same arena.
    assert!(close(
        &prob(w.infer(&[chelsea()]).unwrap()).data,
        &prob(loaded_worker().infer(&[chelsea()]).unwrap()).data
    ));
    w.shutdown();
}
