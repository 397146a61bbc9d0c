//! Inference requests and responses of the Open Inference Protocol v2, checked in the supervisor before anything
//! reaches a worker: names, datatypes (FP32 tensors; BYTES encoded images), shapes against the model's blobs,
//! batch size, element counts and byte sizes. Encoded images are decoded inside the sandboxed worker.
use crate::binary;
use crate::errors::ApiError;
use base64::Engine;
use caffe_sandbox_supervisor::{Input, ModelInfo, Output};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Vec<RequestOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An output the client asked for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    pub binary: bool,
    pub classification: Option<usize>,
}

/// A checked request.
#[derive(Debug)]
pub struct Checked {
    pub id: Option<String>,
    pub inputs: Vec<Input>,
    /// Empty: every model output, in the worker's order.
    pub outputs: Vec<Wanted>,
    pub binary_default: bool,
}

/// Request limits applied while checking.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_batch: usize,
    pub max_image_bytes: usize,
}

/// Parses and checks a request against the model.
pub fn check(
    json_part: &[u8],
    binary_part: &[u8],
    info: &ModelInfo,
    limits: &RequestLimits,
) -> Result<Checked, ApiError> {
    let req: Request = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad_request(format!("invalid inference request: {e}")))?;
    let binary_default = flag(&req.parameters, "binary_data_output")?.unwrap_or(false);
    let mut cursor = 0usize;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, r) in req.inputs.iter().enumerate() {
        if req.inputs[..i].iter().any(|o| o.name == r.name) {
            return Err(ApiError::bad_request(format!(
                "input '{}' given twice",
                r.name
            )));
        }
    }
    let mut req = req;
    for r in req.inputs.iter_mut() {
        let blob = info
            .inputs
            .iter()
            .find(|b| b.name == r.name)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the model has no input '{}' (inputs: {})",
                    r.name,
                    names(info.inputs.iter().map(|b| b.name.as_str()))
                ))
            })?;
        let raw = match r.parameters.get("binary_data_size") {
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "input '{}': binary_data_size must be a non-negative integer",
                        r.name
                    ))
                })?;
                if r.data.is_some() {
                    return Err(ApiError::bad_request(format!(
                        "input '{}' has both binary_data_size and data",
                        r.name
                    )));
                }
                Some(binary::take(binary_part, &mut cursor, n as usize, &r.name)?)
            }
            None => None,
        };
        let numel = numel(&r.shape, &r.name)?;
        match r.datatype.as_str() {
            "FP32" => {
                if r.shape.len() != blob.dims.len()
                    || r.shape.iter().skip(1).zip(blob.dims.iter().skip(1)).any(|(&a, &b)| a != b as i64)
                {
                    return Err(ApiError::bad_request(format!(
                        "input '{}': shape {:?} does not match the model's {:?} (only the first, batch, dimension may differ)",
                        r.name, r.shape, blob.dims
                    )));
                }
                let batch = r.shape.first().copied().unwrap_or(1);
                if batch < 1 || batch as usize > limits.max_batch {
                    return Err(ApiError::bad_request(format!(
                        "input '{}': batch size {batch} is outside 1..={}",
                        r.name, limits.max_batch
                    )));
                }
                let data = match (raw, r.data.take()) {
                    (Some(raw), _) => binary::f32_le(raw, &r.name)?,
                    (None, Some(d)) => d.into_numbers(&r.name)?,
                    (None, None) => return Err(no_data(&r.name)),
                };
                if data.len() != numel {
                    return Err(ApiError::bad_request(format!(
                        "input '{}': shape {:?} needs {numel} FP32 values, {} given",
                        r.name,
                        r.shape,
                        data.len()
                    )));
                }
                inputs.push(Input::Tensor {
                    name: r.name.clone(),
                    dims: r.shape.iter().map(|&d| d as usize).collect(),
                    data,
                });
            }
            "BYTES" => {
                if numel != 1 {
                    return Err(ApiError::bad_request(format!(
                        "input '{}': one encoded image per request (shape [1]), got shape {:?}",
                        r.name, r.shape
                    )));
                }
                let image = match (raw, r.data.take()) {
                    (Some(raw), _) => {
                        let items = binary::bytes_elements(raw, &r.name)?;
                        match items.as_slice() {
                            [one] => one.to_vec(),
                            _ => {
                                return Err(ApiError::bad_request(format!(
                                    "input '{}': shape {:?} needs 1 BYTES element, {} given",
                                    r.name,
                                    r.shape,
                                    items.len()
                                )))
                            }
                        }
                    }
                    (None, Some(d)) => d.into_image(&r.name)?,
                    (None, None) => return Err(no_data(&r.name)),
                };
                if image.len() > limits.max_image_bytes {
                    return Err(ApiError::bad_request(format!(
                        "input '{}': image of {} bytes exceeds the limit of {} bytes",
                        r.name,
                        image.len(),
                        limits.max_image_bytes
                    )));
                }
                inputs.push(Input::Image {
                    name: r.name.clone(),
                    bytes: image,
                });
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "input '{}': datatype {other} is not supported (FP32 tensors, or BYTES holding one encoded image)",
                    r.name
                )))
            }
        }
    }
    if cursor != binary_part.len() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input's binary_data_size",
            binary_part.len() - cursor
        )));
    }
    if let Some(missing) = info
        .inputs
        .iter()
        .find(|b| !req.inputs.iter().any(|r| r.name == b.name))
    {
        return Err(ApiError::bad_request(format!(
            "input '{}' is missing",
            missing.name
        )));
    }
    let mut outputs = Vec::new();
    for o in &req.outputs {
        if !info.outputs.iter().any(|b| b.name == o.name) {
            return Err(ApiError::bad_request(format!(
                "the model has no output '{}' (outputs: {})",
                o.name,
                names(info.outputs.iter().map(|b| b.name.as_str()))
            )));
        }
        let classification = match o.parameters.get("classification") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|&k| k >= 1).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "output '{}': classification must be a positive integer",
                    o.name
                ))
            })? as usize),
        };
        outputs.push(Wanted {
            name: o.name.clone(),
            binary: flag(&o.parameters, "binary_data")?.unwrap_or(binary_default),
            classification,
        });
    }
    Ok(Checked {
        id: req.id,
        inputs,
        outputs,
        binary_default,
    })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

fn no_data(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "input '{name}' has neither data nor binary_data_size"
    ))
}

fn flag(p: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match p.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "parameter {key} must be a boolean"
        ))),
    }
}

fn numel(shape: &[i64], name: &str) -> Result<usize, ApiError> {
    let mut n: usize = 1;
    for &d in shape {
        if d < 0 {
            return Err(ApiError::bad_request(format!(
                "input '{name}': negative dimension in shape {shape:?}"
            )));
        }
        n = n
            .checked_mul(d as usize)
            .filter(|&n| n <= 1 << 31)
            .ok_or_else(|| {
                ApiError::bad_request(format!("input '{name}': shape {shape:?} is too large"))
            })?;
    }
    Ok(n)
}

/// JSON tensor data, flattened while it is parsed: 4 bytes per number, never a `serde_json::Value` tree (whose
/// nodes would multiply the memory a body of numbers costs).
#[derive(Default)]
struct Data {
    numbers: Vec<f32>,
    strings: Vec<String>,
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut data = Data::default();
        d.deserialize_any(Flatten(&mut data))?;
        Ok(data)
    }
}

struct Flatten<'a>(&'a mut Data);

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("numbers or strings, possibly in nested arrays")
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.numbers.push(v as f32);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.numbers.push(v as f32);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.numbers.push(v as f32);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.strings.push(v.to_owned());
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Seed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct Seed<'a>(&'a mut Data);

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Flatten(self.0))
    }
}

impl Data {
    fn into_numbers(self, name: &str) -> Result<Vec<f32>, ApiError> {
        if !self.strings.is_empty() {
            return Err(ApiError::bad_request(format!(
                "input '{name}': FP32 data must be numbers"
            )));
        }
        Ok(self.numbers)
    }

    /// A BYTES image in JSON: one base64 string (encoded images are not UTF-8 text).
    fn into_image(self, name: &str) -> Result<Vec<u8>, ApiError> {
        if !self.numbers.is_empty() || self.strings.len() != 1 {
            return Err(ApiError::bad_request(format!(
                "input '{name}': expected exactly one BYTES element, a base64 string"
            )));
        }
        base64::engine::general_purpose::STANDARD
            .decode(self.strings[0].trim())
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "input '{name}': BYTES data is not valid base64 ({e})"
                ))
            })
    }
}

/// Builds the response JSON and binary part.
pub fn respond(
    checked: &Checked,
    model: &str,
    version: &str,
    outputs: &[Output],
    labels: Option<&[String]>,
) -> (Value, Vec<u8>) {
    let wanted: Vec<Wanted> = if checked.outputs.is_empty() {
        outputs
            .iter()
            .map(|o| Wanted {
                name: o.name.clone(),
                binary: checked.binary_default,
                classification: None,
            })
            .collect()
    } else {
        checked.outputs.clone()
    };
    let mut binary = Vec::new();
    let mut out_json = Vec::new();
    for w in &wanted {
        let Some(o) = outputs.iter().find(|o| o.name == w.name) else {
            continue;
        };
        let (datatype, shape, data, raw): (&str, Vec<usize>, Value, Vec<u8>) =
            match w.classification {
                Some(k) => {
                    let batch = o.dims.first().copied().filter(|&b| b > 0).unwrap_or(1);
                    let per = o.data.len() / batch;
                    let k = k.min(per);
                    let rows: Vec<String> = (0..batch)
                        .flat_map(|b| {
                            let row = &o.data[b * per..(b + 1) * per];
                            caffe_sandbox_preprocess::top_k(row, k)
                                .into_iter()
                                .map(|(i, s)| match labels.and_then(|l| l.get(i)) {
                                    Some(l) => format!("{s:.6}:{i}:{l}"),
                                    None => format!("{s:.6}:{i}"),
                                })
                        })
                        .collect();
                    let raw = if w.binary {
                        binary::encode_bytes_elements(&rows)
                    } else {
                        Vec::new()
                    };
                    ("BYTES", vec![batch, k], json!(rows), raw)
                }
                None => {
                    let raw = if w.binary {
                        o.data.iter().flat_map(|v| v.to_le_bytes()).collect()
                    } else {
                        Vec::new()
                    };
                    ("FP32", o.dims.clone(), json!(o.data), raw)
                }
            };
        let mut t = json!({ "name": o.name, "datatype": datatype, "shape": shape });
        if w.binary {
            t["parameters"] = json!({ "binary_data_size": raw.len() });
            binary.extend_from_slice(&raw);
        } else {
            t["data"] = data;
        }
        out_json.push(t);
    }
    let mut doc = json!({ "model_name": model, "model_version": version, "outputs": out_json });
    if let Some(id) = &checked.id {
        doc["id"] = json!(id);
    }
    (doc, binary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caffe_sandbox_supervisor::BlobShape;

    fn info() -> ModelInfo {
        ModelInfo {
            inputs: vec![BlobShape {
                name: "data".into(),
                dims: vec![1, 3],
            }],
            outputs: vec![BlobShape {
                name: "prob".into(),
                dims: vec![1, 2],
            }],
        }
    }

    const L: RequestLimits = RequestLimits {
        max_batch: 4,
        max_image_bytes: 100,
    };

    fn err(j: &str, bin: &[u8]) -> String {
        check(j.as_bytes(), bin, &info(), &L).unwrap_err().message
    }

    #[test]
    fn json_and_binary_tensors() {
        let c = check(
            br#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":[[1,2,3]]}]}"#,
            &[],
            &info(),
            &L,
        )
        .unwrap();
        assert!(
            matches!(&c.inputs[0], Input::Tensor { dims, data, .. } if dims == &[1, 3] && data == &[1.0, 2.0, 3.0])
        );
        let bin: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let c = check(
            br#"{"inputs":[{"name":"data","shape":[2,3],"datatype":"FP32","parameters":{"binary_data_size":24}}],
                "outputs":[{"name":"prob","parameters":{"binary_data":true,"classification":1}}]}"#,
            &bin, &info(), &L,
        )
        .unwrap();
        assert!(matches!(&c.inputs[0], Input::Tensor { dims, .. } if dims == &[2, 3]));
        assert_eq!(c.outputs[0].classification, Some(1));
        assert!(c.outputs[0].binary);
        let png = binary::encode_bytes_elements(&[b"\x89PNG"]);
        let j = format!(
            r#"{{"inputs":[{{"name":"data","shape":[1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
            png.len()
        );
        let c = check(j.as_bytes(), &png, &info(), &L).unwrap();
        assert!(matches!(&c.inputs[0], Input::Image { bytes, .. } if bytes == b"\x89PNG"));
        let c = check(
            br#"{"inputs":[{"name":"data","shape":[1],"datatype":"BYTES","data":["iVBORw=="]}]}"#,
            &[],
            &info(),
            &L,
        )
        .unwrap();
        assert!(matches!(&c.inputs[0], Input::Image { bytes, .. } if bytes == b"\x89PNG"));
    }

    #[test]
    fn every_mismatch_is_a_named_400() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("{", b"", "invalid inference request"),
            (
                r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
                b"",
                "no input 'x'",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                b"",
                "does not match",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[5,3],"datatype":"FP32","data":[]}]}"#,
                b"",
                "batch size 5",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
                b"",
                "needs 3 FP32 values, 2 given",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":["a",2,3]}]}"#,
                b"",
                "must be numbers",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"INT64","data":[1,2,3]}]}"#,
                b"",
                "INT64 is not supported",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#,
                &[0; 8],
                "runs past the end",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#,
                &[0; 8],
                "needs 3 FP32 values",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
                &[0; 4],
                "not claimed",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[2],"datatype":"BYTES","data":["AA==","AA=="]}]}"#,
                b"",
                "one encoded image",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1],"datatype":"BYTES","data":["%%%"]}]}"#,
                b"",
                "not valid base64",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,-3],"datatype":"FP32","data":[]}]}"#,
                b"",
                "negative dimension",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3,99999999,99999999],"datatype":"FP32","data":[]}]}"#,
                b"",
                "too large",
            ),
            (r#"{"inputs":[]}"#, b"", "input 'data' is missing"),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"nope"}]}"#,
                b"",
                "no output 'nope'",
            ),
            (
                r#"{"inputs":[{"name":"data","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"prob","parameters":{"classification":0}}]}"#,
                b"",
                "positive integer",
            ),
        ];
        for (j, b, want) in cases {
            let m = err(j, b);
            assert!(m.contains(want), "{j}: {m}");
        }
        let big = format!(
            r#"{{"inputs":[{{"name":"data","shape":[1],"datatype":"BYTES","data":["{}"]}}]}}"#,
            base64::engine::general_purpose::STANDARD.encode([0u8; 101])
        );
        assert!(err(&big, b"").contains("exceeds the limit"));
    }

    #[test]
    fn classification_strings_and_binary_outputs() {
        let c = Checked {
            id: Some("r1".into()),
            inputs: vec![],
            outputs: vec![Wanted {
                name: "prob".into(),
                binary: false,
                classification: Some(1),
            }],
            binary_default: false,
        };
        let outs = [Output {
            name: "prob".into(),
            dims: vec![2, 2],
            data: vec![0.25, 0.75, 0.9, 0.1],
        }];
        let labels = ["sfw".to_string(), "nsfw".to_string()];
        let (doc, bin) = respond(&c, "m", "1", &outs, Some(&labels));
        assert!(bin.is_empty());
        assert_eq!(
            doc["outputs"][0]["data"],
            json!(["0.750000:1:nsfw", "0.900000:0:sfw"])
        );
        assert_eq!(doc["outputs"][0]["shape"], json!([2, 1]));
        assert_eq!(doc["id"], "r1");
        let c = Checked {
            outputs: vec![],
            binary_default: true,
            ..c
        };
        let (doc, bin) = respond(&c, "m", "1", &outs, None);
        assert_eq!(doc["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(binary::f32_le(&bin, "o").unwrap(), outs[0].data);
    }
}
