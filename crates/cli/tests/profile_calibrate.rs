//! `caffe-sandbox profile` and `caffe-sandbox calibrate` on the real open_nsfw model in the real sandbox: the
//! emitted seccomp policy and the calibrated limits are then used to run the model again.
mod common;

use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_seccomp::Policy;
use caffe_sandbox_supervisor::{Error, Input, LaunchConfig, LayerState, ModelBundle, Worker};
use common::*;
use serde_json::Value;
use std::path::Path;

fn launch_config() -> LaunchConfig {
    let mut cfg = LaunchConfig::discover().expect("worker and Caffe prefix (run scripts/setup)");
    // This test binary cannot be the jail's stage 2; the caffe-sandbox binary is.
    cfg.stage2_exe = Some(bin());
    cfg
}

fn chelsea() -> Input {
    Input::Image {
        name: "data".into(),
        bytes: std::fs::read(sample("chelsea.png")).unwrap(),
    }
}

fn run_cli(args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn classify_chelsea(worker: &mut Worker, model: &ModelBundle) {
    worker.load(model).expect("open_nsfw loads");
    let out = worker.infer(&[chelsea()]).expect("open_nsfw answers");
    let probs = &out
        .iter()
        .find(|o| o.name == "prob")
        .expect("prob output")
        .data;
    assert_eq!(probs.len(), 2, "{probs:?}");
    assert!(probs[0] > 0.99, "chelsea is sfw: {probs:?}");
}

#[test]
fn profile_of_open_nsfw_gives_a_minimal_policy_it_runs_under_and_the_shipped_policy_covers() {
    let model_dir = open_nsfw();
    let dir = tmpdir("profile");
    let min = dir.join("minimal.json");
    let (code, j, stderr) = run_cli(&[
        "profile",
        "--model",
        model_dir.to_str().unwrap(),
        "--runs",
        "2",
        "--out",
        min.to_str().unwrap(),
        "--json",
    ]);
    let diff = &j["diff"];
    // Nothing open_nsfw does is missing from (or gated wrongly by) the shipped worker.json.
    assert_eq!(diff["missing"], Value::Array(vec![]), "{diff:#}\n{stderr}");
    assert_eq!(diff["denied_args"], Value::Array(vec![]), "{diff:#}");
    assert_eq!(
        diff["load_only_used_in_inference"],
        Value::Array(vec![]),
        "{diff:#}"
    );
    assert_eq!(diff["anonymous_exec_mappings"], 0, "{diff:#}");
    assert_eq!((code, &j["covered"]), (0, &Value::Bool(true)), "{stderr}");
    assert_eq!(diff["runs"], 2);
    // The phases really are separated: model files are opened while loading only, the forward pass yields.
    let row = |name: &str| {
        diff["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["syscall"] == name)
            .unwrap_or_else(|| panic!("{name} not observed: {diff:#}"))
            .clone()
    };
    assert!(row("openat")["load"].as_u64().unwrap() >= 2, "{diff:#}");
    assert_eq!(row("openat")["inference"], 0, "{diff:#}");
    assert!(row("sched_yield")["inference"].as_u64().unwrap() > 0);
    assert!(diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f[0] == "load" && f[1] == "/dev/urandom"));

    // The minimal policy is strictly smaller than the shipped one…
    let minimal = Policy::load(&min).unwrap();
    let shipped = Policy::worker();
    let (small, big) = (minimal.runnable_syscalls(), shipped.runnable_syscalls());
    assert!(small.is_subset(&big), "{small:?}");
    assert!(small.len() < big.len());
    assert!(!small.contains("getdents64") && !small.contains("stat") && !small.contains("access"));
    // Every rule is a reviewed rule of the shipped policy, verbatim (nothing drafted): the minimal policy allows a
    // subset of what the shipped one allows, so whatever the shipped policy contains stays contained.
    let rules = |text: &str| -> Vec<Value> {
        serde_json::from_str::<Value>(text).unwrap()["rules"]
            .as_array()
            .unwrap()
            .clone()
    };
    let shipped_rules = rules(caffe_sandbox_seccomp::policy::WORKER_POLICY_JSON);
    for r in rules(&std::fs::read_to_string(&min).unwrap()) {
        assert!(shipped_rules.contains(&r), "not a shipped rule: {r}");
    }
    // …and open_nsfw runs under it, with the seccomp layer enforced.
    let mut cfg = launch_config();
    cfg.seccomp_policy = Some(min.clone());
    let model = ModelBundle::from_dir_checked(&model_dir, &Default::default(), &Default::default())
        .unwrap();
    let mut w = Worker::start(&cfg, Default::default()).expect("worker under the minimal policy");
    assert!(
        matches!(
            w.layers().get(caffe_sandbox_supervisor::Layer::Seccomp),
            Some(LayerState::Enforced { .. })
        ),
        "{}",
        w.layers()
    );
    classify_chelsea(&mut w, &model);
    w.shutdown();
}

fn memory_limit_failure(cfg: &LaunchConfig, model: &ModelBundle) -> Error {
    let mut w = Worker::start(cfg, Default::default()).expect("starts below the load peak");
    match w.load(model) {
        Err(e) => e,
        Ok(_) => match w.infer(&[chelsea()]) {
            Err(e) => e,
            Ok(_) => panic!("open_nsfw ran under {:?}", cfg.limits.address_space_bytes),
        },
    }
}

#[test]
fn calibrated_limits_run_open_nsfw_and_a_limit_below_the_peak_fails_with_memory_limit() {
    let model_dir = open_nsfw();
    let dir = tmpdir("calibrate");
    let out = dir.join("policy.toml");
    let (code, j, stderr) = run_cli(&[
        "calibrate",
        "--model",
        model_dir.to_str().unwrap(),
        "--margin",
        "1.5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{j:#}\n{stderr}");
    let m = &j["measured"];
    let get = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{k}: {m:#}"));
    let (start, loaded, peak) = (get("vm_peak_start"), get("vm_peak_loaded"), get("vm_peak"));
    assert!(0 < start && start < loaded && loaded <= peak, "{m:#}");
    assert!(get("vm_hwm") > 50 << 20 && get("threads") >= 1, "{m:#}");
    assert!(m["cpu_per_request_s"].as_f64().unwrap() > 0.0, "{m:#}");
    let limit = j["limits"]["address_space_bytes"].as_u64().unwrap();
    assert!(limit as f64 >= peak as f64 * 1.5, "{j:#}");

    // The written policy validates and open_nsfw runs under exactly its limits and deadlines.
    let policy = SandboxPolicy::load(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.limits.address_space_bytes, Some(limit));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# [calibrated]"), "{text}");
    let mut cfg = launch_config();
    policy.apply_to(&mut cfg).unwrap();
    cfg.stage2_exe = Some(bin());
    let model = ModelBundle::from_dir_checked(&model_dir, &Default::default(), &Default::default())
        .unwrap();
    let mut w = Worker::start(&cfg, policy.supervisor_deadlines()).expect("calibrated start");
    classify_chelsea(&mut w, &model);
    w.shutdown();

    // Below the measured peak (between the start and the loaded address-space peaks): loading the weights fails,
    // and the supervisor says why.
    let mut low = cfg.clone();
    low.limits.address_space_bytes = Some((start + loaded) / 2);
    let e = memory_limit_failure(&low, &model);
    assert_eq!(e.label(), "memory_limit", "{e}");

    // Calibrating again updates the same file in place: one header, comments kept.
    let (code, _, stderr) = run_cli(&[
        "calibrate",
        "--model",
        model_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let again = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        again.matches("by `caffe-sandbox calibrate`").count(),
        1,
        "{again}"
    );
    assert!(again.contains("# Schema: docs/policy.md"), "{again}");
    assert!(Path::new(&out).is_file());
}

#[test]
fn profile_works_with_an_unprivileged_supervisor() {
    // The supervisor as uid 65534 (rootless sandbox): strace attaches from the host side to a worker of the
    // same host uid inside its own user namespace.
    let m = open_nsfw();
    for who in both() {
        let out = run(
            who,
            &[
                "profile".as_ref(),
                "--model".as_ref(),
                m.as_os_str(),
                "--json".as_ref(),
            ],
        );
        assert!(out.status.success(), "{who:?}: {}", text(&out));
        let j = json(&out);
        assert_eq!(j["covered"], true, "{who:?}: {j:#}");
        assert_eq!(j["diff"]["missing"], Value::Array(vec![]), "{who:?}: {j:#}");
        assert!(
            j["diff"]["rows"].as_array().is_some_and(|r| r.len() > 20),
            "{who:?}: strace recorded too little: {j:#}"
        );
    }
}
