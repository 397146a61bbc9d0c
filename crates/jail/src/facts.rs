//! [`host_facts`]: what this host can enforce.

use std::path::PathBuf;

use serde::Serialize;

/// cgroup situation.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupFacts {
    /// Mount point of the cgroup v2 hierarchy, if any.
    pub v2_mount: Option<PathBuf>,
    /// Controllers offered to our own v2 cgroup.
    pub v2_controllers: Vec<String>,
    /// v1 controllers mounted.
    pub v1_controllers: Vec<String>,
    /// `None` when memory/cpu/pids v2 limits can be applied; otherwise why not.
    pub v2_unavailable: Option<String>,
}

/// What the host offers (for `caffe-sandbox doctor`-style output and the audit log).
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_release: String,
    /// Landlock ABI of the kernel (0: none).
    pub landlock_abi: i32,
    /// Highest Landlock ABI this crate uses.
    pub landlock_abi_used: i32,
    /// seccomp filter mode available.
    pub seccomp_available: bool,
    /// `/proc/sys/kernel/seccomp/actions_avail`.
    pub seccomp_actions: Vec<String>,
    /// Unprivileged user namespaces look allowed (sysctls).
    pub unprivileged_userns: bool,
    /// Relevant sysctl values read.
    pub userns_sysctls: Vec<(String, String)>,
    /// Effective uid of the caller.
    pub euid: u32,
    /// cgroup facts.
    pub cgroup: CgroupFacts,
    /// Whether bwrap / crun / runc are on PATH (for benchmarks).
    pub tools: Vec<(String, Option<PathBuf>)>,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Gather host facts (cheap: a few file reads and syscalls).
pub fn host_facts() -> HostFacts {
    // SAFETY: utsname is plain data filled by uname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid output pointer.
    let kernel_release = if unsafe { libc::uname(&mut uts) } == 0 {
        // SAFETY: uname NUL-terminates release.
        unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let seccomp_actions: Vec<String> =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let seccomp_available = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0
        && !seccomp_actions.is_empty();
    let mut userns_sysctls = Vec::new();
    let mut unpriv = true;
    for (file, bad) in [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ] {
        if let Ok(v) = std::fs::read_to_string(file) {
            let v = v.trim().to_string();
            if v == bad {
                unpriv = false;
            }
            userns_sysctls.push((file.to_string(), v));
        }
    }
    let (v2_mount, v1_controllers) = crate::cgroup::mounts();
    let v2_controllers = crate::cgroup::detect_v2()
        .map(|v| v.controllers)
        .unwrap_or_default();
    HostFacts {
        kernel_release,
        landlock_abi: crate::landlock::kernel_abi(),
        landlock_abi_used: crate::landlock::kernel_abi().min(crate::landlock::MAX_TESTED_ABI),
        seccomp_available,
        seccomp_actions,
        unprivileged_userns: unpriv,
        userns_sysctls,
        // SAFETY: trivial getter.
        euid: unsafe { libc::geteuid() },
        cgroup: CgroupFacts {
            v2_mount,
            v2_controllers,
            v1_controllers,
            v2_unavailable: crate::cgroup::unavailability(),
        },
        tools: ["bwrap", "crun", "runc"]
            .iter()
            .map(|t| (t.to_string(), which(t)))
            .collect(),
    }
}
