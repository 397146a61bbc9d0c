//! Legacy formats and phase rules, normalised *before* Caffe could see them.
//!
//! * V0/V1 nets (`layers`, field 2) are refused: Caffe's upgrade paths have known crashes and
//!   the canonical net this crate hands to Caffe is always the current (`layer`) format.
//! * Legacy `input`/`input_dim`/`input_shape` are checked for consistency (Caffe's
//!   `UpgradeNetInput` indexes them without bounds checks) and converted into a leading `Input`
//!   layer exactly as `UpgradeNetInput` would, so the canonical net has no legacy fields.
//! * `include`/`exclude` rules are evaluated for the TEST phase (the phase the worker builds
//!   nets in); layers that would be filtered out are dropped and the rules removed, so what was
//!   checked is exactly the layer list Caffe builds. Level and stage rules are refused.

use crate::finding::{Finding, FindingCode};
use crate::policy::FirewallPolicy;
use crate::proto::caffe::{
    BlobShape, InputParameter, LayerParameter, NetParameter, NetStateRule, Phase,
};

/// Normalise legacy inputs and phase rules in place; report problems.
pub fn normalize(net: &mut NetParameter, policy: &FirewallPolicy, out: &mut Vec<Finding>) {
    if !net.layers.is_empty() {
        out.push(
            Finding::error(
                FindingCode::LegacyFormat,
                format!(
                    "legacy V0/V1 net format ({} `layers` entries) is refused; upgrade it with Caffe's upgrade_net_proto_text offline",
                    net.layers.len()
                ),
            )
            .at_field("layers"),
        );
    }
    legacy_inputs(net, policy, out);
    if net.debug_info.take().is_some() | net.force_backward.take().is_some() {
        out.push(Finding {
            severity: crate::Severity::Info,
            ..Finding::error(
                FindingCode::StateRule,
                "debug_info/force_backward removed from the canonical net",
            )
        });
    }
    if net.state.is_some() {
        out.push(
            Finding::error(
                FindingCode::StateRule,
                "net `state` is refused (the worker sets the TEST phase)",
            )
            .at_field("state"),
        );
    }
    let mut kept = Vec::with_capacity(net.layer.len());
    for (i, mut layer) in std::mem::take(&mut net.layer).into_iter().enumerate() {
        let label = super::layer_label(layer.name.clone(), i);
        let mut ok = true;
        for (what, rules) in [("include", &layer.include), ("exclude", &layer.exclude)] {
            for r in rules {
                if r.min_level.is_some()
                    || r.max_level.is_some()
                    || !r.stage.is_empty()
                    || !r.not_stage.is_empty()
                {
                    out.push(
                        Finding::error(
                            FindingCode::StateRule,
                            "level/stage rules are refused; only phase rules are supported",
                        )
                        .at_layer(&label)
                        .at_field(what),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            kept.push(layer);
            continue;
        }
        let test = |r: &NetStateRule| r.phase.is_none_or(|p| p == Phase::Test as i32);
        // Caffe: with include rules the layer is kept iff one matches; else dropped iff an exclude matches.
        let included = if layer.include.is_empty() {
            !layer.exclude.iter().any(test)
        } else {
            layer.include.iter().any(test)
        };
        if included {
            layer.include.clear();
            layer.exclude.clear();
            layer.phase = None;
            kept.push(layer);
        }
    }
    net.layer = kept;
}

fn legacy_inputs(net: &mut NetParameter, policy: &FirewallPolicy, out: &mut Vec<Finding>) {
    let (n_in, n_shape, n_dim) = (net.input.len(), net.input_shape.len(), net.input_dim.len());
    if n_in == 0 && n_shape == 0 && n_dim == 0 {
        return;
    }
    if !policy.allow_legacy_inputs {
        out.push(
            Finding::error(
                FindingCode::LegacyInput,
                "legacy input fields are refused by policy",
            )
            .at_field("input"),
        );
        return;
    }
    let mut bad = |reason: String, field: &str| {
        out.push(Finding::error(FindingCode::LegacyInput, reason).at_field(field))
    };
    if n_shape > 0 && n_dim > 0 {
        bad("both input_shape and input_dim given".into(), "input_dim");
        return;
    }
    if n_shape > 0 && n_shape != n_in {
        bad(
            format!("{n_in} inputs but {n_shape} input_shape entries"),
            "input_shape",
        );
        return;
    }
    if n_dim > 0 && n_dim != 4 * n_in {
        bad(
            format!(
                "{n_in} inputs need {} input_dim values, got {n_dim}",
                4 * n_in
            ),
            "input_dim",
        );
        return;
    }
    if n_shape == 0 && n_dim == 0 {
        bad(
            format!("{n_in} inputs without input_shape or input_dim"),
            "input",
        );
        return;
    }
    let shapes: Vec<BlobShape> = if n_shape > 0 {
        std::mem::take(&mut net.input_shape)
    } else {
        net.input_dim
            .chunks(4)
            .map(|c| BlobShape {
                dim: c.iter().map(|&d| i64::from(d)).collect(),
            })
            .collect()
    };
    let layer = LayerParameter {
        name: Some("input".into()),
        r#type: Some("Input".into()),
        top: std::mem::take(&mut net.input),
        input_param: Some(InputParameter { shape: shapes }),
        ..Default::default()
    };
    net.input_dim.clear();
    net.input_shape.clear();
    net.layer.insert(0, layer);
    out.push(Finding {
        severity: crate::Severity::Info,
        ..Finding::error(
            FindingCode::LegacyInput,
            "legacy input fields converted into an Input layer named \"input\"",
        )
        .at_field("input")
    });
}
