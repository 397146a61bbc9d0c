//! Exports: the static seccomp envelope keeps the worker policy's guarantees or degrades closed, the Docker flags
//! and the OCI bundle mirror the policy, and the Kubernetes manifests validate against the Kubernetes OpenAPI
//! schema with `kubernetes-validate` (PyPI) from the project venv.
use std::path::{Path, PathBuf};
use std::process::Command;

use caffe_sandbox_policy::export::docker::{run_args, Engine};
use caffe_sandbox_policy::export::k8s::{
    manifests, server_profile, to_yaml, K8sOptions, SERVER_SYSCALLS,
};
use caffe_sandbox_policy::export::oci::{config, OciOptions, MASKED_DEVICES};
use caffe_sandbox_policy::export::seccomp::{docker_profile, envelope, oci_seccomp, EnvRule};
use caffe_sandbox_policy::export::Workload;
use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_supervisor::LaunchConfig;
use serde_json::Value;

fn rules_for<'a>(rules: &'a [EnvRule], name: &str) -> Vec<&'a EnvRule> {
    rules.iter().filter(|r| r.syscall == name).collect()
}

#[test]
fn envelope_keeps_the_worker_guarantees() {
    let p = SandboxPolicy::inference();
    let env = envelope(&p).expect("envelope");
    // Nothing from the never-allow list may run, except execve, which the runtime itself needs (start-up set).
    for n in &p.seccomp.never_allow {
        for r in rules_for(&env.rules, n) {
            if n == "execve" {
                assert!(
                    r.errno.is_none() && r.comment.contains("worker start-up"),
                    "{r:?}"
                );
            } else {
                assert!(
                    r.errno.is_some(),
                    "never-allow syscall {n} runs under the envelope: {r:?}"
                );
            }
        }
    }
    // socket: only AF_UNIX, and only failing with EACCES.
    let socket = rules_for(&env.rules, "socket");
    assert_eq!(socket.len(), 1);
    assert_eq!(socket[0].errno, Some(libc::EACCES));
    assert_eq!(socket[0].args, vec![(0, None, libc::AF_UNIX as u64)]);
    // No anonymous executable memory, no mprotect to executable.
    let exec = libc::PROT_EXEC as u64;
    for r in rules_for(&env.rules, "mmap") {
        let prot = r
            .args
            .iter()
            .find(|a| a.0 == 2)
            .expect("mmap rules filter prot");
        assert_eq!(prot.1, Some(exec));
        if prot.2 == exec {
            assert!(
                r.args.contains(&(3, Some(libc::MAP_ANONYMOUS as u64), 0)),
                "anonymous PROT_EXEC: {r:?}"
            );
        }
    }
    for r in rules_for(&env.rules, "mprotect") {
        assert_eq!(r.args, vec![(2, Some(exec), 0)]);
    }
    // clone: threads only; clone3 answered ENOSYS.
    for r in rules_for(&env.rules, "clone") {
        assert_eq!(r.args.len(), 1);
        let (arg, mask, value) = r.args[0];
        assert_eq!(arg, 0);
        assert_ne!(value & libc::CLONE_THREAD as u64, 0);
        assert_ne!(mask.expect("masked") & libc::CLONE_NEWUSER as u64, 0);
    }
    assert_eq!(rules_for(&env.rules, "clone3")[0].errno, Some(libc::ENOSYS));
    // openat: never a write, create, truncate, append or O_TMPFILE open.
    for r in rules_for(&env.rules, "openat") {
        let (_, mask, value) = r
            .args
            .iter()
            .find(|a| a.0 == 2)
            .copied()
            .expect("flags filtered");
        let mask = mask.expect("masked");
        assert_eq!(value, 0);
        for bad in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_CREAT,
            libc::O_TRUNC,
            libc::O_APPEND,
        ] {
            assert_ne!(mask & bad as u64, 0, "openat mask lets {bad:#x} through");
        }
        assert_ne!(mask & (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64, 0);
    }
    // seccomp(2): only the two filter installations the worker performs.
    let sc = rules_for(&env.rules, "seccomp");
    assert_eq!(sc.len(), 2);
    let flags: Vec<u64> = sc
        .iter()
        .map(|r| r.args.iter().find(|a| a.0 == 1).unwrap().2)
        .collect();
    assert!(flags.contains(&1) && flags.contains(&0x19), "{flags:?}");
    // Every phase-gated or load-only rule of the policy is listed as a degradation.
    for r in &p.seccomp.rules {
        if matches!(
            r.action,
            caffe_sandbox_seccomp::Action::PhaseGated | caffe_sandbox_seccomp::Action::AllowLoad
        ) {
            assert!(
                env.notes.iter().any(|n| n.syscall == r.syscall),
                "no note for {}",
                r.syscall
            );
        }
    }
    assert_eq!(env.notes[0].syscall, "*");
    assert!(env.notes[0].exported.contains("SCMP_ACT_KILL_PROCESS"));
    // getdents64 is phase-gated natively and not needed at start-up: the envelope kills it.
    assert!(rules_for(&env.rules, "getdents64").is_empty());
    let note = env
        .notes
        .iter()
        .find(|n| n.syscall == "getdents64")
        .unwrap();
    assert!(note.exported.starts_with("dropped"), "{note:?}");
}

#[test]
fn seccomp_json_formats() {
    let env = envelope(&SandboxPolicy::inference()).unwrap();
    for (doc, comments) in [(docker_profile(&env), true), (oci_seccomp(&env), false)] {
        assert_eq!(doc["defaultAction"], "SCMP_ACT_KILL_PROCESS");
        assert_eq!(
            doc["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64"])
        );
        let list = doc["syscalls"].as_array().unwrap();
        let mut names = 0;
        for e in list {
            let obj = e.as_object().unwrap();
            let allowed: &[&str] = if comments {
                &["names", "action", "args", "errnoRet", "comment"]
            } else {
                &["names", "action", "args", "errnoRet"]
            };
            for k in obj.keys() {
                assert!(allowed.contains(&k.as_str()), "unexpected key {k}");
            }
            assert!(matches!(
                e["action"].as_str(),
                Some("SCMP_ACT_ALLOW" | "SCMP_ACT_ERRNO")
            ));
            if e["action"] == "SCMP_ACT_ERRNO" {
                assert!(e["errnoRet"].as_u64().is_some());
            }
            for a in e["args"].as_array().into_iter().flatten() {
                assert!(a["index"].as_u64().unwrap() <= 5);
                match a["op"].as_str().unwrap() {
                    "SCMP_CMP_EQ" => assert!(a.get("valueTwo").is_none()),
                    // value = mask, valueTwo = datum (libseccomp's SCMP_CMP_MASKED_EQ argument order).
                    "SCMP_CMP_MASKED_EQ" => {
                        let (m, v) = (
                            a["value"].as_u64().unwrap(),
                            a["valueTwo"].as_u64().unwrap(),
                        );
                        assert_eq!(v & !m, 0, "datum outside mask in {e}");
                    }
                    o => panic!("unexpected op {o}"),
                }
            }
            names += e["names"].as_array().unwrap().len();
        }
        assert!(names > 40, "{names}");
    }
    // Docker's profile is the OCI section plus comments: the same rules reach libseccomp either way (the OCI one
    // is loaded by crun and runc in tests/oci_runtime.rs).
    let mut stripped = docker_profile(&env);
    for e in stripped["syscalls"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("comment");
    }
    assert_eq!(stripped, oci_seccomp(&env));
    // The mmap PROT_EXEC check in Docker's encoding.
    let doc = docker_profile(&env);
    let mmap_exec = doc["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["names"] == serde_json::json!(["mmap"])
                && e["args"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["index"] == 2 && x["valueTwo"] == libc::PROT_EXEC)
                })
        })
        .expect("file-backed PROT_EXEC mmap rule");
    assert!(mmap_exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["index"] == 3
            && x["value"] == libc::MAP_ANONYMOUS
            && x["valueTwo"] == 0
            && x["op"] == "SCMP_CMP_MASKED_EQ"));
}

#[test]
fn run_tool_envelope_notes_the_uncountable_execve() {
    let p = SandboxPolicy::builtin("run-tool").unwrap();
    let env = envelope(&p).unwrap();
    let n = env
        .notes
        .iter()
        .find(|n| n.syscall == "execve")
        .expect("execve note");
    assert_eq!(n.native, "notify_once");
    assert!(rules_for(&env.rules, "execve")[0]
        .comment
        .contains("cannot count"));
    // memfd_create stays denied (run-tool never-allows it).
    assert!(rules_for(&env.rules, "memfd_create").is_empty());
}

fn worker_cfg() -> LaunchConfig {
    LaunchConfig::discover().expect(
        "caffe-sandbox-worker and the Caffe prefix (cargo build --workspace; scripts/setup)",
    )
}

fn workload(p: &SandboxPolicy) -> Workload {
    let cfg = worker_cfg();
    Workload::worker(p, &cfg.worker_exe, &cfg.caffe_prefix, 1).expect("workload")
}

#[test]
fn docker_flags_mirror_the_policy() {
    let p = SandboxPolicy::inference();
    let w = workload(&p);
    let a = run_args(&p, &w, "/x/seccomp.json", "img:1", Engine::Docker);
    for want in [
        "--network=none",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--security-opt=seccomp=/x/seccomp.json",
        "--user=65534:65534",
        "--tmpfs=/scratch:rw,size=16777216,mode=1777,noexec,nosuid,nodev",
        "--memory=2147483648",
        "--memory-swap=2147483648",
        "--cpus=2",
        "--pids-limit=256",
        "--ulimit=core=0:0",
        "--ulimit=as=2147483648:2147483648",
        "--ulimit=nofile=64:64",
        "--ulimit=nproc=256:256",
    ] {
        assert!(a.iter().any(|x| x == want), "missing {want} in {a:?}");
    }
    assert_eq!(a[0], "run");
    let img = a.iter().position(|x| x == "img:1").unwrap();
    assert_eq!(
        a[img + 1..],
        ["--channel-fd", "3", "--seccomp-fd", "4", "--log-level", "1"]
    );
    // Every bind is read-only, and the worker's libraries are bound file by file.
    let binds: Vec<&String> = a.iter().filter(|x| x.starts_with("--mount=")).collect();
    assert!(binds.len() > 100, "{}", binds.len());
    assert!(binds.iter().all(|b| b.contains(",readonly")));
    assert!(!a
        .iter()
        .any(|x| x.contains("--privileged") || x.contains("--cap-add")));
    let pod = run_args(&p, &w, "/x/seccomp.json", "img:1", Engine::Podman);
    assert!(pod.iter().any(|x| x == "--preserve-fds=2"));
}

/// Keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[test]
fn oci_config_matches_the_runtime_spec_reference_of_crun() {
    // Reference document from the runtime itself (`crun spec`); no published JSON schema package exists for the
    // OCI runtime-spec on PyPI/npm (checked), so the structure is compared with what crun generates, and the
    // bundle is run by crun and runc in tests/oci_runtime.rs.
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("crun")
        .args(["spec"])
        .current_dir(dir.path())
        .status()
        .expect("crun must be installed for this test (apt-get install -y crun)");
    assert!(st.success());
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let p = SandboxPolicy::inference();
    let env = envelope(&p).unwrap();
    let w = workload(&p);
    let o = OciOptions {
        host_uid: 65534,
        host_gid: 65534,
        cgroup_resources: true,
        runc: false,
        nofile_floor: None,
    };
    let c = config(&p, &w, &env, &o);
    for section in ["", "process", "root", "linux"] {
        let (ours, theirs) = if section.is_empty() {
            (&c, &reference)
        } else {
            (&c[section], &reference[section])
        };
        for k in keys(theirs) {
            if matches!(k.as_str(), "terminal" | "resources") && section != "linux" {
                continue;
            }
            assert!(
                ours.get(&k).is_some() || k == "annotations",
                "{section}.{k} missing (crun spec has it)"
            );
        }
        for k in keys(ours) {
            assert!(
                theirs.get(&k).is_some()
                    || [
                        "annotations",
                        "uidMappings",
                        "gidMappings",
                        "seccomp",
                        "rootfsPropagation"
                    ]
                    .contains(&k.as_str()),
                "{section}.{k} is not a runtime-spec field crun knows"
            );
        }
    }
    assert_eq!(c["root"]["readonly"], true);
    assert_eq!(c["process"]["noNewPrivileges"], true);
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(c["process"]["capabilities"][set], serde_json::json!([]));
    }
    let ns: Vec<&str> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        ns,
        ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]
    );
    let rl = c["process"]["rlimits"].as_array().unwrap();
    assert!(rl
        .iter()
        .any(|r| r["type"] == "RLIMIT_CORE" && r["hard"] == 0));
    assert!(rl
        .iter()
        .any(|r| r["type"] == "RLIMIT_AS" && r["hard"] == 2u64 << 30));
    for m in c["mounts"].as_array().unwrap() {
        if m["type"] == "bind" {
            let o: Vec<&str> = m["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert!(
                o.contains(&"ro") && o.contains(&"nosuid") && o.contains(&"nodev"),
                "{m}"
            );
            assert_eq!(m["source"], m["destination"]);
        }
    }
    assert!(!c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["type"] == "proc" || m["type"] == "sysfs"));
    let scratch = c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/scratch")
        .unwrap();
    assert!(scratch["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "noexec"));
    let masked: Vec<&str> = c["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for d in MASKED_DEVICES {
        assert!(masked.contains(&d));
    }
    assert_eq!(c["linux"]["resources"]["memory"]["limit"], 2u64 << 30);
    assert_eq!(c["linux"]["resources"]["pids"]["limit"], 256);
    assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 200_000);
    assert_eq!(c["linux"]["seccomp"], oci_seccomp(&env));
    // Bundles for runc get /proc and runc's own post-filter calls; crun's get neither.
    let o2 = OciOptions {
        runc: true,
        cgroup_resources: false,
        ..o
    };
    let c2 = config(&p, &w, &env, &o2);
    assert!(c2["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["type"] == "proc"));
    assert!(c2["linux"].get("resources").is_none());
    assert!(
        c2["linux"]["seccomp"]["syscalls"].as_array().unwrap().len()
            > c["linux"]["seccomp"]["syscalls"].as_array().unwrap().len()
    );
}

fn venv_tool(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/venv/bin")
        .join(name);
    assert!(
        p.is_file(),
        "{} missing: install it with `.cache/venv/bin/pip install kubernetes-validate==1.37.0` (scripts/python-env)",
        p.display()
    );
    p
}

#[test]
fn k8s_manifests_validate_against_the_kubernetes_openapi_schema() {
    let p = SandboxPolicy::inference();
    let docs = manifests(&p, &p.text, &K8sOptions::default());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "Deployment", "Service", "NetworkPolicy"]
    );
    let pod = &docs[1]["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        ctr["securityContext"]["seccompProfile"]["type"],
        "Localhost"
    );
    assert_eq!(
        ctr["securityContext"]["seccompProfile"]["localhostProfile"],
        "caffe-sandbox/inference-server.json"
    );
    assert_eq!(ctr["resources"]["limits"]["memory"], "2Gi");
    assert_eq!(ctr["resources"]["limits"]["cpu"], "2000m");
    assert_eq!(docs[3]["spec"]["egress"], serde_json::json!([]));
    assert_eq!(
        docs[3]["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(
        docs[0]["data"]["policy.toml"],
        caffe_sandbox_policy::INFERENCE_TOML
    );

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, to_yaml(&docs)).unwrap();
    let kv = venv_tool("kubernetes-validate");
    let out = Command::new(&kv)
        .args(["--strict", "--no-warn"])
        .arg(&good)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("passed").count(), 4, "{text}");
    // The validator really checks: an unknown field and a wrong type are rejected.
    let mut bad = docs.clone();
    bad[1]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["allowPrivilegeEscalationn"] = false.into();
    bad[2]["spec"]["ports"][0]["port"] = "eighty".into();
    let badf = dir.path().join("bad.yaml");
    std::fs::write(&badf, to_yaml(&bad)).unwrap();
    let out = Command::new(&kv)
        .args(["--strict", "--no-warn"])
        .arg(&badf)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted a broken manifest"
    );

    // The server's Localhost profile: the envelope plus the server's calls, never the never-allow families.
    let prof = server_profile(&envelope(&p).unwrap());
    assert_eq!(prof["defaultAction"], "SCMP_ACT_KILL_PROCESS");
    for n in [
        "ptrace",
        "bpf",
        "io_uring_setup",
        "userfaultfd",
        "perf_event_open",
        "keyctl",
        "init_module",
        "kexec_load",
    ] {
        assert!(!SERVER_SYSCALLS.contains(&n), "{n}");
        assert!(
            !prof.to_string().contains(&format!("\"{n}\"")),
            "{n} in the server profile"
        );
    }
}
