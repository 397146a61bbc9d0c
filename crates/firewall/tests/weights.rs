//! The caffemodel side: HDF5 refusal, shape matching against the deploy net, malformed wire
//! data, legacy formats, and the canonical weights.

use caffe_sandbox_firewall::proto::caffe::{
    BlobProto, BlobShape, LayerParameter, NetParameter, V1LayerParameter,
};
use caffe_sandbox_firewall::weights::HDF5_SIGNATURE;
use caffe_sandbox_firewall::{check, inspect, FindingCode, FirewallPolicy, Severity};
use prost::Message;

const NET: &str = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
"#;

fn blob(shape: &[i64], n: usize) -> BlobProto {
    BlobProto {
        shape: Some(BlobShape {
            dim: shape.to_vec(),
        }),
        data: (0..n).map(|i| i as f32 * 0.5).collect(),
        ..Default::default()
    }
}

fn layer(name: &str, blobs: Vec<BlobProto>) -> LayerParameter {
    LayerParameter {
        name: Some(name.into()),
        r#type: Some("Convolution".into()),
        blobs,
        ..Default::default()
    }
}

fn model(layers: Vec<LayerParameter>) -> Vec<u8> {
    NetParameter {
        name: Some("w".into()),
        layer: layers,
        ..Default::default()
    }
    .encode_to_vec()
}

fn good() -> Vec<u8> {
    model(vec![
        LayerParameter {
            name: Some("data".into()),
            r#type: Some("MemoryData".into()),
            ..Default::default()
        },
        layer("conv", vec![blob(&[2, 3, 3, 3], 54), blob(&[2], 2)]),
        layer("unused_in_deploy", vec![blob(&[1 << 20], 1)]),
    ])
}

fn refused_with(weights: &[u8], code: FindingCode) {
    let r = inspect(NET.as_bytes(), Some(weights), &FirewallPolicy::default());
    assert!(!r.accepted, "expected refusal with {code:?}:\n{r}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.code == code && f.severity == Severity::Error),
        "expected {code:?}:\n{r}"
    );
}

#[test]
fn matching_weights_are_accepted_and_canonicalised() {
    let w = good();
    let m = check(NET.as_bytes(), Some(&w), &FirewallPolicy::default()).expect("accepted");
    let canon = NetParameter::decode(m.canonical_weights_bytes().expect("weights"))
        .expect("canonical decodes");
    assert_eq!(
        canon.layer.len(),
        1,
        "only matched layers with parameters are kept"
    );
    let l = &canon.layer[0];
    assert_eq!(l.name.as_deref(), Some("conv"));
    assert_eq!(l.blobs[0], blob(&[2, 3, 3, 3], 54));
    assert_eq!(l.blobs[1], blob(&[2], 2));
    let s = m.report().weights.as_ref().expect("summary");
    assert_eq!((s.layers, s.matched_layers, s.ignored_layers), (3, 1, 1));
}

#[test]
fn legacy_v1_weights_with_legacy_dims_and_double_data_are_converted() {
    let legacy = |dims: [i32; 4], n: usize, double: bool| {
        let vals: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
        BlobProto {
            num: Some(dims[0]),
            channels: Some(dims[1]),
            height: Some(dims[2]),
            width: Some(dims[3]),
            data: if double {
                vec![]
            } else {
                vals.iter().map(|&v| v as f32).collect()
            },
            double_data: if double { vals } else { vec![] },
            ..Default::default()
        }
    };
    let w = NetParameter {
        layers: vec![V1LayerParameter {
            name: Some("conv".into()),
            r#type: Some(4),
            blobs: vec![
                legacy([2, 3, 3, 3], 54, false),
                legacy([1, 1, 1, 2], 2, true),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let m = check(NET.as_bytes(), Some(&w), &FirewallPolicy::default()).expect("accepted");
    assert!(m.report().weights.as_ref().expect("summary").legacy_format);
    let canon =
        NetParameter::decode(m.canonical_weights_bytes().expect("weights")).expect("decodes");
    assert!(canon.layers.is_empty());
    assert_eq!(
        canon.layer[0].blobs,
        vec![blob(&[2, 3, 3, 3], 54), blob(&[2], 2)]
    );
}

#[test]
fn hdf5_weights_are_refused_at_every_signature_offset() {
    for off in [0usize, 512, 1024, 2048, 4096] {
        let mut w = good();
        w.resize(w.len().max(off + 64), 0);
        w[off..off + 8].copy_from_slice(HDF5_SIGNATURE);
        refused_with(&w, FindingCode::Hdf5Weights);
        let p = FirewallPolicy {
            allow_hdf5_weights: true,
            ..FirewallPolicy::default()
        };
        assert!(
            !inspect(NET.as_bytes(), Some(&w), &p).accepted,
            "HDF5 cannot be checked, so never passes"
        );
    }
}

#[test]
fn shape_mismatches_are_refused() {
    refused_with(
        &model(vec![layer(
            "conv",
            vec![blob(&[2, 3, 5, 5], 150), blob(&[2], 2)],
        )]),
        FindingCode::WeightMismatch,
    );
    refused_with(
        &model(vec![layer("conv", vec![blob(&[2, 3, 3, 3], 54)])]),
        FindingCode::WeightMismatch,
    );
    refused_with(
        &model(vec![layer(
            "conv",
            vec![blob(&[2, 3, 3, 3], 53), blob(&[2], 2)],
        )]),
        FindingCode::WeightMismatch,
    );
    // int64 dim that Caffe would truncate to 2.
    refused_with(
        &model(vec![layer(
            "conv",
            vec![blob(&[(1 << 32) + 2, 3, 3, 3], 54), blob(&[2], 2)],
        )]),
        FindingCode::WeightMismatch,
    );
    // Blobs for a layer that has no parameters (Caffe aborts).
    refused_with(
        &model(vec![layer("data", vec![blob(&[1], 1)])]),
        FindingCode::WeightMismatch,
    );
}

#[test]
fn malformed_wire_data_is_refused() {
    let w = good();
    refused_with(&w[..w.len() - 3], FindingCode::WeightsParseError);
    // A layer whose length prefix claims ~2^63 bytes.
    refused_with(
        &[
            0xa2, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        FindingCode::WeightsParseError,
    );
    // An over-long varint and a group wire type.
    refused_with(
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        FindingCode::WeightsParseError,
    );
    refused_with(&[0x0b], FindingCode::WeightsParseError);
    refused_with(&[0x00], FindingCode::WeightsParseError);
}

#[test]
fn missing_weights_are_a_warning() {
    let r = inspect(
        NET.as_bytes(),
        Some(&model(vec![])),
        &FirewallPolicy::default(),
    );
    assert!(r.accepted);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::MissingWeights && f.severity == Severity::Warning));
}

#[test]
fn blob_and_layer_counts_are_capped() {
    // 3000 layers of 5 empty blobs each: 2 bytes per blob on the wire, 15000 blobs.
    let l = layer("x", vec![BlobProto::default(); 5]);
    refused_with(&model(vec![l; 3000]), FindingCode::WeightsParseError);
    let tiny = LayerParameter::default();
    refused_with(&model(vec![tiny; 5000]), FindingCode::WeightsParseError);
}

#[test]
fn unpacked_floats_are_accepted_like_caffe() {
    // proto2 parsers accept unpacked encodings of packed fields; so does the walk.
    let mut body = Vec::new();
    let dims = [2u8, 3, 3, 3];
    body.extend_from_slice(&[0x3a, 6, 0x0a, 4]);
    body.extend_from_slice(&dims);
    for i in 0..54u32 {
        body.push(0x2d); // field 5, wire type 5
        body.extend_from_slice(&(i as f32 * 0.5).to_le_bytes());
    }
    let blob0 = BlobProto::decode(body.as_slice()).expect("valid BlobProto");
    assert_eq!(blob0, blob(&[2, 3, 3, 3], 54));
    let mut layer_bytes = Vec::new();
    prost::encoding::string::encode(1, &"conv".to_owned(), &mut layer_bytes);
    prost::encoding::encode_key(
        7,
        prost::encoding::WireType::LengthDelimited,
        &mut layer_bytes,
    );
    prost::encoding::encode_varint(body.len() as u64, &mut layer_bytes);
    layer_bytes.extend_from_slice(&body);
    prost::encoding::message::encode(7, &blob(&[2], 2), &mut layer_bytes);
    let mut w = Vec::new();
    prost::encoding::encode_key(100, prost::encoding::WireType::LengthDelimited, &mut w);
    prost::encoding::encode_varint(layer_bytes.len() as u64, &mut w);
    w.extend_from_slice(&layer_bytes);
    let m = check(NET.as_bytes(), Some(&w), &FirewallPolicy::default()).expect("accepted");
    let canon =
        NetParameter::decode(m.canonical_weights_bytes().expect("weights")).expect("decodes");
    assert_eq!(canon.layer[0].blobs[0], blob(&[2, 3, 3, 3], 54));
}
