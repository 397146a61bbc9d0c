//! Layer-level checks: the inference allowlist, engines, names and per-layer list sizes.

use std::collections::BTreeSet;

use crate::finding::{Finding, FindingCode};
use crate::policy::FirewallPolicy;
use crate::proto::caffe::NetParameter;

/// Why a well-known dangerous layer type is refused (shown in the finding).
fn danger(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Python" => "embeds a Python interpreter and imports a named module at net construction (code execution)",
        "HDF5Output" => "creates/truncates the file named in hdf5_output_param.file_name at net construction",
        "HDF5Data" => "reads host files listed in hdf5_data_param.source through libhdf5",
        "Data" => "opens the LevelDB/LMDB database at data_param.source (creates lock files and directories)",
        "ImageData" => "reads the image list at image_data_param.source and decodes host images with OpenCV",
        "WindowData" => "reads host files named in window_data_param.source",
        "MemoryData" => "is a training input layer fed from host memory, not an inference input",
        "InfogainLoss" => "reads the matrix file at infogain_loss_param.source",
        "DummyData" => "allocates and fills blobs of arbitrary shape at net construction",
        _ => return None,
    })
}

/// Check every layer's type, engine, name and list sizes.
pub fn check_layers(net: &NetParameter, policy: &FirewallPolicy, out: &mut Vec<Finding>) {
    if net.layer.len() > policy.max_layers {
        out.push(Finding::error(
            FindingCode::LimitExceeded,
            format!("{} layers, limit {}", net.layer.len(), policy.max_layers),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, l) in net.layer.iter().enumerate() {
        let label = super::layer_label(l.name.clone(), i);
        let ty = l.r#type.as_deref().unwrap_or("");
        if !policy.layer_type_allowed(ty) {
            let why = danger(ty).unwrap_or("is outside the inference allowlist");
            out.push(
                Finding::error(
                    FindingCode::LayerTypeNotAllowed,
                    format!(
                        "layer type {ty:?} {why}; opt in with allow_layer_types if you trust it"
                    ),
                )
                .at_layer(&label)
                .at_field("type"),
            );
        }
        if l.name.as_deref().unwrap_or("").is_empty() {
            out.push(
                Finding::warning(
                    FindingCode::BadTopology,
                    "unnamed layer (weights cannot be matched to it)",
                )
                .at_layer(&label),
            );
        } else if !names.insert(l.name.clone()) {
            out.push(
                Finding::error(
                    FindingCode::BadTopology,
                    "duplicate layer name (weights would be copied into the first one only)",
                )
                .at_layer(&label)
                .at_field("name"),
            );
        }
        if !l.loss_weight.is_empty() && l.loss_weight.len() != l.top.len() {
            out.push(
                Finding::error(
                    FindingCode::BadTopology,
                    format!(
                        "{} loss_weight values for {} tops",
                        l.loss_weight.len(),
                        l.top.len()
                    ),
                )
                .at_layer(&label)
                .at_field("loss_weight"),
            );
        }
        if !l.propagate_down.is_empty() && l.propagate_down.len() != l.bottom.len() {
            out.push(
                Finding::error(
                    FindingCode::BadTopology,
                    format!(
                        "{} propagate_down values for {} bottoms",
                        l.propagate_down.len(),
                        l.bottom.len()
                    ),
                )
                .at_layer(&label)
                .at_field("propagate_down"),
            );
        }
        for (field, engine) in engines(l) {
            // DEFAULT = 0, CAFFE = 1; CUDNN (2) is a fatal error in this CPU-only build.
            if engine > 1 {
                out.push(
                    Finding::error(
                        FindingCode::BadParameter,
                        "only the CAFFE engine exists in a CPU-only Caffe",
                    )
                    .at_layer(&label)
                    .at_field(field),
                );
            }
        }
        if l.transform_param.is_some() {
            out.push(
                Finding::warning(
                    FindingCode::BadParameter,
                    "transform_param is ignored by inference layers",
                )
                .at_layer(&label)
                .at_field("transform_param"),
            );
        }
    }
}

fn engines(l: &crate::proto::caffe::LayerParameter) -> Vec<(&'static str, i32)> {
    let mut v = Vec::new();
    let mut push = |f: &'static str, e: Option<i32>| {
        if let Some(e) = e {
            v.push((f, e));
        }
    };
    push(
        "convolution_param.engine",
        l.convolution_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "pooling_param.engine",
        l.pooling_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "relu_param.engine",
        l.relu_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "sigmoid_param.engine",
        l.sigmoid_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "softmax_param.engine",
        l.softmax_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "tanh_param.engine",
        l.tanh_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "lrn_param.engine",
        l.lrn_param.as_ref().and_then(|p| p.engine),
    );
    push(
        "spp_param.engine",
        l.spp_param.as_ref().and_then(|p| p.engine),
    );
    v
}
