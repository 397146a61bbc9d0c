//! `caffe-sandbox export docker|oci|k8s`: the same policy for container runtimes.
//!
//! * [`seccomp`]: the static profile (Docker/Podman/containerd JSON and OCI `linux.seccomp`), with the list
//!   of what a static profile cannot express and how it degrades (closed).
//! * [`oci`]: an OCI runtime bundle `config.json` running the worker with read-only binds of exactly its files.
//! * [`docker`]: `docker run` / `podman run` flags.
//! * [`k8s`]: Deployment, Service, NetworkPolicy and ConfigMap for the server.

pub mod docker;
pub mod k8s;
pub mod oci;
pub mod seccomp;

use std::path::{Path, PathBuf};

use caffe_sandbox_supervisor::launch::{prefix_lib_dirs, shared_libraries};

use crate::{Kind, SandboxPolicy};

/// The concrete files and command line a container needs to run the policy's workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Program (absolute host path; bound at the same path).
    pub program: PathBuf,
    /// argv after the program.
    pub args: Vec<String>,
    /// Environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Files bound read-only at the same path (the program's shared libraries), sorted.
    pub ro_files: Vec<PathBuf>,
    /// Directories bound read-only at the same path (the Caffe prefix), sorted.
    pub ro_dirs: Vec<PathBuf>,
    /// Directories bound read-only and noexec.
    pub ro_noexec_dirs: Vec<PathBuf>,
}

impl Workload {
    /// The worker as the supervisor starts it: `--channel-fd 3 --seccomp-fd 4` (the OCI tier preserves both fds).
    pub fn worker(
        policy: &SandboxPolicy,
        worker_exe: &Path,
        caffe_prefix: &Path,
        log_level: i32,
    ) -> Result<Workload, String> {
        if policy.file.kind != Kind::Worker {
            return Err("not a worker policy".into());
        }
        let libs = shared_libraries(worker_exe, caffe_prefix).map_err(|e| e.to_string())?;
        let libdirs: Vec<String> = prefix_lib_dirs(caffe_prefix)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Ok(Workload {
            program: worker_exe.to_path_buf(),
            args: ["--channel-fd", "3", "--seccomp-fd", "4", "--log-level"]
                .iter()
                .map(|s| s.to_string())
                .chain([log_level.to_string()])
                .collect(),
            env: vec![
                format!("LD_LIBRARY_PATH={}", libdirs.join(":")),
                "PATH=/nonexistent".into(),
                "LANG=C".into(),
                "GLOG_logtostderr=1".into(),
                format!("TMPDIR={}", policy.file.scratch.path),
            ],
            ro_files: libs
                .into_iter()
                .filter(|l| !l.starts_with(caffe_prefix))
                .collect(),
            ro_dirs: vec![caffe_prefix.to_path_buf()],
            ro_noexec_dirs: policy
                .file
                .filesystem
                .ro_noexec_paths
                .iter()
                .map(PathBuf::from)
                .collect(),
        })
    }

    /// Every path a container must bind (files and directories).
    pub fn binds(&self) -> Vec<(PathBuf, bool)> {
        let mut v: Vec<(PathBuf, bool)> = std::iter::once(self.program.clone())
            .chain(self.ro_files.iter().cloned())
            .chain(self.ro_dirs.iter().cloned())
            .map(|p| (p, true))
            .chain(self.ro_noexec_dirs.iter().map(|p| (p.clone(), false)))
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }
}
