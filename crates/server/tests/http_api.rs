//! The Open Inference Protocol v2 API of `caffe-sandbox serve` end to end: real sandboxed workers running the real
//! open_nsfw, over HTTP on 127.0.0.1.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const READY: Duration = Duration::from_secs(90);

fn fp32_header(name: &str, shape: &[usize]) -> (serde_json::Value, Vec<u8>) {
    let n: usize = shape.iter().product();
    let bin: Vec<u8> = (0..n)
        .flat_map(|i| (((i % 255) as f32) - 120.0).to_le_bytes())
        .collect();
    let h = json!({ "inputs": [{ "name": name, "shape": shape, "datatype": "FP32",
                                  "parameters": { "binary_data_size": bin.len() } }] });
    (h, bin)
}

#[test]
fn health_metadata_inference_errors_metrics_and_audit() {
    let s = Server::start(&[
        "--model",
        open_nsfw().to_str().unwrap(),
        "--workers",
        "1",
        "--max-body-mib",
        "2",
    ]);
    assert_eq!(s.get("/v2/health/live").status, 200);
    s.wait_ready(READY);
    assert_eq!(s.get("/v2/models/open_nsfw/ready").status, 200);
    assert_eq!(s.get("/v2/models/open_nsfw/versions/1/ready").status, 200);

    let meta = s.get("/v2/models/open_nsfw").json();
    assert_eq!(meta["name"], "open_nsfw");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{ "name": "data", "datatype": "FP32", "shape": [-1, 3, 224, 224] }])
    );
    assert_eq!(
        meta["outputs"],
        json!([{ "name": "prob", "datatype": "FP32", "shape": [-1, 2] }])
    );
    let server = s.get("/v2").json();
    assert_eq!(server["name"], "caffe-sandbox");
    assert!(server["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));

    // An encoded image (BYTES, binary extension), decoded inside the sandbox, equals the CLI's result.
    let img = std::fs::read(sample("coffee.png")).unwrap();
    let (h, bin) = image_request("data", &img, None);
    let r = s.post_binary("/v2/models/open_nsfw/infer", &h, &bin);
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Vec<f64> = r.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want = cli_probs(&sample("coffee.png"));
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "server {got:?} vs CLI {want:?}");
    }

    // FP32 tensors: binary in and out, then the same tensor as JSON, same answer.
    let (mut h, bin) = fp32_header("data", &[1, 3, 224, 224]);
    h["outputs"] = json!([{ "name": "prob", "parameters": { "binary_data": true } }]);
    let r = s.post_binary("/v2/models/open_nsfw/versions/1/infer", &h, &bin);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["parameters"]["binary_data_size"], 8);
    let b = r.binary();
    let bin_probs: Vec<f32> = b
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let data: Vec<f32> = bin
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let r = s.post_json(
        "/v2/models/open_nsfw/infer",
        &json!({ "id": "j1", "inputs": [{ "name": "data", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": data }] }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], "j1");
    let json_probs: Vec<f32> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(json_probs, bin_probs);

    // Classification extension: "score:index:label".
    let (h, bin) = image_request("data", &img, Some(1));
    let r = s.post_binary("/v2/models/open_nsfw/infer", &h, &bin);
    let v = r.json();
    assert_eq!(v["outputs"][0]["datatype"], "BYTES");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 1]));
    let top = v["outputs"][0]["data"][0].as_str().unwrap();
    let label = if want[0] > want[1] { "0:sfw" } else { "1:nsfw" };
    assert!(top.ends_with(label), "{top} vs {want:?}");

    // Errors: status, kind, message; all checked before a worker sees them (except image decoding).
    let cases: Vec<(u16, &str, serde_json::Value)> = vec![
        (400, "bad_request", json!({ "inputs": "nope" })),
        (
            400,
            "bad_request",
            json!({ "inputs": [{ "name": "data", "shape": [1, 3, 10, 10], "datatype": "FP32", "data": [] }] }),
        ),
        (
            400,
            "bad_request",
            json!({ "inputs": [{ "name": "data", "shape": [1, 3, 224, 224], "datatype": "INT8", "data": [] }] }),
        ),
        (
            400,
            "bad_request",
            json!({ "inputs": [{ "name": "data", "shape": [100, 3, 224, 224], "datatype": "FP32", "data": [] }] }),
        ),
        (
            400,
            "bad_request",
            json!({ "inputs": [{ "name": "other", "shape": [1], "datatype": "BYTES", "data": ["AA=="] }] }),
        ),
        (
            400,
            "bad_input",
            json!({ "inputs": [{ "name": "data", "shape": [1], "datatype": "BYTES", "data": ["bm90IGFuIGltYWdl"] }] }),
        ),
    ];
    for (status, kind, body) in &cases {
        let r = s.post_json("/v2/models/open_nsfw/infer", body);
        assert_eq!(
            (r.status, r.kind().as_str()),
            (*status, *kind),
            "{body}: {}",
            r.text()
        );
    }
    let r = s.post_json("/v2/models/nope/infer", &json!({}));
    assert_eq!((r.status, r.kind().as_str()), (404, "not_found"));
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown model 'nope'"));
    assert_eq!(s.get("/v2/models/open_nsfw/versions/2").status, 404);
    assert_eq!(s.get("/v2/no/such/route").kind(), "not_found");
    let big = vec![b' '; 3 << 20];
    let r = http(s.port, "POST", "/v2/models/open_nsfw/infer", &[], &big);
    assert_eq!(
        (r.status, r.kind().as_str()),
        (413, "body_too_large"),
        "{}",
        r.text()
    );

    // The worker survived the undecodable image: still ready, and no restart was counted.
    assert_eq!(s.get("/v2/health/ready").status, 200);
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"open_nsfw\",outcome=\"ok\"}"),
        4.0
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"open_nsfw\",outcome=\"bad_request\"}"),
        5.0
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"open_nsfw\",outcome=\"bad_input\"}"),
        1.0
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"_unknown\",outcome=\"not_found\"}"),
        1.0
    );
    assert_eq!(
        s.metric("caffe_sandbox_compute_duration_seconds_count{model=\"open_nsfw\"}"),
        5.0
    );
    let text = s.get("/metrics").text();
    assert!(
        !text.contains("caffe_sandbox_worker_restarts_total{"),
        "{text}"
    );
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"event\":\"request\""))
            .count(),
        5,
        "{audit}"
    );
    assert!(audit.contains("\"event\":\"model_loaded\""));
    // JSON logs on stderr.
    let logs = s.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"infer\""))
        .unwrap_or_else(|| panic!("{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["model"], "open_nsfw");
}

#[test]
fn a_full_queue_is_429_and_shutdown_drains_in_flight_requests() {
    let mut s = Server::start(&[
        "--model",
        open_nsfw().to_str().unwrap(),
        "--workers",
        "1",
        "--max-queue",
        "1",
    ]);
    s.wait_ready(READY);
    let img = std::fs::read(sample("chelsea.png")).unwrap();
    let (h, bin) = image_request("data", &img, None);
    let burst = |n: usize| -> Vec<u16> {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (h, bin, port) = (h.clone(), bin.clone(), s.port);
                std::thread::spawn(move || {
                    let hs = h.to_string();
                    let mut body = hs.clone().into_bytes();
                    body.extend_from_slice(&bin);
                    http(
                        port,
                        "POST",
                        "/v2/models/open_nsfw/infer",
                        &[("Inference-Header-Content-Length", hs.len().to_string())],
                        &body,
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    };
    let statuses = burst(8);
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|&&c| c == 429).count() >= 1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|&&c| c == 200).count() >= 2,
        "{statuses:?}"
    );
    assert_eq!(
        s.metric("caffe_sandbox_requests_total{model=\"open_nsfw\",outcome=\"queue_full\"}")
            as usize,
        statuses.iter().filter(|&&c| c == 429).count()
    );

    // Graceful shutdown: one request computing (a batch of 8), one queued; SIGTERM; both are answered, then the
    // server exits.
    let port = s.port;
    let send = |h: serde_json::Value, bin: Vec<u8>| {
        std::thread::spawn(move || {
            let hs = h.to_string();
            let mut body = hs.clone().into_bytes();
            body.extend_from_slice(&bin);
            http(
                port,
                "POST",
                "/v2/models/open_nsfw/infer",
                &[("Inference-Header-Content-Length", hs.len().to_string())],
                &body,
            )
        })
    };
    let (bh, bbin) = fp32_header("data", &[8, 3, 224, 224]);
    let computing = send(bh, bbin);
    s.wait_metric("caffe_sandbox_busy_workers{model=\"open_nsfw\"}", 1.0);
    let queued = send(h.clone(), bin.clone());
    s.wait_metric("caffe_sandbox_queue_depth{model=\"open_nsfw\"}", 1.0);
    s.terminate();
    for t in [computing, queued] {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let st = s.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}\n{}", s.logs());
    assert!(s.logs().contains("draining"), "{}", s.logs());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn repository_deadline_replacement_recycling_and_a_refused_model() {
    let repo = tmpdir("repo");
    link_open_nsfw(&repo, "nsfw");
    std::fs::write(
        repo.join("nsfw/config.toml"),
        "workers = 1\nrecycle_after_requests = 3\n",
    )
    .unwrap();
    // ~2.4 GFLOP per item: milliseconds at batch 1 (warm-up), hundreds of GFLOP at batch 256.
    let mut slow = String::from(
        "layer { name: \"data\" type: \"Input\" top: \"l0\" input_param { shape { dim: 1 dim: 8 dim: 8 dim: 8 } } }\n",
    );
    for i in 0..5 {
        slow.push_str(&format!(
            "layer {{ name: \"c{i}\" type: \"Convolution\" bottom: \"l{i}\" top: \"l{}\" \
             convolution_param {{ num_output: 1024 kernel_size: 3 pad: 1 }} }}\n",
            i + 1
        ));
    }
    write_model(&repo.join("slow/1"), &slow);
    std::fs::write(
        repo.join("slow/config.toml"),
        "workers = 1\ntimeout_seconds = 1.0\nmax_batch = 256\nrecycle_rss_mib = 1\n",
    )
    .unwrap();
    write_model(&repo.join("fpe/1"), FPE);
    let s = Server::start(&["--model-repository", repo.to_str().unwrap()]);
    s.wait_ready(READY);

    // The firewall refuses the group-0 model; it is reported, the rest of the server serves.
    let index = s.post_json("/v2/repository/index", &json!({})).json();
    let fpe = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "fpe")
        .unwrap();
    assert_eq!(fpe["state"], "UNAVAILABLE", "{index}");
    assert!(
        fpe["reason"].as_str().unwrap().contains("group 0"),
        "{index}"
    );
    let r = s.get("/v2/models/fpe/ready");
    assert_eq!((r.status, r.kind().as_str()), (503, "not_ready"));
    let (h, bin) = fp32_header("data", &[1, 3, 8, 8]);
    let r = s.post_binary("/v2/models/fpe/infer", &h, &bin);
    assert_eq!(
        (r.status, r.kind().as_str()),
        (503, "not_ready"),
        "{}",
        r.text()
    );

    // A batch of 256 takes seconds: past the 1 s deadline the worker is killed and replaced, and the model
    // answers again.
    let (h, bin) = fp32_header("l0", &[256, 8, 8, 8]);
    let r = s.post_binary("/v2/models/slow/infer", &h, &bin);
    assert_eq!(
        (r.status, r.kind().as_str()),
        (503, "timeout"),
        "{}",
        r.text()
    );
    assert!(
        r.json()["error"].as_str().unwrap().contains("1000 ms"),
        "{}",
        r.text()
    );
    assert_eq!(
        s.metric("caffe_sandbox_worker_restarts_total{model=\"slow\",cause=\"timeout\"}"),
        1.0
    );
    // The replacement warms up (the model stays ready meanwhile; requests would queue), then serves.
    s.wait_metric("caffe_sandbox_ready_workers{model=\"slow\"}", 1.0);
    let (h, bin) = fp32_header("l0", &[1, 8, 8, 8]);
    let r = s.post_binary("/v2/models/slow/infer", &h, &bin);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["shape"], json!([1, 1024, 8, 8]));
    // recycle_rss_mib = 1: any real worker is over it after a request, and is replaced.
    s.wait_metric(
        "caffe_sandbox_worker_restarts_total{model=\"slow\",cause=\"recycle_memory\"}",
        1.0,
    );
    let img = std::fs::read(sample("astronaut.png")).unwrap();
    let (h, bin) = image_request("data", &img, None);
    for _ in 0..3 {
        let r = s.post_binary("/v2/models/nsfw/infer", &h, &bin);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // recycle_after_requests = 3: the worker that served those three was replaced.
    s.wait_metric(
        "caffe_sandbox_worker_restarts_total{model=\"nsfw\",cause=\"recycle_requests\"}",
        1.0,
    );
    s.wait_ready(READY);
    let r = s.post_binary("/v2/models/nsfw/infer", &h, &bin);
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        audit.contains("\"event\":\"worker_failed\"") && audit.contains("\"cause\":\"timeout\""),
        "{audit}"
    );
    assert!(audit.contains("\"event\":\"model_refused\""), "{audit}");
}
