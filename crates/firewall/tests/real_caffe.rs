//! "What was checked is what runs", against the real Caffe: the canonical net and weights of
//! open_nsfw load in Debian's Caffe 1.0 (`caffe test`) and give exactly the outputs of the
//! original files.

mod common;

use std::path::Path;
use std::process::Command;

use caffe_sandbox_firewall::{check_dir, model_files, proto, FirewallPolicy};
use prost_reflect::DynamicMessage;

fn caffe_prefix() -> std::path::PathBuf {
    let prefix = std::env::var_os("CAFFE_PREFIX").map_or_else(
        || common::workspace().join(".cache/caffe/prefix"),
        Into::into,
    );
    let prefix = common::require(
        prefix,
        "Caffe prefix",
        "run scripts/setup or set CAFFE_PREFIX",
    );
    common::require(
        prefix.join("usr/bin/caffe"),
        "caffe tool",
        "run scripts/setup",
    );
    prefix
}

fn caffe(prefix: &Path, args: &[&std::ffi::OsStr], cwd: &Path) -> std::process::Output {
    let lib = format!("{0}/usr/lib/x86_64-linux-gnu:{0}/usr/lib", prefix.display());
    Command::new(prefix.join("usr/bin/caffe"))
        .args(args)
        .current_dir(cwd)
        .env("LD_LIBRARY_PATH", lib)
        .env("GLOG_logtostderr", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .expect("run caffe")
}

/// Corpus entries (none touches host files) that the firewall refuses and that really kill Caffe 1.0:
/// CHECK-failure aborts, SIGFPE (group 0) and SIGSEGV (legacy input_shape out of bounds).
const KILL_REAL_CAFFE: &[&str] = &[
    "axis_out_of_range",
    "conv_group_zero",
    "conv_in_place",
    "conv_kernel_too_big",
    "conv_num_output_zero",
    "conv_stride_zero",
    "cudnn_engine",
    "duplicate_top",
    "eltwise_shape_mismatch",
    "flatten_in_place",
    "ip_num_output_zero",
    "legacy_input_shape_short",
    "lrn_even_size",
    "param_specs_too_many",
    "pool_pad_ge_kernel",
    "pool_stride_zero",
    "reshape_bad_count",
    "slice_bad_point",
    "unknown_bottom",
];

/// Runs of real Caffe per corpus entry before "it survived" is believed.
const ATTEMPTS: usize = 5;

#[test]
fn corpus_entries_really_kill_caffe_and_are_refused() {
    let prefix = caffe_prefix();
    let corpus = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let tmp = std::env::temp_dir().join(format!("fw-real-caffe-kill-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    for name in KILL_REAL_CAFFE {
        let file = corpus.join(format!("{name}.prototxt"));
        let bytes = std::fs::read(&file).expect("corpus file");
        assert!(
            !caffe_sandbox_firewall::inspect(&bytes, None, &FirewallPolicy::default()).accepted,
            "{name}"
        );
        // Some entries are out-of-bounds *reads* (e.g. legacy_input_shape_short): whether Caffe then crashes
        // depends on what lies past the end, so each entry gets a few attempts and one crash is the proof.
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let out = caffe(
                &prefix,
                &[
                    "time".as_ref(),
                    "-iterations".as_ref(),
                    "1".as_ref(),
                    "-model".as_ref(),
                    file.as_os_str(),
                ],
                &tmp,
            );
            if !out.status.success() {
                last = None;
                break;
            }
            last = Some(out);
        }
        if let Some(out) = last {
            panic!(
                "{name}: real Caffe survived it {ATTEMPTS} times:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}

fn caffe_outputs(prefix: &Path, model: &Path, weights: &Path) -> Vec<String> {
    let args = [
        "test".as_ref(),
        "-iterations".as_ref(),
        "1".as_ref(),
        "-model".as_ref(),
        model.as_os_str(),
        "-weights".as_ref(),
        weights.as_os_str(),
    ];
    let out = caffe(prefix, &args, &std::env::temp_dir());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "caffe failed:\n{log}");
    log.lines()
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m))
        .filter(|m| m.contains(" = "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn canonical_open_nsfw_runs_identically_in_real_caffe() {
    let prefix = std::env::var_os("CAFFE_PREFIX").map_or_else(
        || common::workspace().join(".cache/caffe/prefix"),
        Into::into,
    );
    let prefix = common::require(
        prefix,
        "Caffe prefix",
        "run scripts/setup or set CAFFE_PREFIX",
    );
    common::require(
        prefix.join("usr/bin/caffe"),
        "caffe tool",
        "run scripts/setup",
    );
    let dir = common::open_nsfw_dir();
    let model = check_dir(&dir, &FirewallPolicy::default()).expect("open_nsfw accepted");
    let tmp = std::env::temp_dir().join(format!("fw-real-caffe-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    // Caffe's CLI reads text; render the canonical binary net as text for it.
    let net = DynamicMessage::decode(
        proto::net_parameter(),
        model.canonical_net_bytes().as_slice(),
    )
    .expect("decode");
    std::fs::write(tmp.join("net.prototxt"), net.to_text_format()).expect("write");
    std::fs::write(
        tmp.join("weights.caffemodel"),
        model.canonical_weights_bytes().expect("weights"),
    )
    .expect("write");
    let (p, w) = model_files(&dir).expect("files");
    let original = caffe_outputs(&prefix, &p, &w.expect("caffemodel"));
    let canonical = caffe_outputs(
        &prefix,
        &tmp.join("net.prototxt"),
        &tmp.join("weights.caffemodel"),
    );
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        original.iter().any(|l| l.contains("prob = ")),
        "{original:?}"
    );
    assert_eq!(original, canonical);
}

/// `Top shape:` lines per layer from Caffe's net-construction log.
fn caffe_top_shapes(log: &str) -> std::collections::BTreeMap<String, Vec<Vec<i64>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut current = None;
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("] ") else {
            continue;
        };
        if let Some(name) = msg.strip_prefix("Setting up ") {
            current = Some(name.trim().to_owned());
            out.insert(name.trim().to_owned(), Vec::new());
        } else if let (Some(rest), Some(cur)) = (msg.strip_prefix("Top shape: "), current.as_ref())
        {
            let dims: Vec<i64> = rest
                .split_whitespace()
                .take_while(|t| !t.starts_with('('))
                .filter_map(|t| t.parse().ok())
                .collect();
            out.get_mut(cur).expect("current layer").push(dims);
        }
    }
    out
}

#[test]
fn shape_inference_agrees_with_real_caffe_on_random_nets() {
    let prefix = caffe_prefix();
    let tmp = std::env::temp_dir().join(format!("fw-real-caffe-shapes-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let policy = FirewallPolicy::default();
    let (mut accepted, mut seed) = (0, 0u64);
    let mut types = std::collections::BTreeMap::new();
    while accepted < 60 && seed < 3000 {
        seed += 1;
        let text = common::random_net(seed);
        let report = caffe_sandbox_firewall::inspect(text.as_bytes(), None, &policy);
        if !report.accepted {
            continue;
        }
        accepted += 1;
        let file = tmp.join("net.prototxt");
        std::fs::write(&file, &text).expect("write");
        let args = [
            "time".as_ref(),
            "-phase".as_ref(),
            "TEST".as_ref(),
            "-iterations".as_ref(),
            "1".as_ref(),
            "-model".as_ref(),
            file.as_os_str(),
        ];
        let out = caffe(&prefix, &args, &tmp);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "seed {seed}: the firewall accepted a net that kills Caffe:\n{text}\n{log}"
        );
        let real = caffe_top_shapes(&log);
        for l in &report.layers {
            *types.entry(l.ty.clone()).or_insert(0usize) += 1;
            assert_eq!(
                Some(&l.top_shapes),
                real.get(&l.name),
                "seed {seed}, layer {}:\n{text}",
                l.name
            );
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
    eprintln!("{accepted} accepted of {seed} random nets; layers compared by type: {types:?}");
    assert!(accepted >= 60, "only {accepted} random nets accepted");
    assert!(
        types.len() >= 15,
        "too few layer types exercised: {types:?}"
    );
}

const MADE_LAYERS: &str = r#"
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 stride: 2 group: 2 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm" lrn_param { local_size: 3 } }
layer { name: "up" type: "Deconvolution" bottom: "norm" top: "up" convolution_param { num_output: 4 kernel_size: 2 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "up" top: "ip" inner_product_param { num_output: 3 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.3 } } }
"#;

/// A model made (trained two steps) with the real Caffe passes, and its canonical bytes give the
/// same outputs as the files Caffe wrote.
#[test]
fn model_made_with_real_caffe_passes_and_runs_identically() {
    let prefix = caffe_prefix();
    let tmp = std::env::temp_dir().join(format!("fw-real-caffe-made-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let train = format!(
        r#"name: "made"
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ shape {{ dim: 4 dim: 3 dim: 16 dim: 16 }} shape {{ dim: 4 }}
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "constant" value: 1 }} }} }}
{MADE_LAYERS}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"#
    );
    std::fs::write(tmp.join("train.prototxt"), train).expect("write");
    std::fs::write(
        tmp.join("solver.prototxt"),
        "net: \"train.prototxt\"\nbase_lr: 0.01\nlr_policy: \"fixed\"\nmax_iter: 2\nsnapshot: 2\nsnapshot_prefix: \"made\"\nsolver_mode: CPU\nrandom_seed: 7\n",
    )
    .expect("write");
    let out = caffe(
        &prefix,
        &[
            "train".as_ref(),
            "-solver".as_ref(),
            "solver.prototxt".as_ref(),
        ],
        &tmp,
    );
    assert!(
        out.status.success(),
        "caffe train:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model_dir = tmp.join("model");
    std::fs::create_dir_all(&model_dir).expect("dir");
    std::fs::rename(
        tmp.join("made_iter_2.caffemodel"),
        model_dir.join("made.caffemodel"),
    )
    .expect("snapshot");
    let deploy = format!(
        "name: \"made\"\ninput: \"data\"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 16\ninput_dim: 16\n{MADE_LAYERS}layer {{ name: \"prob\" type: \"Softmax\" bottom: \"ip\" top: \"prob\" }}\n"
    );
    std::fs::write(model_dir.join("deploy.prototxt"), &deploy).expect("write");

    let model = check_dir(&model_dir, &FirewallPolicy::default()).expect("made model accepted");
    let r = model.report();
    assert_eq!(r.outputs, vec![("prob".to_owned(), vec![1, 3])]);
    let w = r.weights.as_ref().expect("weights");
    assert_eq!(w.matched_layers, 6, "{r}");
    assert_eq!(
        w.ignored_layers, 2,
        "DummyData and SoftmaxWithLoss are ignored: {r}"
    );

    let net = DynamicMessage::decode(
        proto::net_parameter(),
        model.canonical_net_bytes().as_slice(),
    )
    .expect("decode");
    std::fs::write(tmp.join("net.prototxt"), net.to_text_format()).expect("write");
    std::fs::write(
        tmp.join("weights.caffemodel"),
        model.canonical_weights_bytes().expect("weights"),
    )
    .expect("write");
    let original = caffe_outputs(
        &prefix,
        &model_dir.join("deploy.prototxt"),
        &model_dir.join("made.caffemodel"),
    );
    let canonical = caffe_outputs(
        &prefix,
        &tmp.join("net.prototxt"),
        &tmp.join("weights.caffemodel"),
    );
    std::fs::remove_dir_all(&tmp).ok();
    assert_eq!(
        original.iter().filter(|l| l.contains("prob = ")).count(),
        6,
        "{original:?}"
    );
    assert_eq!(original, canonical);
}
