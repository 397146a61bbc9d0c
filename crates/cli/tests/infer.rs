//! `caffe-sandbox infer` end to end: the real open_nsfw model through the sandboxed worker, compared with the
//! same libcaffe called in-process; and every class of bad input giving a typed error with the right exit code.
mod common;
use common::*;
use std::process::Command;

fn probs(v: &serde_json::Value, i: usize) -> Vec<f64> {
    let outs = v["results"][i]["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {v:#}"));
    let prob = outs
        .iter()
        .find(|o| o["name"] == "prob")
        .expect("prob output");
    prob["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn sandboxed_open_nsfw_equals_in_process_caffe_on_sample_photos() {
    for who in both() {
        let out = infer_json(
            who,
            &open_nsfw(),
            &[&sample("chelsea.png"), &sample("coffee.png")],
        );
        assert!(out.status.success(), "{who:?}: {}", text(&out));
        let v = json(&out);
        for (i, name) in ["chelsea.png", "coffee.png"].iter().enumerate() {
            let reference = Command::new(sibling("caffe-inprocess"))
                .args([
                    "--model".as_ref(),
                    open_nsfw().as_os_str(),
                    "--image".as_ref(),
                    sample(name).as_os_str(),
                ])
                .output()
                .unwrap();
            assert!(reference.status.success(), "{}", text(&reference));
            let r: serde_json::Value = serde_json::from_slice(&reference.stdout).unwrap();
            let want: Vec<f64> = r["outputs"]["prob"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let got = probs(&v, i);
            assert_eq!(got.len(), 2);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6,
                    "{who:?} {name}: sandboxed {got:?} vs in-process {want:?}"
                );
            }
        }
        // Every layer that matters is reported in force.
        let layers = &v["layers"];
        for layer in [
            "user-ns",
            "pid-ns",
            "net-ns",
            "mount-ns",
            "landlock",
            "seccomp",
            "capabilities",
            "no-new-privs",
        ] {
            let state = serde_json::to_string(&layers["layers"][layer]).unwrap();
            assert!(
                state.contains("nforced"),
                "{who:?}: layer {layer} not enforced: {state}\n{layers:#}"
            );
        }
    }
}

#[test]
fn constant_half_input_gives_the_reference_probabilities() {
    let dir = tmpdir("half");
    let npy = dir.join("half.npy");
    write_npy(&npy, &[1, 3, 224, 224], &vec![0.5; 3 * 224 * 224]);
    let out = infer_json(As::Invoker, &open_nsfw(), &[&npy]);
    assert!(out.status.success(), "{}", text(&out));
    let p = probs(&json(&out), 0);
    assert!(
        (p[0] - 0.712694).abs() < 1e-5 && (p[1] - 0.287306).abs() < 1e-5,
        "{p:?}"
    );
}

fn err_kind(out: &std::process::Output) -> (String, String) {
    let v = json(out);
    let e = if v["error"].is_object() {
        v["error"].clone()
    } else {
        v["results"][0]["error"].clone()
    };
    (
        e["kind"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

const TINY_INPUT: &str = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
"#;

#[test]
fn missing_model_directory_names_the_path() {
    let out = run_s(
        As::Invoker,
        &["infer", "--json", "--model", "/nonexistent/model", "x.png"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert_eq!(kind, "file");
    assert!(msg.contains("/nonexistent/model"), "{msg}");
}

#[test]
fn prototxt_that_is_not_text_format_is_a_bad_model() {
    let d = model_dir("nottext", "this is { not a prototxt", b"");
    let img = sample("chelsea.png");
    let out = infer_json(As::Invoker, &d, &[&img]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert!(kind == "bad_model" || kind == "firewall", "{kind}: {msg}");
    assert!(
        msg.contains("text format") || msg.contains("prototxt"),
        "{msg}"
    );
}

#[test]
fn corrupted_caffemodel_is_a_bad_model_naming_the_weights() {
    let weights = std::fs::read(open_nsfw().join("resnet_50_1by2_nsfw.caffemodel")).unwrap();
    let proto = std::fs::read_to_string(open_nsfw().join("deploy.prototxt")).unwrap();
    let d = model_dir("corrupt", &proto, &weights[..weights.len() / 3]);
    let img = sample("chelsea.png");
    let out = infer_json(As::Invoker, &d, &[&img]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert!(kind == "bad_model" || kind == "firewall", "{kind}: {msg}");
    assert!(
        msg.contains("weights") || msg.contains("caffemodel"),
        "{msg}"
    );
}

#[test]
fn unknown_layer_type_is_a_caffe_check_failure_with_its_message() {
    let d = model_dir(
        "unknown",
        &format!("{TINY_INPUT}layer {{ name: \"evil\" type: \"NoSuchLayer\" bottom: \"data\" top: \"x\" }}\n"),
        b"",
    );
    let img = sample("chelsea.png");
    for who in both() {
        let out = infer_json(who, &d, &[&img]);
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
        let (kind, msg) = err_kind(&out);
        assert!(
            kind == "caffe_check_failed" || kind == "firewall",
            "{who:?} {kind}: {msg}"
        );
        assert!(msg.contains("NoSuchLayer"), "{msg}");
    }
}

#[test]
fn division_by_zero_in_layer_setup_is_reported_as_sigfpe() {
    let d = model_dir(
        "fpe",
        &format!(
            "{TINY_INPUT}layer {{ name: \"conv\" type: \"Convolution\" bottom: \"data\" top: \"c\" \
             convolution_param {{ num_output: 2 kernel_size: 3 group: 0 }} }}\n"
        ),
        b"",
    );
    let img = sample("chelsea.png");
    for who in both() {
        let out = run(
            who,
            &[
                "infer".as_ref(),
                "--json".as_ref(),
                "--firewall".as_ref(),
                "off".as_ref(),
                "--model".as_ref(),
                d.as_os_str(),
                img.as_os_str(),
            ],
        );
        assert_eq!(out.status.code(), Some(6), "{who:?}: {}", text(&out));
        let (kind, msg) = err_kind(&out);
        assert_eq!(kind, "crashed", "{msg}");
        assert!(msg.contains("SIGFPE"), "{msg}");
    }
}

#[test]
fn out_of_bounds_embed_index_is_reported_as_sigsegv_and_later_inputs_still_answered() {
    let d = model_dir(
        "segv",
        r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "em" type: "Embed" bottom: "data" top: "e" embed_param { num_output: 2 input_dim: 2 } }
"#,
        b"",
    );
    let t = tmpdir("segv-in");
    let bad = t.join("bad.npy");
    let good = t.join("good.npy");
    write_npy(&bad, &[1, 3], &[1e9, 1e9, 1e9]);
    write_npy(&good, &[1, 3], &[0.0, 1.0, 0.0]);
    let out = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--json".as_ref(),
            "--firewall".as_ref(),
            "off".as_ref(),
            "--model".as_ref(),
            d.as_os_str(),
            bad.as_os_str(),
            good.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["results"][0]["error"]["kind"], "crashed", "{v:#}");
    assert!(
        v["results"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGSEGV"),
        "{v:#}"
    );
    // The worker died on the first input; a fresh one answered the second.
    assert!(v["results"][1]["outputs"].is_array(), "{v:#}");
}

#[test]
fn wrong_input_shape_is_a_bad_input_checked_before_the_worker() {
    let t = tmpdir("shape");
    let npy = t.join("small.npy");
    write_npy(&npy, &[1, 3, 10, 10], &vec![0.0; 300]);
    let out = infer_json(As::Invoker, &open_nsfw(), &[&npy]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert_eq!(kind, "bad_input");
    assert!(
        msg.contains("[1, 3, 10, 10]") && msg.contains("[1, 3, 224, 224]"),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_not_an_image_is_a_bad_input_and_the_photo_after_it_is_answered() {
    let t = tmpdir("notimg");
    let txt = t.join("notes.jpg");
    std::fs::write(&txt, "definitely not a JPEG").unwrap();
    set_mode(&txt, 0o644);
    let img = sample("chelsea.png");
    let out = infer_json(As::Invoker, &open_nsfw(), &[&txt, &img]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["results"][0]["error"]["kind"], "bad_input", "{v:#}");
    assert!(v["results"][1]["outputs"].is_array(), "{v:#}");
}

#[test]
fn a_model_that_exceeds_the_memory_limit_is_reported_as_such() {
    // An InnerProduct whose weight blob is 20000 × 30000 floats (2.4 GB, under Caffe's INT_MAX element cap)
    // is allocated and filled while the net is built: far above the 1 GiB limit given here.
    let d = model_dir(
        "mem",
        r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 100 dim: 100 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 20000 } }
"#,
        b"",
    );
    let img = sample("chelsea.png");
    let out = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--json".as_ref(),
            "--firewall".as_ref(),
            "off".as_ref(),
            "--memory-limit".as_ref(),
            "1024".as_ref(),
            "--model".as_ref(),
            d.as_os_str(),
            img.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert_eq!(kind, "memory_limit", "{msg}");
}

#[test]
fn a_model_that_computes_too_long_hits_the_wall_clock_deadline() {
    // A deep stack of large convolutions: seconds of CPU per forward.
    let mut p = String::from(
        r#"layer { name: "data" type: "Input" top: "l0" input_param { shape { dim: 1 dim: 64 dim: 256 dim: 256 } } }
"#,
    );
    for i in 0..40 {
        p.push_str(&format!(
            "layer {{ name: \"c{i}\" type: \"Convolution\" bottom: \"l{i}\" top: \"l{}\" convolution_param {{ num_output: 64 kernel_size: 3 pad: 1 }} }}\n",
            i + 1
        ));
    }
    let d = model_dir("slow", &p, b"");
    let t = tmpdir("slow-in");
    let npy = t.join("x.npy");
    write_npy(&npy, &[1, 64, 256, 256], &vec![0.1; 64 * 256 * 256]);
    let started = std::time::Instant::now();
    let out = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--json".as_ref(),
            "--firewall".as_ref(),
            "off".as_ref(),
            "--timeout".as_ref(),
            "0.5".as_ref(),
            "--model".as_ref(),
            d.as_os_str(),
            npy.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let (kind, msg) = err_kind(&out);
    assert_eq!(kind, "timeout", "{msg}");
    assert!(msg.contains("500 ms"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
