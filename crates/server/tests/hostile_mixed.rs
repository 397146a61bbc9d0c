//! Hostile models and inputs mixed into benign load, with the model firewall off so that the sandbox itself is
//! what stands between them and the server: every benign request is answered with the CLI's result for the same
//! image, every hostile one is refused with a typed error, and the server stays up and ready.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const IMAGES: [&str; 3] = ["chelsea.png", "coffee.png", "astronaut.png"];

fn embed_request(index: f32) -> (serde_json::Value, Vec<u8>) {
    let bin: Vec<u8> = [index, index, index]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let h = json!({ "inputs": [{ "name": "data", "shape": [1, 3], "datatype": "FP32",
                                  "parameters": { "binary_data_size": 12 } }] });
    (h, bin)
}

#[test]
fn hostile_models_and_inputs_amid_benign_load() {
    let repo = tmpdir("hostile");
    link_open_nsfw(&repo, "nsfw");
    write_model(&repo.join("embed/1"), EMBED);
    write_model(&repo.join("fpe/1"), FPE);
    write_model(&repo.join("garbage/1"), "this is { not a prototxt");
    // HDF5Output creates its file while the net is set up: the seccomp layer stops it at load.
    let h5_dir = tmpdir("h5-target");
    let h5 = h5_dir.join("escape.h5");
    write_model(
        &repo.join("hdf5/1"),
        &format!(
            "layer {{ name: \"in\" type: \"Input\" top: \"data\" top: \"label\" \
             input_param {{ shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} shape {{ dim: 1 }} }} }}\n\
             layer {{ name: \"o\" type: \"HDF5Output\" bottom: \"data\" bottom: \"label\" \
             hdf5_output_param {{ file_name: \"{}\" }} }}\n",
            h5.display()
        ),
    );
    let s = Server::start(&[
        "--model-repository",
        repo.to_str().unwrap(),
        "--firewall",
        "off",
        "--workers",
        "1",
    ]);
    s.wait_ready(Duration::from_secs(90));

    // Models that kill Caffe at load are reported unavailable with the cause; the server is ready regardless.
    let index = s.post_json("/v2/repository/index", &json!({})).json();
    let state = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(state("nsfw")["state"], "READY", "{index}");
    assert_eq!(state("embed")["state"], "READY", "{index}");
    assert_eq!(state("fpe")["state"], "UNAVAILABLE", "{index}");
    assert!(
        state("fpe")["reason"].as_str().unwrap().contains("SIGFPE"),
        "{index}"
    );
    assert_eq!(state("garbage")["state"], "UNAVAILABLE", "{index}");
    assert_eq!(state("hdf5")["state"], "UNAVAILABLE", "{index}");
    assert!(
        state("hdf5")["reason"]
            .as_str()
            .unwrap()
            .contains("seccomp_violation"),
        "{index}"
    );
    assert!(!h5.exists(), "{} was created", h5.display());
    let metrics = s.get("/metrics").text();
    assert!(
        metrics.contains("caffe_sandbox_sandbox_violations_total{model=\"hdf5\",syscall=\""),
        "{metrics}"
    );

    let want: Vec<Vec<f64>> = IMAGES.iter().map(|n| cli_probs(&sample(n))).collect();
    let images: Vec<Vec<u8>> = IMAGES
        .iter()
        .map(|n| std::fs::read(sample(n)).unwrap())
        .collect();
    let truncated = images[0][..images[0].len() / 2].to_vec();

    // Benign load: 20 image requests on their own thread.
    let port = s.port;
    let benign = {
        let images = images.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            for i in 0..20 {
                let (h, bin) = image_request("data", &images[i % 3], None);
                let hs = h.to_string();
                let mut body = hs.clone().into_bytes();
                body.extend_from_slice(&bin);
                let r = http(
                    port,
                    "POST",
                    "/v2/models/nsfw/infer",
                    &[("Inference-Header-Content-Length", hs.len().to_string())],
                    &body,
                );
                answers.push((i % 3, r));
            }
            answers
        })
    };

    // Meanwhile: 20 hostile requests (and benign ones for the model the hostile inputs crash).
    let mut crashes = 0;
    for i in 0..20 {
        match i % 5 {
            0 | 3 => {
                // An out-of-range FP32 index: real Caffe's Embed reads out of bounds and the worker dies.
                let (h, bin) = embed_request(if i % 2 == 0 { 1e9 } else { -1e9 });
                let r = s.post_binary("/v2/models/embed/infer", &h, &bin);
                assert_eq!(
                    (r.status, r.kind().as_str()),
                    (500, "crashed"),
                    "{i}: {}",
                    r.text()
                );
                assert!(
                    r.json()["error"].as_str().unwrap().contains("SIGSEGV"),
                    "{}",
                    r.text()
                );
                crashes += 1;
            }
            1 => {
                // The replacement worker serves in-range indices.
                let (h, bin) = embed_request(1.0);
                let r = s.post_binary("/v2/models/embed/infer", &h, &bin);
                assert_eq!(r.status, 200, "{i}: {}", r.text());
                assert_eq!(r.json()["outputs"][0]["shape"], json!([1, 3, 2]));
            }
            2 => {
                let (h, bin) = embed_request(0.0);
                let r = s.post_binary("/v2/models/fpe/infer", &h, &bin);
                assert_eq!(
                    (r.status, r.kind().as_str()),
                    (503, "not_ready"),
                    "{i}: {}",
                    r.text()
                );
                assert!(r.text().contains("SIGFPE"), "{}", r.text());
            }
            _ => {
                let (status, kind, r) = match (i / 5) % 4 {
                    0 => {
                        let (h, bin) = image_request("data", &truncated, None);
                        (
                            400,
                            "bad_input",
                            s.post_binary("/v2/models/nsfw/infer", &h, &bin),
                        )
                    }
                    1 => (
                        400,
                        "bad_request",
                        http(
                            s.port,
                            "POST",
                            "/v2/models/nsfw/infer",
                            &[],
                            b"{\"inputs\": [",
                        ),
                    ),
                    2 => (
                        503,
                        "not_ready",
                        s.post_json("/v2/models/garbage/infer", &json!({ "inputs": [] })),
                    ),
                    _ => {
                        let (h, bin) = image_request("data", b"GIF89a\xff\xff\xff\xff", None);
                        (
                            400,
                            "bad_input",
                            s.post_binary("/v2/models/nsfw/infer", &h, &bin),
                        )
                    }
                };
                assert_eq!(
                    (r.status, r.kind().as_str()),
                    (status, kind),
                    "{i}: {}",
                    r.text()
                );
            }
        }
    }

    for (k, r) in benign.join().unwrap() {
        assert_eq!(r.status, 200, "{}", r.text());
        let got: Vec<f64> = r.json()["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want[k]) {
            assert!(
                (g - w).abs() <= 1e-6,
                "{}: server {got:?} vs CLI {:?}",
                IMAGES[k],
                want[k]
            );
        }
    }
    assert_eq!(s.get("/v2/health/ready").status, 200, "{}", s.logs());
    assert_eq!(s.get("/v2/models/nsfw/ready").status, 200);
    assert_eq!(
        s.metric("caffe_sandbox_worker_restarts_total{model=\"embed\",cause=\"crashed\"}"),
        crashes as f64
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"nsfw\",outcome=\"ok\"}"),
        20.0
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"embed\",outcome=\"crashed\"}"),
        crashes as f64
    );
    let text = s.get("/metrics").text();
    assert!(
        !text.contains("caffe_sandbox_worker_restarts_total{model=\"nsfw\""),
        "{text}"
    );
    // The embed model is still served after all those crashes.
    let (h, bin) = embed_request(0.0);
    assert_eq!(
        s.post_binary("/v2/models/embed/infer", &h, &bin).status,
        200
    );
}
