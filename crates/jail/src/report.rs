//! Layers and the per-spawn layer report.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One isolation layer. Names (kebab-case) are used by `--allow-weaker LAYER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// New user namespace; the worker's uid 0 maps to an unprivileged host uid.
    UserNs,
    /// New pid namespace; the target is its pid 1.
    PidNs,
    /// New network namespace (only a down `lo`).
    NetNs,
    /// New mount namespace with a minimal root (pivot_root).
    MountNs,
    /// New System V IPC / POSIX mqueue namespace.
    IpcNs,
    /// New UTS namespace (own hostname).
    UtsNs,
    /// New cgroup namespace.
    CgroupNs,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Every capability dropped (effective, permitted, inheritable, ambient, bounding) + locked securebits.
    Capabilities,
    /// Landlock ruleset mirroring the read-only / read-write view.
    Landlock,
    /// Resource limits (setrlimit).
    Rlimits,
    /// cgroup v2 memory.max / cpu.max / pids.max in a delegated hierarchy.
    CgroupV2,
    /// seccomp filter; installed by the worker itself, reported by the caller.
    Seccomp,
    /// Private size-capped nosuid,nodev,noexec tmpfs as the only writable place.
    ScratchTmpfs,
    /// Environment replaced by the spec's explicit list.
    EnvScrubbed,
    /// Every fd but stdio and the passed ones closed.
    FdsClosed,
    /// `PR_SET_PDEATHSIG(SIGKILL)`.
    ParentDeathSignal,
    /// New session (`setsid`), no controlling terminal.
    Setsid,
}

impl Layer {
    /// Every layer, in report order.
    pub const ALL: [Layer; 18] = [
        Layer::UserNs,
        Layer::PidNs,
        Layer::NetNs,
        Layer::MountNs,
        Layer::IpcNs,
        Layer::UtsNs,
        Layer::CgroupNs,
        Layer::NoNewPrivs,
        Layer::Capabilities,
        Layer::Landlock,
        Layer::Rlimits,
        Layer::CgroupV2,
        Layer::Seccomp,
        Layer::ScratchTmpfs,
        Layer::EnvScrubbed,
        Layer::FdsClosed,
        Layer::ParentDeathSignal,
        Layer::Setsid,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Layer::UserNs => "user-ns",
            Layer::PidNs => "pid-ns",
            Layer::NetNs => "net-ns",
            Layer::MountNs => "mount-ns",
            Layer::IpcNs => "ipc-ns",
            Layer::UtsNs => "uts-ns",
            Layer::CgroupNs => "cgroup-ns",
            Layer::NoNewPrivs => "no-new-privs",
            Layer::Capabilities => "capabilities",
            Layer::Landlock => "landlock",
            Layer::Rlimits => "rlimits",
            Layer::CgroupV2 => "cgroup-v2",
            Layer::Seccomp => "seccomp",
            Layer::ScratchTmpfs => "scratch-tmpfs",
            Layer::EnvScrubbed => "env-scrubbed",
            Layer::FdsClosed => "fds-closed",
            Layer::ParentDeathSignal => "parent-death-signal",
            Layer::Setsid => "setsid",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Layer::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layer {0:?} (known: user-ns, pid-ns, net-ns, mount-ns, ipc-ns, uts-ns, cgroup-ns, no-new-privs, capabilities, landlock, rlimits, cgroup-v2, seccomp, scratch-tmpfs, env-scrubbed, fds-closed, parent-death-signal, setsid)")]
pub struct UnknownLayer(pub String);

impl FromStr for Layer {
    type Err = UnknownLayer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Layer::ALL
            .iter()
            .copied()
            .find(|l| l.name() == norm || l.name().replace('-', "") == norm)
            .ok_or_else(|| UnknownLayer(s.to_string()))
    }
}

/// The state of one layer for one sandboxed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LayerState {
    /// Fully applied (and checked where the kernel lets us read it back).
    Enforced {
        /// What exactly is in force (e.g. the Landlock ABI used).
        detail: String,
    },
    /// Applied partially or not at all, and running anyway because the spec's `allow_weaker` lists it.
    Weakened {
        /// Why.
        reason: String,
    },
    /// Not applied because the host cannot provide it (or it was not requested).
    NotAvailable {
        /// Why.
        reason: String,
    },
    /// Applied by another component (seccomp: the worker installs its own filter after library init);
    /// the caller updates the entry with [`LayerReport::set`] once it has confirmation.
    Delegated {
        /// Who applies it.
        reason: String,
    },
}

impl LayerState {
    /// `Enforced` with a detail.
    pub fn enforced(detail: impl Into<String>) -> Self {
        LayerState::Enforced {
            detail: detail.into(),
        }
    }
    /// `Weakened` with a reason.
    pub fn weakened(reason: impl Into<String>) -> Self {
        LayerState::Weakened {
            reason: reason.into(),
        }
    }
    /// `NotAvailable` with a reason.
    pub fn not_available(reason: impl Into<String>) -> Self {
        LayerState::NotAvailable {
            reason: reason.into(),
        }
    }
    /// True for `Enforced`.
    pub fn is_enforced(&self) -> bool {
        matches!(self, LayerState::Enforced { .. })
    }
}

impl fmt::Display for LayerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerState::Enforced { detail } if detail.is_empty() => write!(f, "enforced"),
            LayerState::Enforced { detail } => write!(f, "enforced ({detail})"),
            LayerState::Weakened { reason } => write!(f, "WEAKENED: {reason}"),
            LayerState::NotAvailable { reason } => write!(f, "not available: {reason}"),
            LayerState::Delegated { reason } => write!(f, "delegated: {reason}"),
        }
    }
}

/// Which layers are in force for one sandboxed process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// One entry per layer.
    pub layers: BTreeMap<Layer, LayerState>,
}

impl LayerReport {
    /// Set (or replace) a layer's state. The caller uses this for [`Layer::Seccomp`].
    pub fn set(&mut self, layer: Layer, state: LayerState) {
        self.layers.insert(layer, state);
    }
    /// A layer's state, if recorded.
    pub fn get(&self, layer: Layer) -> Option<&LayerState> {
        self.layers.get(&layer)
    }
    /// True when the layer is recorded as `Enforced`.
    pub fn is_enforced(&self, layer: Layer) -> bool {
        self.get(layer).is_some_and(LayerState::is_enforced)
    }
    /// Layers that are not `Enforced`.
    pub fn not_enforced(&self) -> Vec<Layer> {
        self.layers
            .iter()
            .filter(|(_, s)| !s.is_enforced())
            .map(|(l, _)| *l)
            .collect()
    }
}

impl fmt::Display for LayerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (layer, state) in &self.layers {
            writeln!(f, "{:<20} {}", layer.name(), state)?;
        }
        Ok(())
    }
}
