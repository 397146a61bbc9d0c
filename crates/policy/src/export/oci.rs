//! OCI runtime bundle `config.json` (runtime-spec 1.0.2) for the policy's workload.
//!
//! Mapping of the native layers:
//! * namespaces: user, pid, network (no interfaces configured: only a down `lo`), ipc, uts, mount, cgroup;
//! * filesystem: an empty read-only root (`root.readonly`), read-only `nosuid,nodev` binds of exactly the
//!   program and its libraries (file by file) and the Caffe prefix; no `/proc`, `/sys` or host `/tmp`;
//! * `/dev`: the runtime-spec mandates default devices (null, zero, full, random, urandom, tty); the ones the
//!   native jail does not give the worker are covered with `maskedPaths` (the runtime binds /dev/null over
//!   them, so `/dev/zero` is no longer an endless data source);
//! * scratch: tmpfs `nosuid,nodev,noexec,size=…`;
//! * rlimits (RLIMIT_CORE 0 included), `noNewPrivileges`, empty capability sets;
//! * cgroup resources: memory (+ swap = memory, i.e. no swap), cpu quota/period, pids — only when the caller
//!   says the runtime can apply them (see [`OciOptions::cgroup_resources`]);
//! * seccomp: the envelope (see [`super::seccomp`]).
//!
//! Not expressible: Landlock (no runtime-spec field; the worker does not apply it itself), the parent-death
//! signal of the native jail (the runtime's own process is the parent), the supervisor's per-request deadlines
//! (they stay in the supervisor either way).

use serde_json::{json, Value};

use super::seccomp::{oci_seccomp, Envelope};
use super::Workload;
use crate::SandboxPolicy;

/// Options for one bundle.
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// Host uid/gid the container's uid 0 maps to (rootless: the caller; as root: 65534 like the native jail).
    pub host_uid: u32,
    /// See `host_uid`.
    pub host_gid: u32,
    /// Put cgroup limits into `linux.resources` (false when the runtime runs with cgroups disabled, e.g.
    /// rootless on a cgroup v1 host).
    pub cgroup_resources: bool,
    /// Bundle for runc: a private `/proc` (runc refuses to start a container without one) and one extra
    /// seccomp rule, `openat(…, O_WRONLY|O_CLOEXEC)` with exactly these flags, because runc's init opens its
    /// exec fifo (`/proc/self/fd/N`) after installing the filter, plus [`RUNC_INIT_SYSCALLS`]. The worker's own
    /// stacked filter still treats any write open, epoll or directory listing as a violation once installed.
    pub runc: bool,
    /// Lowest RLIMIT_NOFILE in the bundle: crun applies `process.rlimits` before it sets up the mounts and
    /// needs about one fd per bind (the worker's ~150 file binds), so a lower limit makes crun itself fail.
    pub nofile_floor: Option<u64>,
}

impl OciOptions {
    /// Defaults for the calling user: root maps to 65534 (never host root), others to themselves.
    pub fn for_caller() -> OciOptions {
        // SAFETY: trivial getters without arguments.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let (host_uid, host_gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        OciOptions {
            host_uid,
            host_gid,
            cgroup_resources: uid == 0,
            runc: false,
            nofile_floor: None,
        }
    }
}

/// What runc's Go init does between installing the filter and execve (besides calls the envelope already
/// allows): its netpoller (epoll), and listing /proc/self/fd (fstatfs to check it is procfs, getdents64) to
/// mark fds close-on-exec. Profiled with `strace -f` of runc 1.1.5 (Debian 12).
pub const RUNC_INIT_SYSCALLS: [&str; 5] = [
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "fstatfs",
    "getdents64",
];

/// Devices the runtime creates by default but the worker must not have.
pub const MASKED_DEVICES: [&str; 4] = ["/dev/zero", "/dev/full", "/dev/random", "/dev/tty"];

/// The `config.json` document.
pub fn config(policy: &SandboxPolicy, w: &Workload, env: &Envelope, o: &OciOptions) -> Value {
    let f = &policy.file;
    let mut rlimits = vec![json!({"type": "RLIMIT_CORE", "hard": 0, "soft": 0})];
    let l = &policy.limits;
    for (name, v) in [
        ("RLIMIT_AS", l.address_space_bytes),
        ("RLIMIT_CPU", l.cpu_seconds),
        ("RLIMIT_FSIZE", l.file_size_bytes),
        (
            "RLIMIT_NOFILE",
            l.open_files.map(|n| n.max(o.nofile_floor.unwrap_or(0))),
        ),
        ("RLIMIT_NPROC", l.processes),
    ] {
        if let Some(v) = v {
            rlimits.push(json!({"type": name, "hard": v, "soft": v}));
        }
    }
    let mut mounts = vec![
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"]}),
        json!({"destination": f.scratch.path, "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "noexec", "mode=1777", format!("size={}", policy.scratch_bytes)]}),
    ];
    if o.runc {
        mounts.push(
            json!({"destination": "/proc", "type": "proc", "source": "proc",
                           "options": ["nosuid", "nodev", "noexec"]}),
        );
    }
    for (p, exec) in w.binds() {
        let mut opts = vec!["bind", "ro", "nosuid", "nodev"];
        if p.is_dir() {
            opts.insert(0, "rbind");
            opts.retain(|x| *x != "bind");
        }
        if !exec {
            opts.push("noexec");
        }
        mounts.push(json!({"destination": p, "type": "bind", "source": p, "options": opts}));
    }
    let mut seccomp = oci_seccomp(env);
    if o.runc {
        if let Some(list) = seccomp["syscalls"].as_array_mut() {
            list.push(json!({"names": ["openat"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 2, "value": libc::O_WRONLY | libc::O_CLOEXEC, "op": "SCMP_CMP_EQ"}]}));
            list.push(json!({"names": RUNC_INIT_SYSCALLS, "action": "SCMP_ACT_ALLOW"}));
        }
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
        json!({"type": "user"}),
    ];
    namespaces.sort_by_key(|v| v["type"].as_str().unwrap_or_default().to_string());
    let mut linux = json!({
        "namespaces": namespaces,
        "uidMappings": [{"containerID": 0, "hostID": o.host_uid, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": o.host_gid, "size": 1}],
        "seccomp": seccomp,
        "maskedPaths": MASKED_DEVICES.iter().copied()
            .chain(["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"])
            .collect::<Vec<_>>(),
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        "rootfsPropagation": "private",
    });
    if o.cgroup_resources {
        let mut res = serde_json::Map::new();
        if let Some(m) = policy.cgroup.memory_max {
            res.insert("memory".into(), json!({"limit": m, "swap": m}));
        }
        if let Some((q, p)) = policy.cgroup.cpu_max {
            res.insert("cpu".into(), json!({"quota": q, "period": p}));
        }
        if let Some(n) = policy.cgroup.pids_max {
            res.insert("pids".into(), json!({"limit": n}));
        }
        res.insert("devices".into(), json!([{"allow": false, "access": "rwm"}]));
        linux["resources"] = Value::Object(res);
    }
    let args: Vec<String> = std::iter::once(w.program.display().to_string())
        .chain(w.args.iter().cloned())
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": w.env,
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": rlimits,
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": f.namespaces.hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            "org.caffe-sandbox.policy": f.name,
            "org.caffe-sandbox.policy-origin": policy.origin,
        },
    })
}
