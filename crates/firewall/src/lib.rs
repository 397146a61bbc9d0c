//! # caffe-sandbox-firewall
//!
//! Memory-safe parsing and checking of Caffe models in the supervisor, before the real Caffe
//! (inside the sandboxed worker) sees them.
//!
//! * **Parsing** — the deploy `.prototxt` with prost-reflect's text-format parser (after size,
//!   UTF-8 and nesting-depth caps), the `.caffemodel` with a bounded wire-format walk; both against
//!   the project's own copy of Caffe's schema (`proto/caffe.proto`, compiled by protox at build time).
//! * **Checks** (one module each) — layer types outside the inference allowlist, any string field
//!   that may hold a file path or module name, embedded blobs, legacy formats and inputs, phase
//!   rules, HDF5 weights, dimensions, layer parameters (the CHECKs and divisions Caffe would abort
//!   or crash on), shape inference with memory/FLOP budgets, and weight shapes against the net.
//! * **What was checked is what runs** — [`CheckedModel::canonical_net_bytes`] and
//!   [`CheckedModel::canonical_weights_bytes`] are binary re-encodings of exactly what was checked.
//! * **Integrity** — a sha256 manifest and minisign signatures ([`integrity`]).
//!
//! ```no_run
//! use caffe_sandbox_firewall::{check_dir, FirewallPolicy};
//! let model = check_dir("models/open_nsfw".as_ref(), &FirewallPolicy::default())?;
//! println!("{}", model.report());
//! let net: Vec<u8> = model.canonical_net_bytes(); // hand these to the worker
//! # Ok::<(), caffe_sandbox_firewall::FirewallError>(())
//! ```

pub mod checks;
pub mod error;
pub mod finding;
pub mod integrity;
pub mod parse;
pub mod policy;
pub mod proto;
pub mod report;
pub mod shapes;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

pub use error::FirewallError;
pub use finding::{Finding, FindingCode, Severity};
pub use policy::{FirewallPolicy, INFERENCE_LAYER_TYPES};
pub use report::{Report, WeightsSummary};
pub use shapes::LayerInfo;

use proto::caffe::NetParameter;

/// A model that passed the firewall, with the canonical bytes to hand to Caffe.
#[derive(Debug, Clone)]
pub struct CheckedModel {
    report: Report,
    net: NetParameter,
    weights: Option<Vec<u8>>,
}

impl CheckedModel {
    /// The report (accepted; may hold warnings).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The checked, normalised net (legacy inputs converted, phase rules applied).
    pub fn net(&self) -> &NetParameter {
        &self.net
    }

    /// The checked `NetParameter` as binary protobuf: the worker parses exactly this
    /// (`NetParameter::ParseFromArray`) and builds the net in the TEST phase without upgrades.
    pub fn canonical_net_bytes(&self) -> Vec<u8> {
        self.net.encode_to_vec()
    }

    /// The canonical weights (binary `NetParameter` with only the matched layers' names, types
    /// and shape-checked blobs), or `None` when no caffemodel was given.
    pub fn canonical_weights_bytes(&self) -> Option<&[u8]> {
        self.weights.as_deref()
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Inspect a model given as bytes. Never fails: problems are findings in the report.
pub fn inspect(prototxt: &[u8], weights: Option<&[u8]>, policy: &FirewallPolicy) -> Report {
    run(prototxt, weights, policy, false).0
}

/// Check a model given as bytes; `Err(Refused)` when any finding is an error.
pub fn check(
    prototxt: &[u8],
    weights: Option<&[u8]>,
    policy: &FirewallPolicy,
) -> Result<CheckedModel, FirewallError> {
    let (report, net, canon) = run(prototxt, weights, policy, true);
    match net {
        Some(net) if report.accepted => Ok(CheckedModel {
            report,
            net,
            weights: canon,
        }),
        _ => {
            let summary = report
                .errors()
                .take(3)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            Err(FirewallError::Refused {
                summary,
                report: Box::new(report),
            })
        }
    }
}

/// The files of a model directory: `deploy.prototxt` and the single `*.caffemodel` (if any).
pub fn model_files(dir: &Path) -> Result<(PathBuf, Option<PathBuf>), FirewallError> {
    let io = |source| FirewallError::Io {
        path: dir.to_owned(),
        source,
    };
    let proto = dir.join("deploy.prototxt");
    if !proto.is_file() {
        return Err(FirewallError::ModelDir {
            dir: dir.to_owned(),
            what: "no deploy.prototxt".into(),
        });
    }
    let mut models = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.extension().is_some_and(|x| x == "caffemodel") {
            models.push(p);
        }
    }
    if models.len() > 1 {
        return Err(FirewallError::ModelDir {
            dir: dir.to_owned(),
            what: "more than one .caffemodel".into(),
        });
    }
    Ok((proto, models.pop()))
}

/// Read a regular file (never a FIFO or device) of at most `cap` bytes (+1 to detect excess).
pub(crate) fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, FirewallError> {
    use std::io::Read;
    let io = |source| FirewallError::Io {
        path: path.to_owned(),
        source,
    };
    // Refuse FIFOs and devices before opening: opening a FIFO blocks, /dev/zero never ends.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(FirewallError::ModelDir {
            dir: path.to_owned(),
            what: "not a regular file".into(),
        });
    }
    let f = std::fs::File::open(path).map_err(io)?;
    if !f.metadata().map_err(io)?.is_file() {
        return Err(FirewallError::ModelDir {
            dir: path.to_owned(),
            what: "not a regular file".into(),
        });
    }
    let mut buf = Vec::new();
    // One byte over the cap so the size finding still fires.
    f.take(cap as u64 + 1).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

fn read_dir_model(
    dir: &Path,
    policy: &FirewallPolicy,
) -> Result<(Vec<u8>, Option<Vec<u8>>), FirewallError> {
    let (p, w) = model_files(dir)?;
    let proto = read_capped(&p, policy.max_prototxt_bytes)?;
    let weights = w
        .map(|w| read_capped(&w, policy.max_weights_bytes))
        .transpose()?;
    Ok((proto, weights))
}

/// Inspect a model directory (`deploy.prototxt` + optional `*.caffemodel`).
pub fn inspect_dir(dir: &Path, policy: &FirewallPolicy) -> Result<Report, FirewallError> {
    let (p, w) = read_dir_model(dir, policy)?;
    Ok(inspect(&p, w.as_deref(), policy))
}

/// Check a model directory; see [`check`].
pub fn check_dir(dir: &Path, policy: &FirewallPolicy) -> Result<CheckedModel, FirewallError> {
    let (p, w) = read_dir_model(dir, policy)?;
    check(&p, w.as_deref(), policy)
}

fn run(
    prototxt: &[u8],
    weights: Option<&[u8]>,
    policy: &FirewallPolicy,
    canonical: bool,
) -> (Report, Option<NetParameter>, Option<Vec<u8>>) {
    let mut findings = Vec::new();
    let mut report = Report {
        net_name: None,
        accepted: false,
        layers: vec![],
        outputs: vec![],
        total_params: 0,
        total_bytes: 0,
        total_flops: 0,
        inference_complete: false,
        weights: None,
        prototxt_sha256: sha256_hex(prototxt),
        findings: vec![],
    };
    let mut net = match parse::parse_prototxt(prototxt, policy) {
        Ok(p) => {
            checks::fields::check_fields(&p.dynamic, policy, &mut findings);
            Some(p.net)
        }
        Err(f) => {
            findings.push(f);
            None
        }
    };
    let mut canon = None;
    if let Some(net) = net.as_mut() {
        report.net_name = net.name.clone();
        checks::legacy::normalize(net, policy, &mut findings);
        checks::layers::check_layers(net, policy, &mut findings);
        let inf = shapes::infer(net, policy, &mut findings);
        report.outputs = inf
            .outputs
            .iter()
            .filter_map(|o| inf.blobs.get(o).map(|s| (o.clone(), s.clone())))
            .collect();
        report.total_params = inf.total_params;
        report.total_bytes = inf.total_bytes;
        report.total_flops = inf.total_flops;
        report.inference_complete = inf.complete;
        if let Some(w) = weights {
            canon = check_weights(w, &inf, policy, canonical, &mut report, &mut findings);
        }
        report.layers = inf.layers;
    } else if let Some(w) = weights {
        if weights::hdf5_signature_offset(w).is_some() && !policy.allow_hdf5_weights {
            findings.push(hdf5_finding(w));
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    report.accepted = !findings.iter().any(|f| f.severity == Severity::Error);
    report.findings = findings;
    (report, net, canon)
}

fn hdf5_finding(w: &[u8]) -> Finding {
    let off = weights::hdf5_signature_offset(w).unwrap_or(0);
    Finding::error(
        FindingCode::Hdf5Weights,
        format!("weights carry the HDF5 signature at offset {off}: Caffe would hand them to libhdf5; refused"),
    )
}

fn check_weights(
    w: &[u8],
    inf: &shapes::Inference,
    policy: &FirewallPolicy,
    canonical: bool,
    report: &mut Report,
    out: &mut Vec<Finding>,
) -> Option<Vec<u8>> {
    if w.len() > policy.max_weights_bytes {
        out.push(Finding::error(
            FindingCode::InputTooLarge,
            format!(
                "caffemodel is {} bytes, limit {}",
                w.len(),
                policy.max_weights_bytes
            ),
        ));
        return None;
    }
    if weights::hdf5_signature_offset(w).is_some() {
        if !policy.allow_hdf5_weights {
            out.push(hdf5_finding(w));
            return None;
        }
        out.push(Finding::error(
            FindingCode::Hdf5Weights,
            "HDF5 weights are opted in, but the firewall cannot check them; refused",
        ));
        return None;
    }
    let lim = weights::WeightLimits {
        max_layers: policy.max_layers,
        max_repeated: policy.max_repeated,
        max_string_len: policy.max_string_len,
        max_blobs: policy.max_blobs,
    };
    let parsed = match weights::parse_weights(w, lim) {
        Ok(p) => p,
        Err(f) => {
            out.push(f);
            return None;
        }
    };
    if parsed.legacy {
        out.push(Finding {
            severity: Severity::Info,
            ..Finding::error(
                FindingCode::LegacyFormat,
                "legacy V1/V0 weight layers converted to the current format",
            )
        });
    }
    // Caffe copies every source layer in order, so the last of duplicate names wins.
    let mut by_name: BTreeMap<&str, &weights::WeightLayer> = BTreeMap::new();
    for l in &parsed.layers {
        if by_name.insert(l.name.as_str(), l).is_some() {
            out.push(
                Finding::warning(
                    FindingCode::WeightMismatch,
                    "duplicate layer name in the caffemodel; the last one is used",
                )
                .at_layer(&l.name),
            );
        }
    }
    let mut matched = Vec::new();
    let mut used = 0usize;
    for li in &inf.layers {
        let Some(src) = by_name.get(li.name.as_str()) else {
            if !li.param_shapes.is_empty() {
                out.push(
                    Finding::warning(
                        FindingCode::MissingWeights,
                        "no weights in the caffemodel: Caffe keeps the filler's values",
                    )
                    .at_layer(&li.name),
                );
            }
            continue;
        };
        used += 1;
        if !li.inferred {
            continue;
        }
        if src.blobs.len() != li.param_shapes.len() {
            out.push(
                Finding::error(
                    FindingCode::WeightMismatch,
                    format!(
                        "caffemodel has {} blobs, the net expects {} (Caffe aborts)",
                        src.blobs.len(),
                        li.param_shapes.len()
                    ),
                )
                .at_layer(&li.name)
                .at_field("blobs"),
            );
            continue;
        }
        let mut ok = true;
        for (j, (b, s)) in src.blobs.iter().zip(&li.param_shapes).enumerate() {
            let n = s.iter().product::<i64>();
            if !b.shape_matches(s) || b.len() as i64 != n {
                out.push(
                    Finding::error(
                        FindingCode::WeightMismatch,
                        format!("blob {j}: caffemodel has shape {} with {} values, the net expects {s:?} ({n} values)", b.shape_text(), b.len()),
                    )
                    .at_layer(&li.name)
                    .at_field(format!("blobs[{j}]")),
                );
                ok = false;
            }
        }
        if ok && !li.param_shapes.is_empty() {
            matched.push((
                li.name.as_str(),
                li.ty.as_str(),
                src.blobs.as_slice(),
                li.param_shapes.as_slice(),
            ));
        }
    }
    report.weights = Some(WeightsSummary {
        bytes: w.len() as u64,
        layers: parsed.layers.len(),
        matched_layers: matched.len(),
        ignored_layers: by_name.len() - used,
        legacy_format: parsed.legacy,
    });
    canonical.then(|| weights::encode_canonical(w, &matched))
}
