//! Policy files: the built-in profiles are pinned, every error points at file:line:col and the field, and the
//! conversion into the supervisor's launch configuration carries every value.
use std::time::Duration;

use caffe_sandbox_policy::{
    parse_duration, parse_size, Kind, SandboxPolicy, SeccompSource, INFERENCE_TOML,
};
use caffe_sandbox_supervisor::{Deadlines, LaunchConfig, Layer, ResourceLimits};

fn err(text: &str) -> String {
    SandboxPolicy::parse(text, "t.toml", None)
        .map(|_| "accepted".to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// The inference profile with one line replaced (the line must exist).
fn with(from: &str, to: &str) -> String {
    assert!(
        INFERENCE_TOML.contains(from),
        "test bug: {from:?} not in inference.toml"
    );
    INFERENCE_TOML.replacen(from, to, 1)
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle present")
        + 1
}

#[test]
fn inference_profile_is_pinned() {
    let p = SandboxPolicy::inference();
    assert_eq!(p.file.name, "inference");
    assert_eq!(p.file.kind, Kind::Worker);
    assert_eq!(
        p.allow_weaker.iter().copied().collect::<Vec<_>>(),
        vec![Layer::CgroupV2]
    );
    assert_eq!(p.limits.address_space_bytes, Some(2 << 30));
    assert_eq!(p.limits.cpu_seconds, Some(600));
    assert_eq!(p.limits.open_files, Some(64));
    assert_eq!(p.limits.processes, Some(256));
    assert_eq!(p.limits.file_size_bytes, Some(16 << 20));
    assert_eq!(p.scratch_bytes, 16 << 20);
    assert_eq!(p.file.scratch.path, "/scratch");
    assert_eq!(p.cgroup.memory_max, Some(2 << 30));
    assert_eq!(p.cgroup.cpu_max, Some((200_000, 100_000)));
    assert_eq!(p.cgroup.pids_max, Some(256));
    assert_eq!(p.seccomp_source, SeccompSource::BuiltinWorker);
    assert_eq!(p.file.seccomp.phases, ["load", "inference"]);
    assert!(p.file.landlock.required && p.file.seccomp.required && !p.file.cgroup.required);
    assert_eq!(p.file.filesystem.dev_nodes, ["/dev/null", "/dev/urandom"]);
    assert_eq!(p.file.filesystem.proc, "none");
    assert_eq!(p.deadlines.start, Duration::from_secs(20));
    assert_eq!(p.deadlines.load, Some(Duration::from_secs(60)));
    assert_eq!(p.deadlines.request, Some(Duration::from_secs(30)));
    assert_eq!(p.deadlines.run, None);
    // The seccomp policy it names is the reviewed worker.json and never lets execve or socket run.
    let runnable = p.seccomp.runnable_syscalls();
    for s in [
        "execve", "execveat", "socket", "ptrace", "bpf", "mount", "unshare",
    ] {
        assert!(
            !runnable.contains(s),
            "{s} runnable under the inference profile"
        );
    }
}

#[test]
fn inference_profile_equals_the_supervisor_defaults() {
    // `caffe-sandbox infer` without --policy and with the default profile must confine identically.
    let p = SandboxPolicy::inference();
    let d = ResourceLimits::default();
    assert_eq!(p.limits.address_space_bytes, d.address_space_bytes);
    assert_eq!(p.limits.cpu_seconds, d.cpu_seconds);
    assert_eq!(p.limits.open_files, d.open_files);
    assert_eq!(p.limits.processes, d.processes);
    assert_eq!(p.limits.file_size_bytes, d.file_size_bytes);
    assert_eq!(p.limits.scratch_bytes, d.scratch_bytes);
    let dl = Deadlines::default();
    let pd = p.supervisor_deadlines();
    assert_eq!(
        (pd.start, pd.load, pd.request),
        (dl.start, dl.load, dl.request)
    );
}

#[test]
fn run_tool_profile_is_pinned() {
    let p = SandboxPolicy::builtin("run-tool").expect("valid");
    assert_eq!(p.file.kind, Kind::RunTool);
    assert_eq!(p.seccomp_source, SeccompSource::BuiltinRunTool);
    assert_eq!(p.file.seccomp.phases, ["run"]);
    assert_eq!(p.file.filesystem.proc, "private");
    assert_eq!(p.scratch_bytes, 64 << 20);
    assert_eq!(p.limits.address_space_bytes, Some(4 << 30));
    assert_eq!(p.deadlines.run, Some(Duration::from_secs(3600)));
    assert_eq!(p.deadlines.load, None);
    // It cannot start a worker.
    let mut cfg = dummy_cfg();
    let e = p.apply_to(&mut cfg).unwrap_err();
    assert_eq!(e.field, "kind");
}

#[test]
fn builtin_files_on_disk_match_the_compiled_in_copies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/");
    for (name, text) in [
        ("inference", caffe_sandbox_policy::INFERENCE_TOML),
        ("run-tool", caffe_sandbox_policy::RUN_TOOL_TOML),
    ] {
        let disk = std::fs::read_to_string(format!("{root}{name}.toml")).expect("policy file");
        assert_eq!(disk, text);
        let p = SandboxPolicy::load(std::path::Path::new(&format!("{root}{name}.toml")))
            .expect("valid");
        assert_eq!(p.file, SandboxPolicy::builtin(name).unwrap().file);
    }
    assert!(SandboxPolicy::builtin("nope").is_err());
}

fn dummy_cfg() -> LaunchConfig {
    // Through discover(), not a struct literal, so that fields added to LaunchConfig later keep their defaults.
    std::env::set_var("CAFFE_SANDBOX_WORKER", "/nonexistent/worker");
    let mut c =
        LaunchConfig::discover().expect("the Caffe prefix (scripts/setup) is needed by this test");
    c.limits = ResourceLimits {
        address_space_bytes: None,
        cpu_seconds: None,
        open_files: None,
        processes: None,
        file_size_bytes: None,
        scratch_bytes: 1,
    };
    c.seccomp_policy = Some("/x.json".into());
    c.extra_ro_paths = vec!["/stale".into()];
    c
}

#[test]
fn apply_to_carries_every_value() {
    let text = with("address_space = \"2GiB\"", "address_space = \"3GiB\"")
        .replace(
            "allow_weaker = [\"cgroup-v2\"]",
            "allow_weaker = [\"cgroup-v2\", \"user-ns\"]",
        )
        .replace("caffe_prefix = \"auto\"", "caffe_prefix = \"/opt/caffe\"")
        .replace(
            "[landlock]\nrequired = true",
            "[landlock]\nrequired = false",
        )
        .replace("size = \"16MiB\"", "size = \"32MiB\"");
    let p = SandboxPolicy::parse(&text, "t.toml", None).expect("valid");
    let mut cfg = dummy_cfg();
    p.apply_to(&mut cfg).expect("worker policy");
    assert_eq!(cfg.limits.address_space_bytes, Some(3 << 30));
    assert_eq!(cfg.limits.scratch_bytes, 32 << 20);
    assert_eq!(cfg.limits.cpu_seconds, Some(600));
    assert_eq!(
        cfg.seccomp_policy, None,
        "builtin:worker means the built-in policy"
    );
    assert_eq!(cfg.caffe_prefix, std::path::PathBuf::from("/opt/caffe"));
    assert_eq!(
        cfg.worker_exe,
        std::path::PathBuf::from("/nonexistent/worker")
    );
    assert!(cfg.extra_ro_paths.is_empty());
    let weaker: Vec<Layer> = cfg.allow_weaker.iter().copied().collect();
    assert_eq!(
        weaker,
        vec![Layer::UserNs, Layer::Landlock, Layer::CgroupV2]
    );
    let jl = p.jail_limits();
    assert_eq!(jl.address_space, Some(3 << 30));
    assert_eq!(jl.nofile, Some(64));
}

#[test]
fn relative_seccomp_policy_resolves_against_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.json"),
        caffe_sandbox_seccomp::policy::WORKER_POLICY_JSON,
    )
    .unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        with("policy = \"builtin:worker\"", "policy = \"mine.json\""),
    )
    .unwrap();
    let p = SandboxPolicy::load(&path).expect("valid");
    assert_eq!(
        p.seccomp_source,
        SeccompSource::File(dir.path().join("mine.json").canonicalize().unwrap())
    );
    let mut cfg = dummy_cfg();
    p.apply_to(&mut cfg).unwrap();
    assert_eq!(
        cfg.seccomp_policy,
        Some(dir.path().join("mine.json").canonicalize().unwrap())
    );
    // A broken seccomp file is an error on the seccomp.policy field.
    std::fs::write(dir.path().join("mine.json"), "{}").unwrap();
    let e = SandboxPolicy::load(&path).unwrap_err();
    assert_eq!(e.field, "seccomp.policy");
    assert_eq!(
        e.line,
        line_of(
            &std::fs::read_to_string(&path).unwrap(),
            "policy = \"mine.json\""
        )
    );
}

#[test]
fn errors_point_at_file_line_column_and_field() {
    let ln = |needle: &str| line_of(INFERENCE_TOML, needle);
    // Validation errors (after parsing).
    assert_eq!(
        err(&with("address_space = \"2GiB\"", "address_space = \"2GB\"")),
        format!("t.toml:{}:17: rlimits.address_space: bad size \"2GB\": unit \"GB\" is ambiguous; use binary units (KiB, MiB, GiB, TiB)", ln("address_space = "))
    );
    assert_eq!(
        err(&with("allow_weaker = [\"cgroup-v2\"]", "allow_weaker = [\"cgroup-v2\", \"landlock\"]")),
        format!("t.toml:{}:30: allow_weaker[1]: \"landlock\" contradicts landlock.required = true (set landlock.required = false instead)", ln("allow_weaker = "))
    );
    let e = err(&with(
        "allow_weaker = [\"cgroup-v2\"]",
        "allow_weaker = [\"bogus\"]",
    ));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:17: allow_weaker[0]: unknown layer \"bogus\"",
            ln("allow_weaker = ")
        )),
        "{e}"
    );
    let e = err(&with("net = true", "net = false"));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:7: namespaces.net: must be true",
            ln("net = true")
        )),
        "{e}"
    );
    let e = err(&with("request = \"30s\"", "request = \"30\""));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:11: deadlines.request: bad duration \"30\": a unit is required",
            ln("request = ")
        )),
        "{e}"
    );
    let e = err(&with(
        "dev_nodes = [\"/dev/null\", \"/dev/urandom\"]",
        "dev_nodes = [\"/dev/null\", \"/dev/zero\"]",
    ));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:27: filesystem.dev_nodes[1]: /dev/zero is refused",
            ln("dev_nodes = ")
        )),
        "{e}"
    );
    let e = err(&with(
        "phases = [\"load\", \"inference\"]",
        "phases = [\"load\"]",
    ));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:10: seccomp.phases: a worker policy has the phases",
            ln("phases = ")
        )),
        "{e}"
    );
    let e = err(&with(
        "policy = \"builtin:worker\"",
        "policy = \"builtin:run-tool\"",
    ));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:10: seccomp.policy: builtin:run-tool lets execve through",
            ln("policy = \"builtin")
        )),
        "{e}"
    );
    let e = err(&with(
        "caffe_prefix = \"auto\"",
        "caffe_prefix = \"relative/dir\"",
    ));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:16: filesystem.caffe_prefix: must be \"auto\" or an absolute path",
            ln("caffe_prefix = ")
        )),
        "{e}"
    );
    let e = err(&with(
        "schema = \"caffe-sandbox-policy/1\"",
        "schema = \"caffe-sandbox-policy/2\"",
    ));
    assert!(
        e.starts_with("t.toml:3:10: schema: must be \"caffe-sandbox-policy/1\""),
        "{e}"
    );
    let e = err(
        &with("[cgroup]\nrequired = false", "[cgroup]\nrequired = true")
            .replace("allow_weaker = [\"cgroup-v2\"]", "allow_weaker = []"),
    );
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:12: cgroup.required: the worker launcher does not request",
            ln("[cgroup]") + 1
        )),
        "{e}"
    );
    // Deserializer errors (unknown fields, types, missing fields) get the same treatment.
    let e = err(&with("cpu_seconds = 600", "cpu_seconds = 600\nbogus = 1"));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:1: rlimits.bogus: unknown field `bogus`",
            ln("cpu_seconds = ") + 1
        )),
        "{e}"
    );
    let e = err(&with("net = true", "net = \"yes\""));
    assert_eq!(
        e,
        format!(
            "t.toml:{}:7: namespaces.net: invalid type: string \"yes\", expected a boolean",
            ln("net = true")
        )
    );
    let e = err(&with("size = \"16MiB\"\n", ""));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:1: scratch: missing field `size`",
            ln("[scratch]")
        )),
        "{e}"
    );
    let e = err(&with("kind = \"worker\"", "kind = \"daemon\""));
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:8: kind: unknown variant `daemon`",
            ln("kind = ")
        )),
        "{e}"
    );
    let e = err("this is not toml");
    assert!(e.starts_with("t.toml:1:"), "{e}");
}

#[test]
fn run_tool_extras_are_refused_for_workers() {
    let e = err(&with("ro_paths = []", "ro_paths = [\"/opt/data\"]"));
    assert!(
        e.contains("filesystem.ro_paths: the worker gets no extra executable paths"),
        "{e}"
    );
    let e = err(&with("proc = \"none\"", "proc = \"private\""));
    assert!(e.contains("filesystem.proc:"), "{e}");
    let e = err(&with("ro_paths = []", "ro_paths = [\"/home\"]"));
    assert!(
        e.contains("filesystem.ro_paths[0]: \"/home\" would expose a host directory wholesale"),
        "{e}"
    );
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
    assert!(parse_size("2GB").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999TiB").is_err());
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("30").is_err());
    assert!(parse_duration("8d").is_err());
}
