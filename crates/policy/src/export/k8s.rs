//! Kubernetes manifests for the server: ConfigMap (the policy), Deployment, Service, NetworkPolicy.
//!
//! The pod runs the supervisor (`caffe-sandbox serve`), which starts its workers in the native sandbox inside
//! the container, so the pod's seccomp profile (`Localhost`, installed on every node under the kubelet's
//! seccomp directory as `caffe-sandbox/<policy>-server.json`) is the worker envelope plus what the supervisor
//! and the jail's stage 2 need ([`SERVER_SYSCALLS`]) plus the server's sockets. It is necessarily wider than
//! the worker's envelope (namespace creation, mount, pivot_root, Landlock, seccomp for the workers); the
//! workers themselves still run under the native jail and their own two-phase filter.
//!
//! Written as YAML documents whose bodies are JSON (JSON is YAML), so they are byte-for-byte what the
//! validators and `kubectl apply -f` read.

use serde_json::{json, Value};

use super::seccomp::Envelope;
use crate::SandboxPolicy;

/// Syscalls of the supervisor and the jail's stage 2 (names only), from `strace -ff` of
/// `caffe-sandbox infer` on open_nsfw, plus the HTTP server's socket calls. Not yet re-profiled against a
/// running `caffe-sandbox serve` (issue 5); the never-allow families (ptrace, bpf, io_uring, userfaultfd,
/// perf_event_open, keyctl, module loading, kexec, open_by_handle_at, …) are absent on purpose.
pub const SERVER_SYSCALLS: &[&str] = &[
    // supervisor and jail stage 2 (profiled)
    "access",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clone",
    "clone3",
    "close",
    "close_range",
    "connect",
    "dup2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat2",
    "fcntl",
    "fstat",
    "ftruncate",
    "futex",
    "get_mempolicy",
    "getcwd",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getsockname",
    "getsockopt",
    "gettid",
    "getuid",
    "ioctl",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lseek",
    "madvise",
    "mbind",
    "memfd_create",
    "mkdir",
    "mmap",
    "mount",
    "mount_setattr",
    "mprotect",
    "munmap",
    "newfstatat",
    "openat",
    "pidfd_send_signal",
    "pipe2",
    "pivot_root",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "prlimit64",
    "pwrite64",
    "read",
    "readlink",
    "recvfrom",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_yield",
    "seccomp",
    "sendmsg",
    "sendto",
    "set_mempolicy",
    "set_robust_list",
    "set_tid_address",
    "setgroups",
    "sethostname",
    "setresgid",
    "setresuid",
    "setsid",
    "sigaltstack",
    "socket",
    "socketpair",
    "statfs",
    "statx",
    "sysinfo",
    "umask",
    "umount2",
    "uname",
    "wait4",
    "waitid",
    "write",
    "writev",
    // HTTP serving, timers, audit log
    "accept4",
    "listen",
    "setsockopt",
    "getpeername",
    "shutdown",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "gettimeofday",
    "pidfd_open",
    "fsync",
    "fdatasync",
    "open_tree",
    "move_mount",
];

/// Options of the manifests.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    /// Container image holding `caffe-sandbox`, the worker and the Caffe prefix.
    pub image: String,
    /// Namespace.
    pub namespace: String,
    /// HTTP port.
    pub port: u16,
    /// Replicas.
    pub replicas: u32,
    /// PersistentVolumeClaim with the model repository (mounted read-only at /models).
    pub models_claim: String,
}

impl Default for K8sOptions {
    fn default() -> Self {
        K8sOptions {
            image: "caffe-sandbox:latest".into(),
            namespace: "caffe-sandbox".into(),
            port: 8000,
            replicas: 1,
            models_claim: "caffe-sandbox-models".into(),
        }
    }
}

/// The server's Localhost seccomp profile (Docker/containerd format).
pub fn server_profile(env: &Envelope) -> Value {
    let mut p = super::seccomp::docker_profile(env);
    let mut names: Vec<&str> = SERVER_SYSCALLS.to_vec();
    names.sort_unstable();
    names.dedup();
    if let Some(list) = p["syscalls"].as_array_mut() {
        list.push(json!({
            "names": names,
            "action": "SCMP_ACT_ALLOW",
            "comment": "supervisor, jail stage 2 and HTTP server (see crates/policy/src/export/k8s.rs); the \
                        workers additionally run under the native jail and their own filter",
        }));
    }
    p
}

/// File name of the server profile under the kubelet's seccomp root.
pub fn profile_name(policy: &SandboxPolicy) -> String {
    format!("caffe-sandbox/{}-server.json", policy.file.name)
}

fn quantity_bytes(b: u64) -> String {
    if b & ((1 << 30) - 1) == 0 {
        format!("{}Gi", b >> 30)
    } else if b & ((1 << 20) - 1) == 0 {
        format!("{}Mi", b >> 20)
    } else {
        b.to_string()
    }
}

fn quantity_cpu(quota: u64, period: u64) -> String {
    format!("{}m", (quota * 1000).div_ceil(period.max(1)))
}

/// The manifest documents, in apply order.
pub fn manifests(policy: &SandboxPolicy, policy_toml: &str, o: &K8sOptions) -> Vec<Value> {
    let name = format!("caffe-sandbox-{}", policy.file.name);
    let labels =
        json!({"app.kubernetes.io/name": "caffe-sandbox", "app.kubernetes.io/instance": name});
    let mut limits = serde_json::Map::new();
    if let Some(m) = policy.cgroup.memory_max {
        limits.insert("memory".into(), json!(quantity_bytes(m)));
    }
    if let Some((q, p)) = policy.cgroup.cpu_max {
        limits.insert("cpu".into(), json!(quantity_cpu(q, p)));
    }
    limits.insert(
        "ephemeral-storage".into(),
        json!(quantity_bytes(policy.scratch_bytes.max(1 << 20))),
    );
    let seccomp = json!({"type": "Localhost", "localhostProfile": profile_name(policy)});
    let configmap = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-policy"), "namespace": o.namespace, "labels": labels},
        "data": {"policy.toml": policy_toml},
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": o.namespace, "labels": labels},
        "spec": {
            "replicas": o.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "hostNetwork": false,
                    "hostPID": false,
                    "hostIPC": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "seccompProfile": seccomp,
                    },
                    "containers": [{
                        "name": "server",
                        "image": o.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["caffe-sandbox", "serve"],
                        "args": ["--listen", format!("0.0.0.0:{}", o.port), "--models", "/models",
                                 "--policy", "/etc/caffe-sandbox/policy.toml"],
                        "ports": [{"name": "http", "containerPort": o.port, "protocol": "TCP"}],
                        "securityContext": {
                            "runAsNonRoot": true,
                            "allowPrivilegeEscalation": false,
                            "privileged": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": seccomp,
                        },
                        "resources": {"limits": limits, "requests": limits},
                        "volumeMounts": [
                            {"name": "policy", "mountPath": "/etc/caffe-sandbox", "readOnly": true},
                            {"name": "models", "mountPath": "/models", "readOnly": true},
                            {"name": "scratch", "mountPath": policy.file.scratch.path},
                        ],
                    }],
                    "volumes": [
                        {"name": "policy", "configMap": {"name": format!("{name}-policy")}},
                        {"name": "models", "persistentVolumeClaim": {"claimName": o.models_claim, "readOnly": true}},
                        {"name": "scratch", "emptyDir": {"medium": "Memory",
                                                          "sizeLimit": quantity_bytes(policy.scratch_bytes)}},
                    ],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": o.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": o.port, "targetPort": "http", "protocol": "TCP"}],
        },
    });
    let netpol = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": format!("{name}-deny-egress"), "namespace": o.namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": o.port}]}],
            "egress": [],
        },
    });
    vec![configmap, deployment, service, netpol]
}

/// Multi-document YAML (each document's body is JSON).
pub fn to_yaml(docs: &[Value]) -> String {
    let mut s = String::from("# Generated by `caffe-sandbox export k8s`; see docs/policy.md.\n");
    for d in docs {
        s.push_str("---\n");
        s.push_str(&serde_json::to_string_pretty(d).unwrap_or_default());
        s.push('\n');
    }
    s
}
