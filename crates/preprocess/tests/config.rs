//! model.toml schema, defaults, refusals, and model-directory helpers.

use std::fs;

use caffe_sandbox_preprocess::{BlobProto, Crop, Error, ModelConfig, PreprocessConfig};
use prost::Message;

const FULL: &str = r#"
[model]
prototxt = "deploy.prototxt"
weights = "*.caffemodel"
input = "data"
output = "prob"
labels = "labels.txt"
[preprocess]
resize = [256, 256]
crop = "center"
raw_scale = 255.0
mean = [104.0, 117.0, 123.0]
input_scale = 1.0
channel_swap = [2, 1, 0]
color = true
"#;

fn parse(s: &str) -> Result<ModelConfig, Error> {
    ModelConfig::from_toml_str(s, "model.toml")
}

#[test]
fn empty_file_gives_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, ModelConfig::default());
    assert_eq!(c.model.prototxt, "deploy.prototxt");
    assert_eq!(c.model.weights, None);
    let p = &c.preprocess;
    assert_eq!(p.resize, None);
    assert_eq!(p.crop, Crop::Center);
    assert_eq!(p.raw_scale, 255.0);
    assert_eq!(p.input_scale, 1.0);
    assert_eq!(p.mean, None);
    assert!(p.color);
    assert_eq!(p.effective_channel_swap(3), vec![2, 1, 0]);
    assert_eq!(p.effective_channel_swap(1), vec![0]);
}

#[test]
fn full_example_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.model.input.as_deref(), Some("data"));
    assert_eq!(c.model.labels.as_deref(), Some("labels.txt"));
    assert_eq!(c.preprocess.resize, Some([256, 256]));
    assert_eq!(c.preprocess.mean, Some(vec![104.0, 117.0, 123.0]));
    let c = parse("[preprocess]\ncrop = \"none\"\ncolor = false\n").unwrap();
    assert_eq!(c.preprocess.crop, Crop::None);
    assert_eq!(c.preprocess.channels(), 1);
}

#[test]
fn unknown_fields_are_refused_by_name() {
    for (src, name) in [
        ("[preprocess]\nmean_vaule = [1.0]\n", "mean_vaule"),
        ("[model]\nprotxt = \"a\"\n", "protxt"),
        ("[postprocess]\n", "postprocess"),
        ("top_level = 1\n", "top_level"),
    ] {
        let e = parse(src).unwrap_err();
        assert!(matches!(e, Error::ConfigParse { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains(name) && m.contains("model.toml"), "{src}: {m}");
    }
}

#[test]
fn wrong_types_and_values_are_refused() {
    let cases = [
        ("[preprocess]\ncrop = \"diagonal\"\n", "crop"),
        ("[preprocess]\nresize = [256]\n", "resize"),
        ("[preprocess]\nresize = [0, 10]\n", "preprocess.resize"),
        ("[preprocess]\nresize = [100000, 10]\n", "preprocess.resize"),
        ("[preprocess]\nraw_scale = nan\n", "preprocess.raw_scale"),
        (
            "[preprocess]\ninput_scale = inf\n",
            "preprocess.input_scale",
        ),
        ("[preprocess]\nmean = [1.0, 2.0]\n", "preprocess.mean"),
        (
            "[preprocess]\nmean = [1.0]\nmean_file = \"m.npy\"\ncolor = false\n",
            "mutually exclusive",
        ),
        (
            "[preprocess]\nchannel_swap = [0, 0, 1]\n",
            "preprocess.channel_swap",
        ),
        (
            "[preprocess]\nchannel_swap = [0, 1, 3]\n",
            "preprocess.channel_swap",
        ),
        (
            "[preprocess]\nchannel_swap = [2, 1, 0]\ncolor = false\n",
            "preprocess.channel_swap",
        ),
        (
            "[preprocess]\nmean_file = \"../etc/passwd\"\n",
            "preprocess.mean_file",
        ),
        ("[model]\nprototxt = \"/etc/passwd\"\n", "model.prototxt"),
        (
            "[model]\nweights = \"a/../../w.caffemodel\"\n",
            "model.weights",
        ),
        ("[model]\nlabels = \"\"\n", "model.labels"),
        ("[model]\ninput = \"\"\n", "model.input"),
    ];
    for (src, needle) in cases {
        let m = parse(src).unwrap_err().to_string();
        assert!(m.contains(needle), "{src}: {m}");
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn load_from_dir_without_model_toml_is_default() {
    let d = tmpdir();
    assert_eq!(
        ModelConfig::load_from_dir(d.path()).unwrap(),
        ModelConfig::default()
    );
}

#[test]
fn load_from_dir_loads_the_mean_file() {
    let d = tmpdir();
    fs::write(
        d.path().join("model.toml"),
        "[preprocess]\nmean_file = \"mean.binaryproto\"\n",
    )
    .unwrap();
    fs::write(
        d.path().join("mean.binaryproto"),
        BlobProto::from_array(&[1, 3, 1, 2], &[1., 2., 3., 4., 5., 6.]).encode_to_vec(),
    )
    .unwrap();
    let c = ModelConfig::load_from_dir(d.path()).unwrap();
    let m = c.preprocess.mean_image.as_ref().unwrap();
    assert_eq!((m.channels, m.height, m.width), (3, 1, 2));
    assert_eq!(m.per_channel(), vec![1.5, 3.5, 5.5]);
}

#[test]
fn load_from_dir_errors_name_the_file() {
    let d = tmpdir();
    fs::write(
        d.path().join("model.toml"),
        "[preprocess]\nmean_file = \"missing.npy\"\n",
    )
    .unwrap();
    let m = ModelConfig::load_from_dir(d.path())
        .unwrap_err()
        .to_string();
    assert!(m.contains("missing.npy"), "{m}");

    fs::write(d.path().join("model.toml"), "[preprocess]\nbogus = 1\n").unwrap();
    let m = ModelConfig::load_from_dir(d.path())
        .unwrap_err()
        .to_string();
    assert!(m.contains("model.toml") && m.contains("bogus"), "{m}");

    fs::write(d.path().join("model.toml"), vec![b'#'; 70 * 1024]).unwrap();
    let e = ModelConfig::load_from_dir(d.path()).unwrap_err();
    assert!(matches!(e, Error::FileTooLarge { cap: 65536, .. }), "{e:?}");
}

#[test]
fn weights_auto_discovery() {
    let d = tmpdir();
    let c = ModelConfig::default();
    let m = c.weights_path(d.path()).unwrap_err().to_string();
    assert!(m.contains("no *.caffemodel"), "{m}");
    fs::write(d.path().join("a.caffemodel"), b"").unwrap();
    assert_eq!(
        c.weights_path(d.path()).unwrap(),
        d.path().join("a.caffemodel")
    );
    fs::write(d.path().join("b.caffemodel"), b"").unwrap();
    let m = c.weights_path(d.path()).unwrap_err().to_string();
    assert!(m.contains("several"), "{m}");
    let c = parse("[model]\nweights = \"b.caffemodel\"\n").unwrap();
    assert_eq!(
        c.weights_path(d.path()).unwrap(),
        d.path().join("b.caffemodel")
    );
    assert_eq!(
        c.prototxt_path(d.path()).unwrap(),
        d.path().join("deploy.prototxt")
    );
    assert_eq!(c.labels_path(d.path()).unwrap(), None);
}

#[test]
fn preprocess_config_default_matches_toml_default() {
    assert_eq!(
        PreprocessConfig::default(),
        parse("[preprocess]\n").unwrap().preprocess
    );
}

#[test]
fn shipped_open_nsfw_model_toml_and_labels_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/open_nsfw");
    let c = ModelConfig::load_from_dir(&dir).unwrap();
    assert_eq!(
        c.model.weights.as_deref(),
        Some("resnet_50_1by2_nsfw.caffemodel")
    );
    assert_eq!(c.preprocess.resize, Some([256, 256]));
    assert_eq!(c.preprocess.mean, Some(vec![104.0, 117.0, 123.0]));
    let labels =
        caffe_sandbox_preprocess::read_labels(&c.labels_path(&dir).unwrap().unwrap()).unwrap();
    assert_eq!(labels, vec!["sfw", "nsfw"]);
}
