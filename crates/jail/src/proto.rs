//! What the supervisor hands to stage 2 (serialized into a sealed memfd) and what stage 2 answers (framed
//! JSON on a `CLOEXEC` pipe that a successful exec closes).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Layer, LayerReport, Limits, ProcMode, ScratchSpec, StdoutMode};

/// Frame length marking the clone child's own exec failure (followed by a 4-byte errno).
pub(crate) const CHILD_EXEC_FAILED: u32 = u32::MAX;
/// Upper bound on one frame (the report is a few KiB).
pub(crate) const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stage2Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Read-only binds (path inside = host path, executable?), in the order the clone child opened them.
    pub binds: Vec<(PathBuf, bool)>,
    /// Pipe carrying one i32 per bind: the O_PATH fd the clone child opened (or -errno).
    pub bind_fd_pipe: RawFd,
    pub dev_nodes: Vec<PathBuf>,
    pub proc: ProcMode,
    pub scratch: Option<ScratchSpec>,
    /// (fd number in stage 2, target number).
    pub pass_fds: Vec<(RawFd, RawFd)>,
    pub stderr_fd: RawFd,
    pub stdout: StdoutMode,
    pub stdout_fd: Option<RawFd>,
    pub report_fd: RawFd,
    pub limits: Limits,
    pub allow_weaker: BTreeSet<Layer>,
    pub hostname: String,
    /// Drop supplementary groups (only possible when the parent was root and setgroups is allowed).
    pub drop_groups: bool,
    /// False only when running without a user namespace was explicitly allowed (root only).
    pub userns: bool,
    /// Namespace inode numbers of the supervisor, to prove the new ones differ.
    pub parent_ns: BTreeMap<String, u64>,
    /// Layers decided by the parent (UserNs, CgroupV2, Seccomp).
    pub parent_layers: LayerReport,
    pub simulate_unavailable: BTreeSet<Layer>,
    /// [`crate::ExecFilter`]: its program received and its listener sent over `sock`, installed last.
    pub exec_filter: Option<Stage2ExecFilter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stage2ExecFilter {
    /// The program itself arrives on `sock` (it may still be compiling when stage 2 starts).
    pub name: String,
    /// Stage 2's end of the listener socket pair (`CLOEXEC` after stage 2 starts).
    pub sock: RawFd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Stage2Msg {
    Ready(LayerReport),
    Unavailable { layer: Layer, cause: String },
    SetupFailed(String),
    ExecFailed(String),
}

pub(crate) fn write_msg(mut w: impl Write, msg: &Stage2Msg) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// What the parent read from the report pipe.
#[derive(Debug)]
pub(crate) enum Decoded {
    Msg(Stage2Msg),
    ChildExecFailed(i32),
}

pub(crate) fn decode_all(mut buf: &[u8]) -> Result<Vec<Decoded>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err("truncated frame header from stage 2".into());
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        buf = &buf[4..];
        if len == CHILD_EXEC_FAILED {
            if buf.len() < 4 {
                return Err("truncated exec failure from clone child".into());
            }
            out.push(Decoded::ChildExecFailed(i32::from_le_bytes([
                buf[0], buf[1], buf[2], buf[3],
            ])));
            buf = &buf[4..];
            continue;
        }
        let len = len as usize;
        if len > MAX_FRAME || len > buf.len() {
            return Err(format!("bad frame length {len} from stage 2"));
        }
        let msg: Stage2Msg = serde_json::from_slice(&buf[..len])
            .map_err(|e| format!("undecodable stage 2 message: {e}"))?;
        out.push(Decoded::Msg(msg));
        buf = &buf[len..];
    }
    Ok(out)
}

pub(crate) fn read_spec(mut r: impl Read) -> std::io::Result<Stage2Spec> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(MAX_FRAME as u64 * 4)
        .read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}
