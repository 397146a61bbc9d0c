//! Profiles split into the worker's two phases (load, inference), merged over several runs, compared with a
//! policy phase by phase, and turned into a minimal policy.
//!
//! The split point is a fact the supervisor knows: the moment the worker's `Loaded` reply arrived, which is also
//! when the supervisor flips its seccomp monitor to [`crate::Phase::Inference`]. With `strace -ttt` (seconds since
//! the epoch, the same clock as the supervisor's `SystemTime`) every traced line falls on one side of it
//! ([`crate::profile::split_strace_at`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::consts;
use crate::policy::{Policy, PolicyError, ResolvedPolicy, Vars, Verdict, REQUIRES_ARGS, SCHEMA};
use crate::profile::{describe, profile_from_strace, split_strace_at, symbolic, ProfiledSyscalls};

/// Syscalls a profiling run cannot observe but the worker needs, with the reason; the minimal policy carries the
/// reference policy's rules for them over (only those; never more than the reference allows):
/// * the worker's own code outside the traced window: the profiling run has no filter to install, and strace
///   attaches only after `Hello`, whose `worker_pid_in_ns` comes from `getpid`;
/// * failure reporting: a successful run never shows how a failure is reported (glog writes the CHECK message to
///   stderr, `abort`/`raise` signal the worker itself). Without these a failing model would be reported as a
///   seccomp violation of `write` or `tgkill` instead of what it is (the worker dies either way).
pub const CARRIED_OVER: &[(&str, &str)] = &[
    (
        "seccomp",
        "the worker installs its own filters (a profiling run has none)",
    ),
    (
        "getpid",
        "Hello's worker_pid_in_ns, sent before tracing starts; abort/raise",
    ),
    (
        "write",
        "failure reports: glog writes CHECK messages to stderr",
    ),
    (
        "writev",
        "failure reports: glog writes CHECK messages to stderr",
    ),
    ("gettid", "failure reports: raise"),
    (
        "tgkill",
        "failure reports: abort/raise signal the worker itself",
    ),
    (
        "kill",
        "failure reports: glog's failure handler re-raises with kill(getpid())",
    ),
    (
        "rt_sigaction",
        "failure reports: abort resets the SIGABRT handler",
    ),
    ("rt_sigprocmask", "failure reports: abort unblocks SIGABRT"),
    ("exit_group", "the worker's exit"),
];

/// A profile split at the load/inference boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhasedProfile {
    /// From the start of tracing until the supervisor received `Loaded`.
    pub load: ProfiledSyscalls,
    /// After `Loaded`: requests and shutdown.
    pub inference: ProfiledSyscalls,
    /// How many runs were merged.
    pub runs: u32,
}

/// One syscall's line in the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallRow {
    /// Name.
    pub syscall: String,
    /// Calls during load (all runs).
    pub load: u64,
    /// Calls during inference (all runs).
    pub inference: u64,
    /// The actions of the policy's rules for it (`-`: no rule, a violation).
    pub policy: String,
}

/// A phased profile compared with a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhasedDiff {
    /// Name of the policy compared with.
    pub policy: String,
    /// Runs merged.
    pub runs: u32,
    /// Every observed syscall.
    pub rows: Vec<SyscallRow>,
    /// Observed syscalls without any rule (they would be violations).
    pub missing: Vec<String>,
    /// Observed argument values the policy denies.
    pub denied_args: Vec<String>,
    /// Used during inference but allowed only while loading (would be violations after `Loaded`).
    pub load_only_used_in_inference: Vec<String>,
    /// Allowed by the policy but never observed.
    pub unused: Vec<String>,
    /// Executable mappings seen (any phase).
    pub exec_mappings: u64,
    /// ... of which anonymous.
    pub anonymous_exec_mappings: u64,
    /// Files touched: (phase, path, how).
    pub files: Vec<(String, String, String)>,
}

impl PhasedDiff {
    /// Whether the profile runs under the policy as far as the trace can tell.
    pub fn clean(&self) -> bool {
        self.missing.is_empty()
            && self.denied_args.is_empty()
            && self.load_only_used_in_inference.is_empty()
            && self.anonymous_exec_mappings == 0
    }

    /// A readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "profile ({} run{}) compared with seccomp policy '{}'\n\n",
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.policy
        );
        s.push_str(&format!(
            "  {:<20} {:>10} {:>10}  {}\n",
            "syscall", "load", "inference", "policy"
        ));
        for r in &self.rows {
            let n = |x: u64| {
                if x == 0 {
                    "-".to_string()
                } else {
                    x.to_string()
                }
            };
            let mark = if r.policy == "-" { "  <- MISSING" } else { "" };
            s.push_str(&format!(
                "  {:<20} {:>10} {:>10}  {}{mark}\n",
                r.syscall,
                n(r.load),
                n(r.inference),
                r.policy
            ));
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join("\n    ")
            }
        };
        s.push_str(&format!(
            "\nmissing from the policy (would be violations):\n    {}\n",
            list(&self.missing)
        ));
        s.push_str(&format!(
            "observed arguments the policy denies:\n    {}\n",
            list(&self.denied_args)
        ));
        s.push_str(&format!(
            "allowed only while loading, but used during inference:\n    {}\n",
            list(&self.load_only_used_in_inference)
        ));
        s.push_str(&format!(
            "allowed by the policy, never used:\n    {}\n",
            if self.unused.is_empty() {
                "-".to_string()
            } else {
                self.unused.join(" ")
            }
        ));
        s.push_str(&format!(
            "executable mappings: {} ({} anonymous)\n",
            self.exec_mappings, self.anonymous_exec_mappings
        ));
        s.push_str("files touched:\n");
        if self.files.is_empty() {
            s.push_str("    -\n");
        }
        for (phase, path, how) in &self.files {
            s.push_str(&format!("    {phase:<9} {path}  ({how})\n"));
        }
        s
    }
}

/// Evaluates one observed argument set; `Err` when a value is unknown to the constant table.
fn eval_set(policy: &ResolvedPolicy, name: &str, set: &[(u8, String)]) -> Result<Verdict, String> {
    let nr = crate::policy::syscall_nr(name).ok_or_else(|| format!("{name}: unknown syscall"))?;
    let mut args = [0u64; 6];
    for (i, v) in set {
        args[usize::from(*i)] = symbolic(v).ok_or_else(|| {
            format!(
                "{name}({}): a value unknown to the constant table, check by hand",
                describe(set)
            )
        })?;
    }
    Ok(policy.classify(i64::from(nr), &args))
}

impl PhasedProfile {
    /// Parses one run's `strace -f -qq -ttt` output, split at `boundary` (seconds since the epoch).
    pub fn from_strace(text: &str, boundary: f64) -> PhasedProfile {
        let (load, inference) = split_strace_at(text, boundary);
        PhasedProfile {
            load: profile_from_strace(&load),
            inference: profile_from_strace(&inference),
            runs: 1,
        }
    }

    /// Adds another run.
    pub fn merge(&mut self, other: &PhasedProfile) {
        self.load.merge(&other.load);
        self.inference.merge(&other.inference);
        self.runs += other.runs;
    }

    /// Both phases together.
    pub fn total(&self) -> ProfiledSyscalls {
        let mut t = self.load.clone();
        t.merge(&self.inference);
        t
    }

    /// Compares the profile with `policy`, phase by phase.
    pub fn diff(&self, policy: &Policy) -> Result<PhasedDiff, PolicyError> {
        let resolved = policy.resolve(&Vars {
            worker_tgid: Some(1),
        })?;
        let total = self.total();
        let mut d = PhasedDiff {
            policy: policy.name.clone(),
            runs: self.runs,
            exec_mappings: total.exec_mappings,
            anonymous_exec_mappings: total.anonymous_exec_mappings,
            ..PhasedDiff::default()
        };
        let actions = |sys: &str| -> String {
            let a: BTreeSet<String> = policy
                .rules
                .iter()
                .filter(|r| r.syscall == sys)
                .map(|r| r.action.to_string())
                .collect();
            if a.is_empty() {
                "-".into()
            } else {
                a.into_iter().collect::<Vec<_>>().join(",")
            }
        };
        for (sys, n) in &total.counts {
            let load = self.load.counts.get(sys).copied().unwrap_or(0);
            let inference = self.inference.counts.get(sys).copied().unwrap_or(0);
            let policy_actions = actions(sys);
            if policy_actions == "-" {
                let phases = match (load > 0, inference > 0) {
                    (true, true) => "load+inference",
                    (true, false) => "load",
                    _ => "inference",
                };
                d.missing.push(format!("{sys} ({n} calls; {phases})"));
            }
            d.rows.push(SyscallRow {
                syscall: sys.clone(),
                load,
                inference,
                policy: policy_actions,
            });
        }
        for (phase, p) in [("load", &self.load), ("inference", &self.inference)] {
            for sys in p.counts.keys() {
                let rules: Vec<_> = policy.rules.iter().filter(|r| &r.syscall == sys).collect();
                if rules.is_empty() {
                    continue; // listed as missing
                }
                let sets: Vec<&Vec<(u8, String)>> = p
                    .arg_sets
                    .iter()
                    .filter(|(n, _)| n == sys)
                    .map(|(_, s)| s)
                    .collect();
                let verdicts: Vec<(String, Result<Verdict, String>)> = if !sets.is_empty() {
                    sets.iter()
                        .map(|s| {
                            (
                                format!("{sys}({})", describe(s)),
                                eval_set(&resolved, sys, s),
                            )
                        })
                        .collect()
                } else if rules.iter().all(|r| r.args.is_empty()) {
                    vec![(sys.clone(), eval_set(&resolved, sys, &[]))]
                } else {
                    // Argument conditions the trace records no facts for (kill/tgkill pid, prlimit64, seccomp):
                    // only the action can be checked.
                    let runnable_in_inference = rules.iter().any(|r| {
                        matches!(r.action, crate::policy::Action::Allow)
                            || matches!(r.action, crate::policy::Action::NotifyOnce)
                    });
                    if phase == "inference" && !runnable_in_inference {
                        d.load_only_used_in_inference
                            .push(format!("{sys} ({} calls)", p.counts[sys]));
                    }
                    continue;
                };
                for (what, v) in verdicts {
                    match v {
                        Err(e) => d.denied_args.push(format!("{phase}: {e}")),
                        Ok(Verdict::Deny) => d
                            .denied_args
                            .push(format!("{phase}: {what} observed, no rule admits it")),
                        Ok(Verdict::PhaseGated(_)) | Ok(Verdict::AllowLoad)
                            if phase == "inference" =>
                        {
                            d.load_only_used_in_inference.push(what)
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        d.denied_args.sort();
        d.denied_args.dedup();
        d.load_only_used_in_inference.sort();
        d.load_only_used_in_inference.dedup();
        let observed = total.syscalls();
        d.unused = policy
            .runnable_syscalls()
            .into_iter()
            .filter(|s| !observed.contains(s))
            .map(String::from)
            .collect();
        let mut files: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (phase, p) in [("load", &self.load), ("inference", &self.inference)] {
            for (path, how) in &p.files {
                files
                    .entry((phase.to_string(), path.clone()))
                    .or_default()
                    .extend(how.iter().cloned());
            }
        }
        d.files = files
            .into_iter()
            .map(|((ph, path), how)| (ph, path, how.into_iter().collect::<Vec<_>>().join(", ")))
            .collect();
        Ok(d)
    }

    /// A minimal policy for what the profile shows, built from `reference_json` (the reviewed policy, normally
    /// `policies/seccomp/worker.json`):
    /// * an observed syscall the reference has rules for keeps those rules verbatim (conditions and `why`), minus
    ///   argument alternatives no observed call matched;
    /// * an observed syscall the reference lacks gets a drafted rule (`phase_gated` when it was seen only while
    ///   loading, else `allow`; argument-critical ones with conditions from the observed values) whose `why`
    ///   asks for review; one that cannot be drafted is left out and named in the description;
    /// * never-allowed syscalls stay out (they remain violations), the reference's `never_allow` list is kept;
    /// * [`CARRIED_OVER`] rules are carried over.
    ///
    /// The result is validated before it is returned.
    pub fn minimal_policy_json(
        &self,
        name: &str,
        reference_json: &str,
    ) -> Result<String, PolicyError> {
        let reference = Policy::from_json(reference_json)?;
        let raw: Value = serde_json::from_str(reference_json)?;
        let raw_rules: Vec<Value> = raw["rules"].as_array().cloned().unwrap_or_default();
        let total = self.total();
        let mut notes: Vec<String> = Vec::new();
        let mut syscalls: BTreeSet<String> = total.counts.keys().cloned().collect();
        let mut carried = Vec::new();
        for (s, why) in CARRIED_OVER {
            if raw_rules.iter().any(|r| r["syscall"] == *s) && syscalls.insert(s.to_string()) {
                carried.push(format!("{s} ({why})"));
            }
        }
        if !carried.is_empty() {
            notes.push(format!(
                "carried over from '{}' although not observed: {}",
                reference.name,
                carried.join(", ")
            ));
        }
        let mut rules: Vec<Value> = Vec::new();
        let mut drafted = Vec::new();
        for sys in &syscalls {
            if reference.never_allow.contains(sys) {
                notes.push(format!(
                    "{sys}: observed but never allowed: left out (stays a violation)"
                ));
                continue;
            }
            let refs: Vec<&Value> = raw_rules.iter().filter(|r| r["syscall"] == **sys).collect();
            if !refs.is_empty() {
                let sets: Vec<&Vec<(u8, String)>> = total
                    .arg_sets
                    .iter()
                    .filter(|(n, _)| n == sys)
                    .map(|(_, s)| s)
                    .collect();
                let mut kept = Vec::new();
                for r in refs {
                    let conditioned = r["args"].as_array().is_some_and(|a| !a.is_empty());
                    if !conditioned || sets.is_empty() {
                        kept.push(r.clone());
                        continue;
                    }
                    let one = json!({ "schema": SCHEMA, "name": "one-rule", "description": "one rule",
                                      "never_allow": [], "rules": [r] });
                    let one = Policy::from_json(&one.to_string())?.resolve(&Vars {
                        worker_tgid: Some(1),
                    })?;
                    if sets
                        .iter()
                        .any(|s| matches!(eval_set(&one, sys, s), Ok(v) if v != Verdict::Deny))
                    {
                        kept.push(r.clone());
                    }
                }
                if !kept.is_empty() {
                    rules.extend(kept);
                    continue;
                }
                notes.push(format!(
                    "{sys}: observed arguments outside every rule of '{}': drafted",
                    reference.name
                ));
            }
            let only_load = !self.inference.counts.contains_key(sys);
            let action = if only_load { "phase_gated" } else { "allow" };
            let n = total.counts.get(sys).copied().unwrap_or(0);
            let why = format!(
                "observed {n} calls in {} profiling run(s), {}; TODO: review and say which library needs it",
                self.runs,
                if only_load { "during load only" } else { "during inference" }
            );
            match draft_rules(sys, action, &why, &total) {
                Some(v) if !v.is_empty() => {
                    drafted.push(sys.clone());
                    rules.extend(v);
                }
                _ => notes.push(format!(
                    "{sys}: observed, needs hand-written argument conditions: left out"
                )),
            }
        }
        let mut description = format!(
            "Minimal policy from {} profiling run(s) of caffe-sandbox profile, derived from '{}'.",
            self.runs, reference.name
        );
        if !drafted.is_empty() {
            description.push_str(&format!(
                " Drafted (review before use): {}.",
                drafted.join(" ")
            ));
        }
        if !notes.is_empty() {
            description.push_str(&format!(" Notes: {}.", notes.join("; ")));
        }
        let out = json!({
            "schema": SCHEMA,
            "name": name,
            "description": description,
            "never_allow": reference.never_allow,
            "rules": rules,
        });
        let text = serde_json::to_string_pretty(&out)? + "\n";
        Policy::from_json(&text)?;
        Ok(text)
    }
}

/// Drafted rules for a syscall the reference policy lacks; `None` when its arguments need a human.
fn draft_rules(sys: &str, action: &str, why: &str, p: &ProfiledSyscalls) -> Option<Vec<Value>> {
    let rule = |args: Value| json!({ "syscall": sys, "action": action, "args": args, "why": why });
    if sys == "clone3" {
        return Some(vec![
            json!({ "syscall": "clone3", "action": "errno", "errno": "ENOSYS", "why": why }),
        ]);
    }
    if !REQUIRES_ARGS.contains(&sys) {
        return Some(vec![rule(json!([]))]);
    }
    let per_value = |idx: u8, key: &str| -> Vec<Value> {
        p.facts
            .get(key)
            .into_iter()
            .flatten()
            .filter(|v| consts::lookup(v).is_some())
            .map(|v| rule(json!([{ "arg": idx, "op": "eq", "value": v }])))
            .collect()
    };
    Some(match sys {
        "mmap" | "mprotect" => vec![rule(
            json!([{ "arg": 2, "op": "masked_eq", "mask": "PROT_EXEC", "value": 0 }]),
        )],
        "clone" => vec![rule(json!([{ "arg": 0, "op": "masked_eq",
            "mask": { "not": ["CLONE_SETTLS", "CLONE_PARENT_SETTID", "CLONE_CHILD_CLEARTID"] },
            "value": ["CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_SIGHAND", "CLONE_THREAD", "CLONE_SYSVSEM"] }]))],
        "tgkill" => vec![rule(
            json!([{ "arg": 0, "op": "eq", "value": "${worker_tgid}" }]),
        )],
        "prlimit64" => vec![rule(json!([{ "arg": 0, "op": "eq", "value": 0 },
                                         { "arg": 2, "op": "eq", "value": 0 }]))],
        "ioctl" => per_value(1, "ioctl.request"),
        "fcntl" => per_value(1, "fcntl.cmd"),
        "prctl" | "arch_prctl" => per_value(0, &format!("{sys}.arg0")),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::WORKER_POLICY_JSON;

    // Pid prefix + -ttt timestamps, as `strace -f -qq -ttt -p PID` writes them.
    const RUN: &str = r#"4242 1733300000.100000 openat(AT_FDCWD, "/etc/localtime", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
4242 1733300000.200000 memfd_create("tensor", MFD_CLOEXEC|MFD_ALLOW_SEALING|MFD_NOEXEC_SEAL) = 5
4243 1733300000.300000 fcntl(5, F_ADD_SEALS, F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_WRITE) = 0
4242 1733300000.400000 ioctl(2, TCGETS, 0x7ffd) = -1 ENOTTY (Inappropriate ioctl for device)
4242 1733300000.500000 recvmsg(3, {msg_name=NULL}, MSG_CMSG_CLOEXEC <unfinished ...>
4243 1733300001.100000 sched_yield() = 0
4242 1733300001.200000 <... recvmsg resumed>) = 40
4242 1733300001.300000 sched_yield() = 0
4242 1733300001.400000 mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f00
4242 1733300001.500000 fcntl(5, F_GET_SEALS) = 15
4242 1733300001.600000 exit_group(0) = ?
"#;

    #[test]
    fn splits_at_the_boundary_and_records_files() {
        let p = PhasedProfile::from_strace(RUN, 1733300001.0);
        assert_eq!(p.load.counts.get("openat"), Some(&1));
        assert_eq!(p.load.counts.get("recvmsg"), Some(&1));
        assert_eq!(p.load.counts.get("sched_yield"), None);
        assert_eq!(p.inference.counts.get("sched_yield"), Some(&2));
        assert_eq!(p.inference.counts.get("exit_group"), Some(&1));
        assert!(p.load.files["/etc/localtime"].contains("openat ENOENT"));
        assert!(p.load.facts["memfd_create.flags"]
            .contains("MFD_CLOEXEC|MFD_ALLOW_SEALING|MFD_NOEXEC_SEAL"));
        let mut two = p.clone();
        two.merge(&p);
        assert_eq!(two.runs, 2);
        assert_eq!(two.inference.counts.get("sched_yield"), Some(&4));
    }

    #[test]
    fn diff_flags_load_only_syscalls_used_in_inference_and_missing_ones() {
        let late_open = format!(
            "{RUN}4242 1733300002.000000 openat(AT_FDCWD, \"/x\", O_RDONLY) = 7\n4242 1733300002.100000 socket(AF_INET, SOCK_STREAM, 0) = 8\n"
        );
        let p = PhasedProfile::from_strace(&late_open, 1733300001.0);
        let d = p.diff(&Policy::worker()).unwrap();
        assert!(d.missing.iter().any(|m| m.starts_with("socket (")), "{d:?}");
        assert!(
            d.load_only_used_in_inference
                .iter()
                .any(|m| m.starts_with("openat(")),
            "{d:?}"
        );
        assert!(!d.clean());
        let clean = PhasedProfile::from_strace(RUN, 1733300001.0)
            .diff(&Policy::worker())
            .unwrap();
        assert!(clean.clean(), "{}", clean.render());
        assert!(clean.render().contains("/etc/localtime"));
    }

    #[test]
    fn minimal_policy_keeps_reviewed_rules_and_observed_alternatives_only() {
        let p = PhasedProfile::from_strace(RUN, 1733300001.0);
        let json = p
            .minimal_policy_json("minimal", WORKER_POLICY_JSON)
            .unwrap();
        let pol = Policy::from_json(&json).unwrap();
        let fcntl: Vec<_> = pol.rules.iter().filter(|r| r.syscall == "fcntl").collect();
        assert_eq!(fcntl.len(), 2, "F_ADD_SEALS and F_GET_SEALS only: {json}");
        assert!(pol.runnable_syscalls().contains("seccomp"), "carried over");
        assert!(pol.runnable_syscalls().contains("getpid"), "carried over");
        assert!(!pol.runnable_syscalls().contains("getdents64"));
        let openat = pol.rules.iter().find(|r| r.syscall == "openat").unwrap();
        assert_eq!(openat.action, crate::Action::PhaseGated);
        // Nothing the profile saw is missing from the minimal policy.
        assert!(
            p.diff(&pol).unwrap().clean(),
            "{}",
            p.diff(&pol).unwrap().render()
        );
        // A syscall the reference lacks is drafted, gated to load when seen only there.
        let extra = format!("4242 1733300000.010000 sysinfo(0x7ffd) = 0\n4242 1733300000.020000 getppid() = 0\n{RUN}");
        let p2 = PhasedProfile::from_strace(&extra, 1733300001.0);
        let json2 = p2
            .minimal_policy_json("minimal", WORKER_POLICY_JSON)
            .unwrap();
        let pol2 = Policy::from_json(&json2).unwrap();
        let getppid = pol2.rules.iter().find(|r| r.syscall == "getppid").unwrap();
        assert_eq!(getppid.action, crate::Action::PhaseGated);
        assert!(getppid.why.contains("TODO"));
    }
}
