//! cgroup v2 detection and (when delegated) a per-sandbox child cgroup with memory.max / cpu.max /
//! pids.max. On hosts with only v1 controllers (like the development machines) the layer is reported as
//! `NotAvailable` — it is never faked with v1.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::CgroupLimits;

/// Where the v2 hierarchy is mounted and what our own cgroup offers.
#[derive(Debug, Clone)]
pub(crate) struct V2 {
    pub own: PathBuf,
    pub controllers: Vec<String>,
}

pub(crate) const REQUIRED: [&str; 3] = ["memory", "cpu", "pids"];

/// Mount points of cgroup filesystems (`cgroup2` and v1 controllers).
pub(crate) fn mounts() -> (Option<PathBuf>, Vec<String>) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return (None, Vec::new());
    };
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        match rfields[0] {
            "cgroup2" if v2.is_none() && fields[3] == "/" => v2 = Some(PathBuf::from(fields[4])),
            "cgroup" => {
                for opt in rfields[2].split(',') {
                    if !matches!(
                        opt,
                        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                    ) && !opt.starts_with("name=")
                    {
                        v1.push(opt.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (v2, v1)
}

pub(crate) fn detect_v2() -> Option<V2> {
    detect_v2_at(mounts().0?)
}

fn detect_v2_at(mount: PathBuf) -> Option<V2> {
    let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .trim_start_matches('/')
        .to_string();
    let own = mount.join(rel);
    let controllers = fs::read_to_string(own.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    Some(V2 { own, controllers })
}

/// Why v2 limits cannot be applied here, or `None` if they can.
pub(crate) fn unavailability() -> Option<String> {
    usable_v2().err()
}

/// Our own v2 cgroup when limits can be applied there, or why not (one read of mountinfo).
fn usable_v2() -> Result<V2, String> {
    let (v2_mount, v1) = mounts();
    match v2_mount.and_then(detect_v2_at) {
        None if !v1.is_empty() => Err("cgroup v2 controllers not delegated; v1 only".into()),
        None => Err("no cgroup v2 hierarchy mounted".into()),
        Some(v2) => {
            let missing: Vec<&str> = REQUIRED
                .iter()
                .copied()
                .filter(|c| !v2.controllers.iter().any(|x| x == c))
                .collect();
            if !missing.is_empty() {
                let mut s = format!(
                    "cgroup v2 controllers not delegated ({} offers [{}], missing {})",
                    v2.own.display(),
                    v2.controllers.join(" "),
                    missing.join(",")
                );
                if !v1.is_empty() {
                    s.push_str("; v1 only");
                }
                return Err(s);
            }
            // SAFETY: access() only checks permissions of a valid path string.
            let writable = crate::sys::cstr(v2.own.as_os_str())
                .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
                .unwrap_or(false);
            if !writable {
                return Err(format!(
                    "cgroup v2 {} is not writable by this user (not delegated)",
                    v2.own.display()
                ));
            }
            Ok(v2)
        }
    }
}

/// A child cgroup created for one sandbox.
pub(crate) struct Plan {
    dir: Option<PathBuf>,
    detail: String,
}

impl Drop for Plan {
    /// A spawn that failed leaves no cgroup behind (its child was killed and reaped first).
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = fs::remove_dir(d);
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    fs::write(dir.join(file), value).map_err(|e| format!("write {}/{file}: {e}", dir.display()))
}

/// Create the child cgroup and write the limits (before the clone).
pub(crate) fn prepare(l: &CgroupLimits) -> Result<Plan, String> {
    let v2 = usable_v2()?;
    // Processes may not live in an inner cgroup with controllers enabled (no-internal-process rule), so the
    // sandbox cgroups are created as siblings under a "caffe-sandbox" child with controllers enabled.
    let parent = v2.own.join("caffe-sandbox");
    if !parent.exists() {
        fs::create_dir(&parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    let _ = write(&v2.own, "cgroup.subtree_control", "+memory +cpu +pids");
    write(&parent, "cgroup.subtree_control", "+memory +cpu +pids")?;
    let dir = parent.join(format!(
        "w{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut detail = Vec::new();
    if let Some(m) = l.memory_max {
        write(&dir, "memory.max", &m.to_string())?;
        let _ = write(&dir, "memory.swap.max", "0");
        detail.push(format!("memory.max={m}"));
    }
    if let Some((q, p)) = l.cpu_max {
        write(&dir, "cpu.max", &format!("{q} {p}"))?;
        detail.push(format!("cpu.max={q} {p}"));
    }
    if let Some(n) = l.pids_max {
        write(&dir, "pids.max", &n.to_string())?;
        detail.push(format!("pids.max={n}"));
    }
    Ok(Plan {
        detail: format!("{}: {}", dir.display(), detail.join(" ")),
        dir: Some(dir),
    })
}

impl Plan {
    /// Move the (still blocked) clone child into the cgroup.
    pub(crate) fn attach(&self, pid: libc::pid_t) -> Result<String, String> {
        let dir = self.dir.as_ref().ok_or("cgroup already handed over")?;
        write(dir, "cgroup.procs", &pid.to_string())?;
        Ok(self.detail.clone())
    }

    /// Hand the directory to the [`crate::Sandboxed`] (removed after the sandbox is reaped).
    pub(crate) fn into_dir(mut self) -> Option<PathBuf> {
        self.dir.take()
    }
}
