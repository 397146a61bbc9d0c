//! The hostile corpus (`tests/corpus/*.prototxt`, built from the threat notes) is refused with the
//! expected finding; `ok_*` files are accepted. Each file's first line says what to expect:
//! `# expect: <finding-code>[|<finding-code>...]` or `# expect: ok`.

use std::path::PathBuf;

use caffe_sandbox_firewall::{check, inspect, FirewallPolicy, Severity};

fn code_name(c: caffe_sandbox_firewall::FindingCode) -> String {
    serde_json::to_value(c)
        .expect("code serializes")
        .as_str()
        .expect("string")
        .to_owned()
}

#[test]
fn corpus_verdicts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let policy = FirewallPolicy::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "prototxt"))
    {
        let bytes = std::fs::read(f).expect("read");
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let expect = std::str::from_utf8(first)
            .ok()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("expect header");
        let report = inspect(&bytes, None, &policy);
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if expect == "ok" {
            if !report.accepted {
                failures.push(format!("{name}: expected acceptance\n{report}"));
            }
            check(&bytes, None, &policy).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            let wanted: Vec<&str> = expect.split('|').collect();
            let hit = report.findings.iter().any(|x| {
                x.severity == Severity::Error && wanted.contains(&code_name(x.code).as_str())
            });
            if report.accepted || !hit {
                failures.push(format!("{name}: expected {expect}\n{report}"));
            }
            assert!(
                check(&bytes, None, &policy).is_err(),
                "{name}: check() must refuse"
            );
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} corpus files");
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn opt_in_allows_a_layer_type() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let bytes = std::fs::read(dir.join("prelu_not_allowlisted.prototxt")).expect("read");
    let mut policy = FirewallPolicy::default();
    let r = inspect(&bytes, None, &policy);
    assert!(!r.accepted);
    policy.allow_layer_types.insert("PReLU".into());
    let r = inspect(&bytes, None, &policy);
    // Opted in: accepted, with a warning that its cost is unknown.
    assert!(r.accepted, "{r}");
    assert!(!r.inference_complete);
    assert!(r.findings.iter().any(|f| f.severity == Severity::Warning));
}

#[test]
fn opting_in_python_does_not_allow_its_module_path() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let bytes = std::fs::read(dir.join("python_layer.prototxt")).expect("read");
    let mut policy = FirewallPolicy::default();
    policy.allow_layer_types.insert("Python".into());
    assert!(!inspect(&bytes, None, &policy).accepted);
}

#[test]
fn legacy_inputs_become_an_input_layer_in_the_canonical_net() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let bytes = std::fs::read(dir.join("ok_legacy_input_dim.prototxt")).expect("read");
    let m = check(&bytes, None, &FirewallPolicy::default()).expect("accepted");
    let net = m.net();
    assert!(net.input.is_empty() && net.input_dim.is_empty() && net.input_shape.is_empty());
    assert_eq!(net.layer[0].r#type.as_deref(), Some("Input"));
    assert_eq!(m.report().outputs, vec![("prob".to_owned(), vec![1, 10])]);
    let strict = FirewallPolicy {
        allow_legacy_inputs: false,
        ..FirewallPolicy::default()
    };
    assert!(!inspect(&bytes, None, &strict).accepted);
}

#[test]
fn phase_filtered_layers_are_dropped_from_the_canonical_net() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let bytes = std::fs::read(dir.join("ok_all_types.prototxt")).expect("read");
    let m = check(&bytes, None, &FirewallPolicy::default()).expect("accepted");
    assert!(m
        .net()
        .layer
        .iter()
        .all(|l| l.name.as_deref() != Some("train_only") && l.include.is_empty()));
    assert_eq!(m.report().outputs, vec![("prob".to_owned(), vec![1, 2])]);
}

#[test]
fn report_serializes_and_displays_without_control_characters() {
    let text = "layer { name: \"evil\\033[2J\" type: \"Python\" top: \"x\" python_param { module: \"os\" } }";
    let r = inspect(text.as_bytes(), None, &FirewallPolicy::default());
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["accepted"], false);
    assert!(json["findings"][0]["code"].is_string());
    assert!(json["findings"][0]["severity"] == "error");
    let shown = r.to_string();
    assert!(!shown.contains('\u{1b}'), "{shown}");
    assert!(shown.contains("REFUSED"));
}

#[test]
fn policy_deserializes_from_partial_toml() {
    let p: FirewallPolicy =
        toml::from_str("allow_layer_types = [\"PReLU\"]\nmax_flops = 1000\n").expect("policy");
    assert!(p.layer_type_allowed("PReLU"));
    assert_eq!(p.max_flops, 1000);
    assert_eq!(p.max_layers, FirewallPolicy::default().max_layers);
    assert!(toml::from_str::<FirewallPolicy>("allow_everything = true").is_err());
}
