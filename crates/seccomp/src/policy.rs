//! The policy data file: schema, validation and a pure-Rust evaluator.
//!
//! A policy is a reviewed JSON file in `policies/seccomp/` (see that folder's
//! README). Each rule names one x86_64 system call, an [`Action`], optional
//! argument conditions and a mandatory `why` saying which library or phase needs
//! it. Everything not matched by a rule goes to the supervisor through seccomp
//! user notification and is a violation.
//!
//! Validation is strict: unknown fields, unknown syscall names, unknown constant
//! names, duplicate rules, overlapping rules with different actions, `ne`-style
//! comparisons, rules without argument conditions on argument-critical syscalls
//! and rules that would let a `never_allow` syscall run are all errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use libseccomp::{ScmpArch, ScmpSyscall};
use serde::Deserialize;

use crate::consts;

/// The only schema string accepted in the `schema` field.
pub const SCHEMA: &str = "caffe-sandbox-seccomp-policy/1";

/// The worker policy as shipped in the repository (`policies/seccomp/worker.json`).
pub const WORKER_POLICY_JSON: &str = include_str!("../../../policies/seccomp/worker.json");
/// The `caffe-sandbox run -- CMD` policy (`policies/seccomp/run-tool.json`).
pub const RUN_TOOL_POLICY_JSON: &str = include_str!("../../../policies/seccomp/run-tool.json");

/// System calls whose rules must carry argument conditions: allowing them
/// unconditionally would defeat the policy (namespaces, executable memory,
/// terminal injection, signals to other processes, ...).
pub const REQUIRES_ARGS: &[&str] = &[
    "arch_prctl",
    "clone",
    "fcntl",
    "ioctl",
    "mmap",
    "mprotect",
    "personality",
    "pkey_mprotect",
    "prctl",
    "prlimit64",
    "seccomp",
    "socket",
    "tgkill",
];

/// Errno names a rule with `"action": "errno"` may return.
const ERRNOS: &[(&str, i32)] = &[
    ("EACCES", libc::EACCES),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("ENOSYS", libc::ENOSYS),
    ("EPERM", libc::EPERM),
];

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Allowed in every phase (kernel `SECCOMP_RET_ALLOW`).
    Allow,
    /// Allowed by the listener filter; the stacked inference-phase filter kills
    /// the process if it is used after load. For hot load-only syscalls where a
    /// notification round trip per call would cost too much.
    AllowLoad,
    /// Sent to the supervisor (`SECCOMP_RET_USER_NOTIF`); the monitor lets it
    /// continue while the supervisor holds the worker in [`Phase::Load`] and
    /// reports a violation afterwards. The decision uses only the supervisor's
    /// own state and register arguments, never user memory, so
    /// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` is safe here.
    ///
    /// [`Phase::Load`]: crate::Phase::Load
    PhaseGated,
    /// Sent to the supervisor; the first matching call continues, every later
    /// one is a violation (stage 2's single `execve` of the tool in `run-tool.json`).
    NotifyOnce,
    /// Fails with the rule's `errno` without running and without a report (e.g.
    /// `clone3` → `ENOSYS`, so glibc falls back to `clone`, whose flags are
    /// visible to BPF).
    Errno,
}

impl Action {
    /// Whether a syscall matched by this rule may actually run.
    pub fn may_run(self) -> bool {
        !matches!(self, Action::Errno)
    }
}

/// A number, a constant name, an OR of constant names, the complement of an OR
/// of names, or a variable like `"${worker_tgid}"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ValueFile {
    Num(u64),
    Name(String),
    Or(Vec<String>),
    Not(NotFile),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotFile {
    not: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpFile {
    Eq,
    MaskedEq,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgFile {
    arg: u8,
    op: OpFile,
    value: ValueFile,
    #[serde(default)]
    mask: Option<ValueFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    syscall: String,
    action: Action,
    #[serde(default)]
    args: Vec<ArgFile>,
    #[serde(default)]
    errno: Option<String>,
    why: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    schema: String,
    name: String,
    description: String,
    never_allow: Vec<String>,
    rules: Vec<RuleFile>,
}

/// Variables a policy may reference; their values are known only when the
/// supervisor compiles the filter for one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    /// `${worker_tgid}`: the worker's thread-group id as the worker itself sees
    /// it (1 when it is the init of its own pid namespace).
    WorkerTgid,
}

impl Var {
    fn parse(s: &str) -> Option<Var> {
        match s {
            "${worker_tgid}" => Some(Var::WorkerTgid),
            _ => None,
        }
    }
}

/// A comparison operand after constant resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operand {
    /// A literal number.
    Const(u64),
    /// A per-worker variable.
    Var(Var),
}

/// One argument condition: `(args[arg] & mask) == value` (for plain `eq` the
/// mask is all ones). Both comparisons are on the full 64-bit register, which
/// fails closed for 32-bit kernel arguments (high garbage bits never match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgCond {
    /// Argument index, 0..=5.
    pub arg: u8,
    /// `None` for `eq`, the mask for `masked_eq`.
    pub mask: Option<u64>,
    /// The value to compare with.
    pub value: Operand,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// System call name (x86_64).
    pub syscall: String,
    /// x86_64 system call number.
    pub nr: i32,
    /// What happens on a match.
    pub action: Action,
    /// For [`Action::Errno`]: the errno returned.
    pub errno: Option<i32>,
    /// All must hold (AND); at most one per argument.
    pub args: Vec<ArgCond>,
    /// The reviewed reason.
    pub why: String,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Short name (`worker`, `run-tool`).
    pub name: String,
    /// What the policy is for.
    pub description: String,
    /// System calls that no rule may let run (checked at load time).
    pub never_allow: Vec<String>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
}

/// Why a policy file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid JSON for the schema (including unknown fields).
    #[error("policy JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The file could not be read.
    #[error("policy file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON parsed but breaks a rule of the schema.
    #[error("policy {policy}: {msg}")]
    Invalid {
        /// Policy name (or `?` before it is known).
        policy: String,
        /// What is wrong.
        msg: String,
    },
    /// A variable used by the policy was not supplied when resolving it.
    #[error("policy {policy}: variable {var:?} needed but not supplied")]
    MissingVar {
        /// Policy name.
        policy: String,
        /// The variable.
        var: Var,
    },
}

/// Maps an x86_64 syscall name to its number; `None` if libseccomp does not
/// know it for x86_64 (names of other architectures resolve to negative
/// pseudo-numbers and are rejected too).
pub fn syscall_nr(name: &str) -> Option<i32> {
    let s = ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664).ok()?;
    let nr = s.as_raw_syscall();
    (nr >= 0).then_some(nr)
}

/// Maps an x86_64 syscall number to its name.
pub fn syscall_name(nr: i64) -> Option<String> {
    let nr = i32::try_from(nr).ok()?;
    if nr < 0 {
        return None;
    }
    ScmpSyscall::from_raw_syscall(nr)
        .get_name_by_arch(ScmpArch::X8664)
        .ok()
}

fn resolve_value(v: &ValueFile) -> Result<Operand, String> {
    let names = |list: &[String]| -> Result<u64, String> {
        if list.is_empty() {
            return Err("empty list of constant names".into());
        }
        let mut acc = 0u64;
        for n in list {
            acc |= consts::lookup(n).ok_or_else(|| format!("unknown constant {n:?}"))?;
        }
        Ok(acc)
    };
    match v {
        ValueFile::Num(n) => Ok(Operand::Const(*n)),
        ValueFile::Name(s) => {
            if let Some(var) = Var::parse(s) {
                Ok(Operand::Var(var))
            } else if let Some(hex) = s.strip_prefix("0x") {
                u64::from_str_radix(hex, 16)
                    .map(Operand::Const)
                    .map_err(|_| format!("bad hex number {s:?}"))
            } else {
                consts::lookup(s)
                    .map(Operand::Const)
                    .ok_or_else(|| format!("unknown constant {s:?}"))
            }
        }
        ValueFile::Or(list) => names(list).map(Operand::Const),
        ValueFile::Not(n) => names(&n.not).map(|x| Operand::Const(!x)),
    }
}

impl Policy {
    /// Parses and validates a policy from JSON text.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = serde_json::from_str(text)?;
        Self::validate(file)
    }

    /// Reads, parses and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The shipped worker policy.
    pub fn worker() -> Policy {
        Self::from_json(WORKER_POLICY_JSON)
            .expect("policies/seccomp/worker.json is validated by tests")
    }

    /// The shipped `run -- CMD` policy.
    pub fn run_tool() -> Policy {
        Self::from_json(RUN_TOOL_POLICY_JSON)
            .expect("policies/seccomp/run-tool.json is validated by tests")
    }

    fn validate(file: PolicyFile) -> Result<Policy, PolicyError> {
        let name = file.name.clone();
        let bad = |msg: String| PolicyError::Invalid {
            policy: name.clone(),
            msg,
        };
        if file.schema != SCHEMA {
            return Err(bad(format!(
                "schema must be {SCHEMA:?}, got {:?}",
                file.schema
            )));
        }
        if file.name.trim().is_empty() || file.description.trim().is_empty() {
            return Err(bad("name and description must not be empty".into()));
        }
        let mut never = BTreeSet::new();
        for n in &file.never_allow {
            if syscall_nr(n).is_none() {
                return Err(bad(format!("never_allow: unknown x86_64 syscall {n:?}")));
            }
            if !never.insert(n.as_str()) {
                return Err(bad(format!("never_allow: duplicate {n:?}")));
            }
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, r) in file.rules.iter().enumerate() {
            let at = |m: String| bad(format!("rule {i} ({}): {m}", r.syscall));
            let nr = syscall_nr(&r.syscall).ok_or_else(|| at("unknown x86_64 syscall".into()))?;
            if r.why.trim().len() < 8 {
                return Err(at("`why` must explain the rule".into()));
            }
            let errno = match (r.action, &r.errno) {
                (Action::Errno, Some(e)) => Some(
                    ERRNOS
                        .iter()
                        .find(|(n, _)| n == e)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| at(format!("unsupported errno {e:?}")))?,
                ),
                (Action::Errno, None) => return Err(at("action errno needs `errno`".into())),
                (_, Some(_)) => return Err(at("`errno` only with action errno".into())),
                (_, None) => None,
            };
            if r.action.may_run() && never.contains(r.syscall.as_str()) {
                return Err(at(format!(
                    "{:?} would let a never_allow syscall run",
                    r.action
                )));
            }
            if r.args.is_empty()
                && REQUIRES_ARGS.contains(&r.syscall.as_str())
                && r.action.may_run()
            {
                return Err(at(
                    "this syscall may only be allowed with argument conditions".into(),
                ));
            }
            let mut args = Vec::with_capacity(r.args.len());
            let mut seen = BTreeSet::new();
            for a in &r.args {
                if a.arg > 5 {
                    return Err(at(format!("arg index {} out of range 0..=5", a.arg)));
                }
                if !seen.insert(a.arg) {
                    return Err(at(format!("two conditions on arg {}", a.arg)));
                }
                let value = resolve_value(&a.value).map_err(&at)?;
                let mask = match (a.op, &a.mask) {
                    (OpFile::Eq, None) => None,
                    (OpFile::Eq, Some(_)) => return Err(at("`mask` only with masked_eq".into())),
                    (OpFile::MaskedEq, None) => return Err(at("masked_eq needs `mask`".into())),
                    (OpFile::MaskedEq, Some(m)) => match resolve_value(m).map_err(&at)? {
                        Operand::Const(m) => Some(m),
                        Operand::Var(_) => return Err(at("a mask cannot be a variable".into())),
                    },
                };
                if let (Some(m), Operand::Const(v)) = (mask, value) {
                    if v & !m != 0 {
                        return Err(at(format!(
                            "value {v:#x} has bits outside mask {m:#x}: never matches"
                        )));
                    }
                }
                args.push(ArgCond {
                    arg: a.arg,
                    mask,
                    value,
                });
            }
            args.sort();
            rules.push(Rule {
                syscall: r.syscall.clone(),
                nr,
                action: r.action,
                errno,
                args,
                why: r.why.trim().to_string(),
            });
        }
        // Per-syscall consistency: no duplicates, no ambiguous overlaps.
        let mut by_sys: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
        for r in &rules {
            by_sys.entry(r.syscall.as_str()).or_default().push(r);
        }
        for (sys, rs) in &by_sys {
            let load_only = rs.iter().filter(|r| r.action == Action::AllowLoad).count();
            if load_only != 0 && load_only != rs.len() {
                return Err(bad(format!(
                    "{sys}: allow_load cannot be mixed with other actions for one syscall"
                )));
            }
            for (i, a) in rs.iter().enumerate() {
                for b in &rs[i + 1..] {
                    if a.args == b.args {
                        return Err(bad(format!(
                            "{sys}: duplicate rule (same argument conditions)"
                        )));
                    }
                    if a.action != b.action && !provably_disjoint(a, b) {
                        return Err(bad(format!(
                            "{sys}: rules with different actions ({:?}, {:?}) must be provably disjoint \
                             (same arg and mask, different value)",
                            a.action, b.action
                        )));
                    }
                }
            }
        }
        Ok(Policy {
            name: file.name,
            description: file.description,
            never_allow: file.never_allow,
            rules,
        })
    }

    /// Names of syscalls that some rule lets run in some phase (allow,
    /// allow_load, phase_gated, notify_once), sorted.
    pub fn runnable_syscalls(&self) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter(|r| r.action.may_run())
            .map(|r| r.syscall.as_str())
            .collect()
    }

    /// Names of syscalls with a rule of exactly this action, sorted.
    pub fn syscalls_with(&self, action: Action) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter(|r| r.action == action)
            .map(|r| r.syscall.as_str())
            .collect()
    }

    /// Variables the policy references.
    pub fn vars(&self) -> BTreeSet<Var> {
        self.rules
            .iter()
            .flat_map(|r| r.args.iter())
            .filter_map(|a| match a.value {
                Operand::Var(v) => Some(v),
                Operand::Const(_) => None,
            })
            .collect()
    }

    /// Substitutes variables, producing the form that is compiled and evaluated.
    pub fn resolve(&self, vars: &Vars) -> Result<ResolvedPolicy, PolicyError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (index, r) in self.rules.iter().enumerate() {
            let mut conds = Vec::with_capacity(r.args.len());
            for a in &r.args {
                let value = match a.value {
                    Operand::Const(v) => v,
                    Operand::Var(Var::WorkerTgid) => {
                        u64::from(vars.worker_tgid.ok_or_else(|| PolicyError::MissingVar {
                            policy: self.name.clone(),
                            var: Var::WorkerTgid,
                        })?)
                    }
                };
                conds.push(Cond {
                    arg: a.arg,
                    mask: a.mask,
                    value,
                });
            }
            rules.push(ResolvedRule {
                index,
                nr: r.nr,
                action: r.action,
                errno: r.errno,
                conds,
            });
        }
        Ok(ResolvedPolicy {
            name: self.name.clone(),
            rules,
        })
    }
}

fn provably_disjoint(a: &Rule, b: &Rule) -> bool {
    a.args.iter().any(|x| {
        b.args.iter().any(|y| {
            x.arg == y.arg
                && x.mask == y.mask
                && matches!((x.value, y.value), (Operand::Const(p), Operand::Const(q)) if p != q)
        })
    })
}

/// Values for the policy's variables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vars {
    /// See [`Var::WorkerTgid`].
    pub worker_tgid: Option<u32>,
}

/// A resolved condition: `(args[arg] & mask.unwrap_or(!0)) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index.
    pub arg: u8,
    /// Mask for `masked_eq`, `None` for `eq`.
    pub mask: Option<u64>,
    /// Value.
    pub value: u64,
}

impl Cond {
    /// Evaluates the condition on raw syscall arguments.
    pub fn holds(&self, args: &[u64; 6]) -> bool {
        let a = args[usize::from(self.arg)];
        match self.mask {
            Some(m) => a & m == self.value,
            None => a == self.value,
        }
    }
}

/// A rule with numbers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    /// Index into [`Policy::rules`].
    pub index: usize,
    /// Syscall number.
    pub nr: i32,
    /// Action.
    pub action: Action,
    /// Errno for [`Action::Errno`].
    pub errno: Option<i32>,
    /// Conditions (AND).
    pub conds: Vec<Cond>,
}

/// A policy with variables substituted: what gets compiled to BPF and what the
/// monitor evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPolicy {
    /// Policy name.
    pub name: String,
    /// Rules in file order.
    pub rules: Vec<ResolvedRule>,
}

/// The evaluator's decision for one x86_64 system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by an `allow` rule.
    Allow,
    /// Allowed by an `allow_load` rule.
    AllowLoad,
    /// Fails with this errno.
    Errno(i32),
    /// Matches a `phase_gated` rule (index into `Policy::rules`).
    PhaseGated(usize),
    /// Matches a `notify_once` rule (index into `Policy::rules`).
    NotifyOnce(usize),
    /// No rule matches: a violation.
    Deny,
}

impl ResolvedPolicy {
    /// Evaluates the policy exactly as the compiled listener filter does (same
    /// 64-bit comparisons). Rules of one syscall with different actions are
    /// disjoint by validation, so at most one action can match.
    pub fn classify(&self, nr: i64, args: &[u64; 6]) -> Verdict {
        let hit = self
            .rules
            .iter()
            .find(|r| i64::from(r.nr) == nr && r.conds.iter().all(|c| c.holds(args)));
        match hit {
            None => Verdict::Deny,
            Some(r) => match r.action {
                Action::Allow => Verdict::Allow,
                Action::AllowLoad => Verdict::AllowLoad,
                Action::Errno => Verdict::Errno(r.errno.unwrap_or(libc::ENOSYS)),
                Action::PhaseGated => Verdict::PhaseGated(r.index),
                Action::NotifyOnce => Verdict::NotifyOnce(r.index),
            },
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Action::Allow => "allow",
            Action::AllowLoad => "allow_load",
            Action::PhaseGated => "phase_gated",
            Action::NotifyOnce => "notify_once",
            Action::Errno => "errno",
        };
        f.write_str(s)
    }
}
