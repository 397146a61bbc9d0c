//! Landlock ruleset mirroring the sandbox's view: read(-execute) below the read-only binds, read-write (no
//! execute, no symlink/FIFO/socket/device creation, no cross-directory rename) below the scratch, read-write
//! on the bound device nodes, read on the private /proc. File-system rights are a hard requirement;
//! TCP bind/connect (ABI ≥ 4) and signal / abstract-unix-socket scoping (ABI ≥ 6) are added when present.

use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

/// Highest ABI whose semantics this crate was reviewed against.
pub(crate) const MAX_TESTED_ABI: i32 = 7;

/// The running kernel's Landlock ABI (0: unsupported or disabled).
pub(crate) fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes a null attr and size 0 and has no side effects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        0
    } else {
        r as i32
    }
}

pub(crate) struct View<'a> {
    pub ro_exec: Vec<PathBuf>,
    pub ro_noexec: Vec<PathBuf>,
    pub dev_nodes: &'a [PathBuf],
    pub proc_: bool,
    pub scratch: Option<&'a Path>,
}

fn rule(path: &Path, want: BitFlags<AccessFs>, abi: ABI) -> Result<PathBeneath<PathFd>, String> {
    let fd = PathFd::new(path).map_err(|e| format!("landlock: open {}: {e}", path.display()))?;
    let rights = if path.is_dir() {
        want
    } else {
        want & AccessFs::from_file(abi)
    };
    Ok(PathBeneath::new(fd, rights))
}

/// Create and enforce the ruleset on this process (inherited by the exec'd target).
pub(crate) fn apply(view: &View<'_>) -> Result<String, String> {
    let kabi = kernel_abi();
    if kabi < 1 {
        return Err("Landlock is not supported or not enabled by this kernel".into());
    }
    let used = kabi.min(MAX_TESTED_ABI);
    let abi = ABI::from(used);
    let all = AccessFs::from_all(abi);
    let read_exec = AccessFs::from_read(abi);
    let read = read_exec & !BitFlags::from(AccessFs::Execute);
    let scratch_rw = all
        & (AccessFs::ReadFile
            | AccessFs::ReadDir
            | AccessFs::WriteFile
            | AccessFs::MakeReg
            | AccessFs::MakeDir
            | AccessFs::RemoveFile
            | AccessFs::RemoveDir
            | AccessFs::Truncate);
    let dev_rw = all & (AccessFs::ReadFile | AccessFs::WriteFile);

    let err = |e: ::landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(err)?;
    let mut extras = vec![format!("fs rights of ABI {used}")];
    if used >= 4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
        extras.push("TCP bind/connect denied".into());
    }
    if used >= 6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(err)?;
        extras.push("signals and abstract unix sockets scoped".into());
    }
    let mut created = ruleset.create().map_err(err)?;
    for p in &view.ro_exec {
        created = created.add_rule(rule(p, read_exec, abi)?).map_err(err)?;
    }
    for p in &view.ro_noexec {
        created = created.add_rule(rule(p, read, abi)?).map_err(err)?;
    }
    for p in view.dev_nodes {
        created = created.add_rule(rule(p, dev_rw, abi)?).map_err(err)?;
    }
    if view.proc_ {
        created = created
            .add_rule(rule(Path::new("/proc"), read, abi)?)
            .map_err(err)?;
    }
    if let Some(s) = view.scratch {
        created = created.add_rule(rule(s, scratch_rw, abi)?).map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!("landlock ruleset only {:?}", status.ruleset));
    }
    if kabi > MAX_TESTED_ABI {
        extras.push(format!(
            "kernel ABI {kabi}, capped at tested {MAX_TESTED_ABI}"
        ));
    }
    Ok(extras.join("; "))
}
