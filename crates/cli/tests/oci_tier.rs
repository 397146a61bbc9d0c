//! `caffe-sandbox infer --isolation oci --runtime crun|runc` as root and rootless (uid 65534), against the
//! native tier; `policy check` errors and `export` output through the real binary. crun and runc must be
//! installed (scripts/setup): missing runtimes fail the tests.
mod common;
use common::*;

fn top_score(o: &std::process::Output) -> (f64, serde_json::Value) {
    let j = json(o);
    let r = &j["results"][0];
    let top = &r["top_k"][0];
    assert_eq!(top["label"], "sfw", "{}", text(o));
    (top["score"].as_f64().unwrap(), j["layers"].clone())
}

#[test]
fn infer_under_crun_and_runc_matches_native_as_root_and_rootless() {
    let model = open_nsfw();
    let img = sample("chelsea.png");
    let (m, i) = (model.to_str().unwrap(), img.to_str().unwrap());
    for who in both() {
        let native = run_s(who, &["infer", "--json", "--model", m, i]);
        assert!(native.status.success(), "{who:?} native: {}", text(&native));
        let (want, _) = top_score(&native);
        for rt in ["crun", "runc"] {
            let o = run_s(
                who,
                &[
                    "infer",
                    "--json",
                    "--model",
                    m,
                    i,
                    "--isolation",
                    "oci",
                    "--runtime",
                    rt,
                    "--allow-weaker",
                    "landlock",
                ],
            );
            assert!(o.status.success(), "{who:?} {rt}: {}", text(&o));
            let (got, layers) = top_score(&o);
            assert!(
                (got - want).abs() < 1e-6,
                "{who:?} {rt}: {got} vs native {want}"
            );
            let s = layers.to_string();
            assert!(s.contains(&format!("{rt} (OCI)")), "{who:?} {rt}: {s}");
        }
        // Without an explicit landlock choice the OCI tier refuses (the runtime-spec cannot express it).
        let o = run_s(
            who,
            &[
                "infer",
                "--model",
                m,
                i,
                "--isolation",
                "oci",
                "--runtime",
                "crun",
            ],
        );
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("landlock"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn policy_check_points_at_the_field_and_export_writes_every_format() {
    let dir = tmpdir("policy-cli");
    let bad = dir.join("bad.toml");
    let good = std::fs::read_to_string(repo().join("policies/inference.toml")).unwrap();
    std::fs::write(
        &bad,
        good.replace("cpu_seconds = 600", "cpu_seconds = \"600\""),
    )
    .unwrap();
    let line = good
        .lines()
        .position(|l| l.starts_with("cpu_seconds"))
        .unwrap()
        + 1;
    let o = run(
        As::Invoker,
        &["policy".as_ref(), "check".as_ref(), bad.as_os_str()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:{line}:15: rlimits.cpu_seconds: invalid type: string \"600\"",
            bad.display()
        )),
        "{err}"
    );
    let o = run_s(
        As::Invoker,
        &["policy", "check", "builtin:inference", "builtin:run-tool"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_s(As::Invoker, &["policy", "show", "--json"]);
    assert_eq!(
        json(&o)["resolved"]["rlimits"]["address_space_bytes"],
        2u64 << 30
    );
    for fmt in ["docker", "oci", "k8s"] {
        let out = dir.join(fmt);
        let o = run(
            As::Invoker,
            &[
                "export".as_ref(),
                fmt.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
        );
        assert!(o.status.success(), "{fmt}: {}", text(&o));
        let notes = std::fs::read_to_string(out.join("NOTES.txt")).unwrap();
        assert!(
            notes.contains("SCMP_ACT_KILL_PROCESS") && notes.contains("phase_gated"),
            "{notes}"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oci/bundle/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["linux"]["seccomp"]["defaultAction"],
        "SCMP_ACT_KILL_PROCESS"
    );
    assert!(dir.join("docker/seccomp-inference.json").is_file());
    assert!(dir
        .join("k8s/seccomp/caffe-sandbox/inference-server.json")
        .is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn infer_applies_a_policy_file_natively() {
    let dir = tmpdir("policy-infer");
    let toml = std::fs::read_to_string(repo().join("policies/inference.toml"))
        .unwrap()
        .replace("address_space = \"2GiB\"", "address_space = \"1536MiB\"")
        .replace("open_files = 64", "open_files = 48");
    let p = dir.join("p.toml");
    std::fs::write(&p, toml).unwrap();
    set_mode(&p, 0o644);
    let model = open_nsfw();
    let img = sample("chelsea.png");
    let o = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--json".as_ref(),
            "--policy".as_ref(),
            p.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            img.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let layers = json(&o)["layers"].to_string();
    assert!(
        layers.contains(&format!("as={}", 1536u64 << 20)) && layers.contains("nofile=48"),
        "{layers}"
    );
    // A policy error stops the command before anything starts, pointing at the field.
    std::fs::write(&p, "schema = \"caffe-sandbox-policy/1\"\n").unwrap();
    let o = run(
        As::Invoker,
        &[
            "infer".as_ref(),
            "--policy".as_ref(),
            p.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            img.as_os_str(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing field `name`"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_hdf5_output_is_a_seccomp_violation_under_crun_and_runc() {
    // An HDF5Output layer writes a file at load. Natively the worker's listener names the write open; under
    // the OCI tier the runtime's static envelope kills it first (kill beats notify): the supervisor still
    // reports a seccomp violation (death by SIGSYS), the syscall name is unavailable, and no file appears.
    let target_dir = tmpdir("oci-hdf5");
    let target = target_dir.join("out.h5");
    set_mode(target.parent().unwrap(), 0o777);
    let prototxt = format!(
        "layer {{ name: \"in\" type: \"Input\" top: \"data\" top: \"label\" input_param {{ shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} shape {{ dim: 1 }} }} }}\n\
         layer {{ name: \"o\" type: \"HDF5Output\" bottom: \"data\" bottom: \"label\" hdf5_output_param {{ file_name: \"{}\" }} }}\n",
        target.display()
    );
    let dir = model_dir("oci-hdf5", &prototxt, b"");
    let img = sample("chelsea.png");
    for who in both() {
        for rt in ["crun", "runc"] {
            let o = run(
                who,
                &[
                    "infer".as_ref(),
                    "--json".as_ref(),
                    "--firewall".as_ref(),
                    "off".as_ref(),
                    "--isolation".as_ref(),
                    "oci".as_ref(),
                    "--runtime".as_ref(),
                    rt.as_ref(),
                    "--allow-weaker".as_ref(),
                    "landlock".as_ref(),
                    "--model".as_ref(),
                    dir.as_os_str(),
                    img.as_os_str(),
                ],
            );
            let v = json(&o);
            let e = if v["error"].is_object() {
                v["error"].clone()
            } else {
                v["results"][0]["error"].clone()
            };
            assert_eq!(e["kind"], "seccomp_violation", "{who:?} {rt}: {}", text(&o));
            assert!(
                !target.exists(),
                "{who:?} {rt}: {} was written",
                target.display()
            );
        }
    }
}
