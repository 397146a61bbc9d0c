//! Compilation of a [`ResolvedPolicy`] to classic BPF with libseccomp.
//!
//! Two programs are produced for the worker:
//!
//! * the **listener filter** ([`listener_filter`]): default action
//!   `SECCOMP_RET_USER_NOTIF`, so every syscall that no rule allows reaches the
//!   supervisor's [`Monitor`](crate::Monitor) with its number, arch and
//!   arguments, without the worker's cooperation;
//! * the **inference filter** ([`inference_filter`]): stacked by the worker
//!   after load, without a listener. Its default action is `ALLOW`, which is
//!   correct only because it is always stacked on top of the listener filter:
//!   the kernel runs every filter and keeps the most restrictive result
//!   (`KILL_PROCESS > ERRNO > USER_NOTIF > ALLOW`), so a syscall the inference
//!   filter lets through is still decided by the listener filter (and reported
//!   by name). It kills the process on the `allow_load` syscalls. Killing
//!   *everything* not needed for inference there would turn reportable
//!   violations (named by the monitor) into anonymous SIGSYS deaths.
//!
//! Both use `KILL_PROCESS` for a foreign architecture (i386 `int 0x80`, x32).

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext,
    ScmpSyscall,
};

use crate::policy::{Action, Cond, ResolvedPolicy};

/// The policy could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// libseccomp refused a step.
    #[error("seccomp compile ({policy}): {what}: {source}")]
    Seccomp {
        /// Policy name.
        policy: String,
        /// The step that failed.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Exporting pseudo-filter code failed.
    #[error("seccomp compile: {0}")]
    Io(#[from] std::io::Error),
}

fn ctx_err(
    policy: &str,
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> CompileError {
    let policy = policy.to_string();
    let what = what.into();
    move |source| CompileError::Seccomp {
        policy,
        what,
        source,
    }
}

fn new_ctx(
    policy: &ResolvedPolicy,
    default: ScmpAction,
) -> Result<ScmpFilterContext, CompileError> {
    let name = policy.name.as_str();
    let mut ctx = ScmpFilterContext::new(default).map_err(ctx_err(name, "init"))?;
    // The supervisor is x86_64; make that explicit in case libseccomp's
    // native arch differs (it never should here).
    if !ctx
        .is_arch_present(ScmpArch::X8664)
        .map_err(ctx_err(name, "arch query"))?
    {
        ctx.add_arch(ScmpArch::X8664)
            .map_err(ctx_err(name, "add x86_64"))?;
    }
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(ctx_err(name, "badarch action"))?;
    // Installation sets no_new_privs itself; exporting ignores this bit, but
    // keep it explicit.
    ctx.set_ctl_nnp(true).map_err(ctx_err(name, "nnp"))?;
    // Binary-tree dispatch: the hot syscalls (sched_yield, futex) do not walk
    // a linear list.
    ctx.set_filter_attr(ScmpFilterAttr::CtlOptimize, 2)
        .map_err(ctx_err(name, "optimize"))?;
    Ok(ctx)
}

fn cmp(c: &Cond) -> ScmpArgCompare {
    match c.mask {
        Some(m) => ScmpArgCompare::new(u32::from(c.arg), ScmpCompareOp::MaskedEqual(m), c.value),
        None => ScmpArgCompare::new(u32::from(c.arg), ScmpCompareOp::Equal, c.value),
    }
}

fn listener_ctx(policy: &ResolvedPolicy) -> Result<ScmpFilterContext, CompileError> {
    let mut ctx = new_ctx(policy, ScmpAction::Notify)?;
    for r in &policy.rules {
        let action = match r.action {
            Action::Allow | Action::AllowLoad => ScmpAction::Allow,
            Action::Errno => ScmpAction::Errno(r.errno.unwrap_or(libc::ENOSYS)),
            Action::PhaseGated | Action::NotifyOnce => continue,
        };
        let conds: Vec<ScmpArgCompare> = r.conds.iter().map(cmp).collect();
        ctx.add_rule_conditional_exact(action, ScmpSyscall::from_raw_syscall(r.nr), &conds)
            .map_err(ctx_err(
                &policy.name,
                format!("rule {} (nr {})", r.index, r.nr),
            ))?;
    }
    Ok(ctx)
}

/// Compiles the listener filter (default `SECCOMP_RET_USER_NOTIF`).
///
/// `allow` and `allow_load` rules become `ALLOW`, `errno` rules `ERRNO`;
/// `phase_gated` and `notify_once` rules are the default action already (the
/// monitor tells them apart with [`ResolvedPolicy::classify`]).
pub fn listener_filter(policy: &ResolvedPolicy) -> Result<Vec<u8>, CompileError> {
    export(&listener_ctx(policy)?, &policy.name)
}

/// Compiles the listener-less inference-phase filter: `KILL_PROCESS` for every
/// `allow_load` syscall, `ALLOW` otherwise (see the module docs for why that is
/// safe only on top of the listener filter).
pub fn inference_filter(policy: &ResolvedPolicy) -> Result<Vec<u8>, CompileError> {
    let mut ctx = new_ctx(policy, ScmpAction::Allow)?;
    let mut done = std::collections::BTreeSet::new();
    for r in policy
        .rules
        .iter()
        .filter(|r| r.action == Action::AllowLoad)
    {
        if done.insert(r.nr) {
            ctx.add_rule_exact(ScmpAction::KillProcess, ScmpSyscall::from_raw_syscall(r.nr))
                .map_err(ctx_err(
                    &policy.name,
                    format!("rule {} (nr {})", r.index, r.nr),
                ))?;
        }
    }
    export(&ctx, &policy.name)
}

/// Exports raw BPF through a memfd (`seccomp_export_bpf_mem` needs
/// libseccomp 2.6; Debian 12 has 2.5).
fn export(ctx: &ScmpFilterContext, name: &str) -> Result<Vec<u8>, CompileError> {
    use std::io::{Read, Seek};
    let mut file = crate::memfd::anonymous_file("caffe-sandbox-seccomp-bpf")?;
    ctx.export_bpf(&file).map_err(ctx_err(name, "export"))?;
    let mut out = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// Human-readable pseudo-filter code of the listener filter (libseccomp PFC),
/// for review and debugging.
pub fn listener_filter_pfc(policy: &ResolvedPolicy) -> Result<String, CompileError> {
    use std::io::{Read, Seek};
    let ctx = listener_ctx(policy)?;
    let mut file = crate::memfd::anonymous_file("caffe-sandbox-seccomp-pfc")?;
    ctx.export_pfc(&file)
        .map_err(ctx_err(&policy.name, "export pfc"))?;
    let mut s = String::new();
    file.rewind()?;
    file.read_to_string(&mut s)?;
    Ok(s)
}
