//! Schema-generic checks over every field of the parsed net: strings that may hold file paths
//! (an allowlist of string fields, so new path-like fields are refused too), embedded parameter
//! blobs, enum values the schema does not define, and caps on repeated fields and strings.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::finding::{Finding, FindingCode};
use crate::policy::FirewallPolicy;

/// String fields that carry names, never paths. Any other string field is refused.
const NAME_STRING_FIELDS: &[(&str, &str)] = &[
    ("caffe.NetParameter", "name"),
    ("caffe.NetParameter", "input"),
    ("caffe.LayerParameter", "name"),
    ("caffe.LayerParameter", "type"),
    ("caffe.LayerParameter", "bottom"),
    ("caffe.LayerParameter", "top"),
    ("caffe.ParamSpec", "name"),
    ("caffe.FillerParameter", "type"),
    ("caffe.NetState", "stage"),
    ("caffe.NetStateRule", "stage"),
    ("caffe.NetStateRule", "not_stage"),
    ("caffe.V1LayerParameter", "name"),
    ("caffe.V1LayerParameter", "bottom"),
    ("caffe.V1LayerParameter", "top"),
    ("caffe.V1LayerParameter", "param"),
    ("caffe.V0LayerParameter", "name"),
    ("caffe.V0LayerParameter", "type"),
];

/// Walk every set field of `net` and report generic problems.
pub fn check_fields(net: &DynamicMessage, policy: &FirewallPolicy, out: &mut Vec<Finding>) {
    let layer_field = net.descriptor().get_field_by_name("layer");
    for (field, value) in net.fields() {
        if Some(&field) == layer_field.as_ref() {
            if let Value::List(layers) = value {
                for (i, layer) in layers.iter().enumerate() {
                    if let Value::Message(m) = layer {
                        let name = crate::checks::layer_label(
                            m.get_field_by_name("name")
                                .and_then(|v| v.as_str().map(str::to_owned)),
                            i,
                        );
                        walk(m, "", Some(&name), policy, out);
                    }
                }
            }
            continue;
        }
        let mut single = DynamicMessage::new(net.descriptor());
        single.set_field(&field, value.clone());
        walk(&single, "", None, policy, out);
    }
}

fn walk(
    msg: &DynamicMessage,
    prefix: &str,
    layer: Option<&str>,
    policy: &FirewallPolicy,
    out: &mut Vec<Finding>,
) {
    let desc = msg.descriptor();
    for (field, value) in msg.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let at = |f: Finding| {
            let f = f.at_field(path.clone());
            match layer {
                Some(l) => f.at_layer(l),
                None => f,
            }
        };
        if desc.full_name() == "caffe.LayerParameter" && field.name() == "blobs" {
            out.push(at(Finding::error(
                FindingCode::EmbeddedBlobs,
                "parameter blobs embedded in the net definition are refused (weights come only from the checked caffemodel)",
            )));
            continue;
        }
        let items: Vec<&Value> = match value {
            Value::List(items) => {
                if items.len() > policy.max_repeated {
                    out.push(at(Finding::error(
                        FindingCode::LimitExceeded,
                        format!("{} entries, limit {}", items.len(), policy.max_repeated),
                    )));
                    continue;
                }
                items.iter().collect()
            }
            v => vec![v],
        };
        for item in items {
            match item {
                Value::String(s) => {
                    if !NAME_STRING_FIELDS.contains(&(desc.full_name(), field.name())) {
                        out.push(at(Finding::error(
                            FindingCode::PathField,
                            format!(
                                "string field {}.{} may name a host file or module and is refused",
                                desc.name(),
                                field.name()
                            ),
                        )));
                    } else if s.len() > policy.max_string_len {
                        out.push(at(Finding::error(
                            FindingCode::LimitExceeded,
                            format!(
                                "string of {} bytes, limit {}",
                                s.len(),
                                policy.max_string_len
                            ),
                        )));
                    }
                }
                Value::Bytes(_) => out.push(at(Finding::error(
                    FindingCode::PathField,
                    "bytes fields are not used by inference nets and are refused",
                ))),
                Value::EnumNumber(n) => {
                    let known = field
                        .kind()
                        .as_enum()
                        .is_some_and(|e| e.get_value(*n).is_some());
                    if !known {
                        out.push(at(Finding::error(
                            FindingCode::BadEnum,
                            format!("enum value {n} is not defined"),
                        )));
                    }
                }
                Value::Message(m) => walk(m, &path, layer, policy, out),
                _ => {}
            }
        }
    }
}
