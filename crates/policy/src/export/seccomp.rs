//! The static seccomp profile ("envelope") that container runtimes apply before they execve the workload,
//! in the Docker/Podman/containerd JSON format and the OCI runtime-spec `linux.seccomp` format.
//!
//! A container runtime installs its profile *before* `execve`, so the profile must cover everything the
//! process does from its first instruction: the dynamic loader, library initialisation and, for the worker,
//! the installation of its own filters. The envelope is therefore the union of
//! * `policies/seccomp/worker-startup.json` (worker policies only: what the worker does before its own filter
//!   is in place, profiled with strace), and
//! * the rules of the policy's seccomp file that a static profile can express.
//!
//! What cannot be expressed degrades **closed** (the rule is dropped, so the default action kills the
//! process), and every degradation is listed in [`Envelope::notes`]:
//! * `phase_gated` and `allow_load` (phases are supervisor state a static filter does not have): dropped;
//!   the startup set re-admits, with their own reviewed reasons, the few calls start-up needs;
//! * the default action `user notification → violation report` becomes `SCMP_ACT_KILL_PROCESS`: the
//!   syscall name is not reported (SIGSYS only);
//! * `notify_once` (run-tool's single `execve`) cannot count: the runtime's own exec of the tool needs it,
//!   so it is exported as allow and noted as the one place the envelope is weaker than the native policy.
//!
//! The worker still installs its own two-phase filter inside the container (it is handed the compiled
//! program exactly as in the native tier), so under the OCI tier the phases and the by-name violation
//! reports of the native policy remain in force for every syscall the envelope lets through.

use std::collections::BTreeMap;

use caffe_sandbox_seccomp::{Action, Policy, Vars};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{Kind, SandboxPolicy};

/// `policies/seccomp/worker-startup.json`.
pub const WORKER_STARTUP_JSON: &str =
    include_str!("../../../../policies/seccomp/worker-startup.json");

/// The worker is pid 1 of its container's pid namespace (the policy's `${worker_tgid}`).
pub const CONTAINER_TGID: u32 = 1;

/// Argument conditions `(arg, mask, value)`: `(args[arg] & mask) == value`; mask `None` means equality.
pub type ArgConds = Vec<(u8, Option<u64>, u64)>;

/// One exported rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvRule {
    /// Syscall name.
    pub syscall: String,
    /// `None`: allow; `Some(errno)`: fail with errno.
    pub errno: Option<i32>,
    /// Argument conditions (AND).
    pub args: ArgConds,
    /// Where it came from and why.
    pub comment: String,
}

/// A rule that could not be exported as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Syscall (or `*` for the default action).
    pub syscall: String,
    /// The native action.
    pub native: String,
    /// What the export does instead.
    pub exported: String,
    /// Why.
    pub why: String,
}

/// The static profile.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Rules, sorted by syscall, deduplicated.
    pub rules: Vec<EnvRule>,
    /// Degradations.
    pub notes: Vec<Note>,
}

/// Builds the envelope for a policy.
pub fn envelope(policy: &SandboxPolicy) -> Result<Envelope, String> {
    let vars = Vars {
        worker_tgid: Some(CONTAINER_TGID),
    };
    let mut rules: Vec<EnvRule> = Vec::new();
    let mut notes = vec![Note {
        syscall: "*".into(),
        native: "user notification: the supervisor names the syscall, kills the worker and reports a violation".into(),
        exported: "SCMP_ACT_KILL_PROCESS (SIGSYS; the syscall name is not reported)".into(),
        why: "a static profile has no listener (OCI listenerPath would need the runtime to hand it to a monitor \
              that also knows the start-up phase); killing is the fail-closed equivalent"
            .into(),
    }];
    let mut sources: Vec<(&str, Policy)> = Vec::new();
    if policy.file.kind == Kind::Worker {
        let startup = Policy::from_json(WORKER_STARTUP_JSON)
            .map_err(|e| format!("worker-startup.json: {e}"))?;
        sources.push(("worker start-up", startup));
    }
    sources.push(("policy", policy.seccomp.clone()));
    for (src, pol) in &sources {
        let resolved = pol.resolve(&vars).map_err(|e| e.to_string())?;
        for (rr, r) in resolved.rules.iter().zip(&pol.rules) {
            let args: ArgConds = rr.conds.iter().map(|c| (c.arg, c.mask, c.value)).collect();
            let comment = format!("{src} ({}): {}", pol.name, r.why);
            match r.action {
                Action::Allow => rules.push(EnvRule {
                    syscall: r.syscall.clone(),
                    errno: None,
                    args,
                    comment,
                }),
                Action::Errno => rules.push(EnvRule {
                    syscall: r.syscall.clone(),
                    errno: r.errno,
                    args,
                    comment,
                }),
                Action::AllowLoad | Action::PhaseGated => notes.push(Note {
                    syscall: r.syscall.clone(),
                    native: r.action.to_string(),
                    exported:
                        "dropped (killed by the default action) unless the start-up set admits it"
                            .into(),
                    why: "phases are supervisor state; a static filter cannot follow them".into(),
                }),
                Action::NotifyOnce => {
                    rules.push(EnvRule {
                        syscall: r.syscall.clone(),
                        errno: None,
                        args,
                        comment: format!(
                            "{comment} [exported as allow: a static profile cannot count]"
                        ),
                    });
                    notes.push(Note {
                        syscall: r.syscall.clone(),
                        native: "notify_once".into(),
                        exported: "allow (every call)".into(),
                        why: "the runtime itself execs the tool under the profile; a static filter cannot let \
                              exactly one call through. The only place the envelope is weaker than the native \
                              policy; use the native tier to keep the count"
                            .into(),
                    });
                }
            }
        }
    }
    // Deduplicate identical (syscall, action, args); on conflicting actions for identical arguments keep the
    // failing one (fail closed).
    let mut by_key: BTreeMap<(String, ArgConds), EnvRule> = BTreeMap::new();
    for r in rules {
        let key = (r.syscall.clone(), r.args.clone());
        match by_key.get(&key) {
            None => {
                by_key.insert(key, r);
            }
            Some(old) if old.errno == r.errno => {}
            Some(old) => {
                let (keep, drop) = if old.errno.is_some() {
                    (old.clone(), r)
                } else {
                    (r, old.clone())
                };
                notes.push(Note {
                    syscall: keep.syscall.clone(),
                    native: "allow and errno with the same arguments (start-up vs policy)".into(),
                    exported: format!("errno {}", keep.errno.unwrap_or(0)),
                    why: format!("conflict resolved closed; dropped: {}", drop.comment),
                });
                by_key.insert(key, keep);
            }
        }
    }
    // An errno rule and an allow rule for one syscall with *overlapping* but different conditions would make
    // libseccomp pick by its own precedence; refuse instead of guessing.
    let rules: Vec<EnvRule> = by_key.into_values().collect();
    for a in &rules {
        for b in &rules {
            if a.syscall == b.syscall && a.errno != b.errno && !disjoint(&a.args, &b.args) {
                return Err(format!(
                    "{}: allow and errno rules overlap with different conditions; the export cannot order them",
                    a.syscall
                ));
            }
        }
    }
    // Say precisely what happened to each phase-gated/load-only syscall.
    for n in notes
        .iter_mut()
        .filter(|n| n.native == "phase_gated" || n.native == "allow_load")
    {
        let readmitted: Vec<&EnvRule> = rules.iter().filter(|r| r.syscall == n.syscall).collect();
        n.exported = if readmitted.is_empty() {
            "dropped: killed by the default action in every phase".into()
        } else {
            format!(
                "allowed in every phase only with the start-up set's conditions ({} rule(s)); the worker's own \
                 stacked filter still gates it by phase",
                readmitted.len()
            )
        };
    }
    Ok(Envelope { rules, notes })
}

fn disjoint(a: &[(u8, Option<u64>, u64)], b: &[(u8, Option<u64>, u64)]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| x.0 == y.0 && x.1 == y.1 && x.2 != y.2))
}

fn args_json(args: &[(u8, Option<u64>, u64)]) -> Vec<Value> {
    args.iter()
        .map(|&(i, mask, v)| match mask {
            // Docker/OCI/libseccomp: for SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the datum.
            Some(m) => json!({ "index": i, "value": m, "valueTwo": v, "op": "SCMP_CMP_MASKED_EQ" }),
            None => json!({ "index": i, "value": v, "op": "SCMP_CMP_EQ" }),
        })
        .collect()
}

fn syscall_entries(env: &Envelope, with_comment: bool) -> Vec<Value> {
    // One entry per (action, args) group, names sorted: allow-without-args rules share an entry.
    type Names = (Vec<String>, Vec<String>);
    let mut grouped: BTreeMap<(Option<i32>, ArgConds), Names> = BTreeMap::new();
    for r in &env.rules {
        let e = grouped.entry((r.errno, r.args.clone())).or_default();
        e.0.push(r.syscall.clone());
        e.1.push(format!("{}: {}", r.syscall, r.comment));
    }
    grouped
        .into_iter()
        .map(|((errno, args), (mut names, comments))| {
            names.sort();
            names.dedup();
            let mut o = serde_json::Map::new();
            o.insert("names".into(), json!(names));
            match errno {
                None => {
                    o.insert("action".into(), json!("SCMP_ACT_ALLOW"));
                }
                Some(e) => {
                    o.insert("action".into(), json!("SCMP_ACT_ERRNO"));
                    o.insert("errnoRet".into(), json!(e));
                }
            }
            if !args.is_empty() {
                o.insert("args".into(), json!(args_json(&args)));
            }
            if with_comment {
                o.insert("comment".into(), json!(comments.join(" | ")));
            }
            Value::Object(o)
        })
        .collect()
}

/// Docker / Podman / containerd / CRI-O (Kubernetes `Localhost`) profile.
pub fn docker_profile(env: &Envelope) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscall_entries(env, true),
    })
}

/// OCI runtime-spec `linux.seccomp`.
pub fn oci_seccomp(env: &Envelope) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscall_entries(env, false),
    })
}
