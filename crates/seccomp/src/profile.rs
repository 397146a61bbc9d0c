//! Deriving an allowlist from `strace -f -qq` output.
//!
//! [`profile_from_strace`] parses strace's text into syscall counts plus the
//! argument facts that matter for the policy's argument filters (clone flags,
//! socket families, mmap/mprotect protections, ioctl requests, prctl/fcntl/
//! arch_prctl commands, openat flags). [`ProfiledSyscalls::compare`] checks a
//! profile against a policy (what is missing, what is unused, which observed
//! argument values the policy would deny) and
//! [`ProfiledSyscalls::minimal_policy_json`] drafts a policy for review.

use std::collections::{BTreeMap, BTreeSet};

use crate::consts;
use crate::policy::{Policy, ResolvedPolicy, Vars, Verdict, REQUIRES_ARGS};

/// What a strace profile shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfiledSyscalls {
    /// Calls per syscall name.
    pub counts: BTreeMap<String, u64>,
    /// Argument facts: `"<syscall>.<arg>"` → distinct symbolic values seen
    /// (e.g. `"ioctl.request"` → `{"TCGETS"}`, `"mmap.prot"` →
    /// `{"PROT_READ|PROT_WRITE"}`).
    pub facts: BTreeMap<String, BTreeSet<String>>,
    /// Observed calls with their argument facts, one entry per distinct
    /// combination: `(syscall, [(arg index, symbolic value)])`.
    pub arg_sets: BTreeSet<(String, Vec<(u8, String)>)>,
    /// mmap/mprotect/pkey_mprotect calls that asked for PROT_EXEC.
    pub exec_mappings: u64,
    /// ... of which anonymous (`MAP_ANONYMOUS`, or any mprotect).
    pub anonymous_exec_mappings: u64,
    /// Lines that looked like syscalls but could not be parsed.
    pub unparsed_lines: u64,
    /// Files touched: path → `"<syscall> <outcome>"` (`ok`, or the errno name).
    pub files: BTreeMap<String, BTreeSet<String>>,
}

/// Splits `a, {b, c}, "d,e"` at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    let mut cur = String::new();
    for ch in s.chars() {
        if in_str {
            cur.push(ch);
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
            continue;
        }
        match ch {
            '"' => {
                in_str = true;
                cur.push(ch);
            }
            '(' | '{' | '[' => {
                depth += 1;
                cur.push(ch);
            }
            ')' | '}' | ']' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The argument text of a call line (`name(ARGS) = ret` or
/// `name(ARGS <unfinished ...>`), without the outer parentheses.
fn arg_text(rest: &str) -> &str {
    let rest = rest.split(" <unfinished ...>").next().unwrap_or(rest);
    // Find the ')' that closes the call: scan from the start, respecting nesting.
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    for (i, ch) in rest.char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                if depth == 0 {
                    return &rest[..i];
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    rest
}

fn strip_prefixes(line: &str) -> &str {
    let mut s = line.trim_start();
    if let Some(r) = s.strip_prefix("[pid") {
        s = r.split_once(']').map(|(_, r)| r).unwrap_or("").trim_start();
    } else {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && s[digits..].starts_with(char::is_whitespace) {
            s = s[digits..].trim_start();
        }
    }
    // Optional timestamp (-t, -tt, -ttt, -r).
    let ts = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b':' || *b == b'.')
        .count();
    if ts > 0 && s[ts..].starts_with(' ') && s[..ts].contains(['.', ':']) {
        s = s[ts..].trim_start();
    }
    s
}

/// Parses `strace -f -qq [-e trace=all] [-o FILE]` output (any of strace's
/// pid prefixes, optional timestamps, unfinished/resumed pairs).
pub fn profile_from_strace(output: &str) -> ProfiledSyscalls {
    let mut p = ProfiledSyscalls::default();
    for line in output.lines() {
        let s = strip_prefixes(line);
        if s.is_empty() || s.starts_with("<...") || s.starts_with("---") || s.starts_with("+++") {
            continue;
        }
        let name_len = s
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if name_len == 0 || !s[name_len..].starts_with('(') {
            if s.contains('(') {
                p.unparsed_lines += 1;
            }
            continue;
        }
        let name = &s[..name_len];
        *p.counts.entry(name.to_string()).or_insert(0) += 1;
        let args = split_args(arg_text(&s[name_len + 1..]));
        p.record_facts(name, &args);
        p.record_file(name, &args, outcome(s));
    }
    p
}

/// `ok`, the errno name of a failed call, or `?` for an unfinished one.
fn outcome(line: &str) -> &str {
    if line.contains(" <unfinished ...>") {
        return "?";
    }
    match line.rsplit_once(") = ") {
        Some((_, r)) if r.trim_start().starts_with('-') => {
            r.split_whitespace().nth(1).unwrap_or("?")
        }
        Some(_) => "ok",
        None => "?",
    }
}

/// Index of the path argument of the syscalls that name files.
fn path_arg(name: &str) -> Option<usize> {
    match name {
        "open" | "stat" | "lstat" | "access" | "readlink" | "execve" | "statfs" | "truncate"
        | "chdir" | "creat" | "mkdir" | "rmdir" | "unlink" | "chmod" | "chown" | "uselib" => {
            Some(0)
        }
        "openat" | "openat2" | "newfstatat" | "faccessat" | "faccessat2" | "readlinkat"
        | "statx" | "execveat" | "mkdirat" | "unlinkat" | "fchmodat" | "fchownat" => Some(1),
        _ => None,
    }
}

/// The `-ttt` timestamp of an strace line (seconds since the epoch), after the optional pid prefix.
pub fn strace_timestamp(line: &str) -> Option<f64> {
    let mut s = line.trim_start();
    if let Some(r) = s.strip_prefix("[pid") {
        s = r.split_once(']')?.1.trim_start();
    } else {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && s[digits..].starts_with(' ') {
            s = s[digits..].trim_start();
        }
    }
    let tok = s.split_whitespace().next()?;
    if tok.contains('.') && tok.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        tok.parse().ok()
    } else {
        None
    }
}

/// Splits `strace -ttt` output at `boundary` (seconds since the epoch): lines stamped at or before it, and the
/// rest. A line without a timestamp stays with the line before it.
pub fn split_strace_at(text: &str, boundary: f64) -> (String, String) {
    let (mut before, mut after) = (String::new(), String::new());
    let mut late = false;
    for line in text.lines() {
        if let Some(t) = strace_timestamp(line) {
            late = t > boundary;
        }
        let out = if late { &mut after } else { &mut before };
        out.push_str(line);
        out.push('\n');
    }
    (before, after)
}

impl ProfiledSyscalls {
    fn fact(&mut self, key: &str, value: &str) {
        self.facts
            .entry(key.to_string())
            .or_default()
            .insert(value.to_string());
    }

    fn record_facts(&mut self, name: &str, args: &[String]) {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let mut set: Vec<(u8, String)> = Vec::new();
        match name {
            "clone" => {
                if let Some(f) = args.iter().find_map(|a| a.strip_prefix("flags=")) {
                    self.fact("clone.flags", f);
                    set.push((0, f.to_string()));
                }
            }
            "clone3" => {
                let a = arg(0);
                if let Some(i) = a.find("flags=") {
                    let f: String = a[i + 6..]
                        .chars()
                        .take_while(|c| *c != ',' && *c != '}')
                        .collect();
                    self.fact("clone3.flags", &f);
                }
            }
            "socket" => {
                self.fact("socket.family", arg(0));
                set.push((0, arg(0).to_string()));
            }
            "mmap" | "mprotect" | "pkey_mprotect" => {
                let prot = arg(2);
                self.fact(&format!("{name}.prot"), prot);
                set.push((2, prot.to_string()));
                if name == "mmap" {
                    self.fact("mmap.flags", arg(3));
                    set.push((3, arg(3).to_string()));
                }
                if prot.split('|').any(|x| x == "PROT_EXEC") {
                    self.exec_mappings += 1;
                    if name != "mmap" || arg(3).split('|').any(|x| x == "MAP_ANONYMOUS") {
                        self.anonymous_exec_mappings += 1;
                    }
                }
            }
            "ioctl" | "fcntl" | "getsockopt" => {
                let key = match name {
                    "ioctl" => "ioctl.request",
                    "fcntl" => "fcntl.cmd",
                    _ => "getsockopt.level",
                };
                let v = arg(1).split_whitespace().next().unwrap_or("");
                self.fact(key, v);
                set.push((1, v.to_string()));
            }
            "prctl" | "arch_prctl" | "personality" => {
                self.fact(&format!("{name}.arg0"), arg(0));
                set.push((0, arg(0).to_string()));
            }
            "openat" => {
                self.fact("openat.flags", arg(2));
                set.push((2, arg(2).to_string()));
            }
            "memfd_create" => {
                self.fact("memfd_create.flags", arg(1));
                set.push((1, arg(1).to_string()));
            }
            _ => {}
        }
        if name == "getsockopt" {
            // Level (already recorded) and option name.
            self.fact("getsockopt.optname", arg(2));
            set.push((2, arg(2).to_string()));
        }
        if !set.is_empty() {
            self.arg_sets.insert((name.to_string(), set));
        }
    }

    fn record_file(&mut self, name: &str, args: &[String], outcome: &str) {
        let Some(i) = path_arg(name) else { return };
        let Some(path) = args
            .get(i)
            .and_then(|a| a.strip_prefix('"'))
            .and_then(|a| a.strip_suffix('"'))
        else {
            return;
        };
        if path.is_empty() {
            return;
        }
        self.files
            .entry(path.to_string())
            .or_default()
            .insert(format!("{name} {outcome}"));
    }

    /// Adds another profile (e.g. a further run) to this one.
    pub fn merge(&mut self, other: &ProfiledSyscalls) {
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.facts {
            self.facts
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        self.arg_sets.extend(other.arg_sets.iter().cloned());
        for (k, v) in &other.files {
            self.files
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        self.exec_mappings += other.exec_mappings;
        self.anonymous_exec_mappings += other.anonymous_exec_mappings;
        self.unparsed_lines += other.unparsed_lines;
    }

    /// Observed syscall names.
    pub fn syscalls(&self) -> BTreeSet<&str> {
        self.counts.keys().map(String::as_str).collect()
    }

    /// Compares the profile with `policy` (variables resolved with
    /// placeholder values; `tgkill` is not checked by argument).
    pub fn compare(&self, policy: &Policy) -> ProfileDiff {
        let handled: BTreeSet<&str> = policy.rules.iter().map(|r| r.syscall.as_str()).collect();
        let observed = self.syscalls();
        let missing = observed
            .iter()
            .filter(|s| !handled.contains(**s))
            .map(|s| s.to_string())
            .collect();
        let unused = policy
            .runnable_syscalls()
            .into_iter()
            .filter(|s| !observed.contains(s))
            .map(String::from)
            .collect();
        let resolved = policy.resolve(&Vars {
            worker_tgid: Some(0),
        });
        let mut denied_args = Vec::new();
        if let Ok(resolved) = resolved {
            for (name, set) in &self.arg_sets {
                if let Some(finding) = check_args(&resolved, name, set) {
                    denied_args.push(finding);
                }
            }
        }
        ProfileDiff {
            missing,
            unused,
            denied_args,
            exec_mappings: self.exec_mappings,
            anonymous_exec_mappings: self.anonymous_exec_mappings,
        }
    }

    /// Drafts a policy covering exactly the profile (for review, not for use
    /// as is). Syscalls in `never_allow` are left out (they stay violations);
    /// argument-critical syscalls get one rule per observed value.
    pub fn minimal_policy_json(&self, name: &str, never_allow: &[String]) -> String {
        let mut rules: Vec<String> = Vec::new();
        let mut todo: Vec<String> = Vec::new();
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        for (sys, n) in &self.counts {
            if never_allow.contains(sys) {
                continue;
            }
            let why = q(&format!(
                "observed {n} calls in the profile; TODO: say which library/phase needs it"
            ));
            let one = |args: &str| {
                format!(
                    "    {{ \"syscall\": {}, \"action\": \"allow\",{args} \"why\": {why} }}",
                    q(sys)
                )
            };
            if sys == "clone3" {
                rules.push(format!(
                    "    {{ \"syscall\": \"clone3\", \"action\": \"errno\", \"errno\": \"ENOSYS\", \"why\": {why} }}"
                ));
                continue;
            }
            if !REQUIRES_ARGS.contains(&sys.as_str()) {
                rules.push(one(""));
                continue;
            }
            let (idx, key) = match sys.as_str() {
                "ioctl" => (1, "ioctl.request"),
                "fcntl" => (1, "fcntl.cmd"),
                "prctl" | "arch_prctl" | "personality" => (0, ""),
                "mmap" | "mprotect" | "pkey_mprotect" => {
                    rules.push(one(
                        " \"args\": [ { \"arg\": 2, \"op\": \"masked_eq\", \"mask\": \"PROT_EXEC\", \"value\": 0 } ],",
                    ));
                    continue;
                }
                "clone" => {
                    rules.push(one(
                        " \"args\": [ { \"arg\": 0, \"op\": \"masked_eq\", \"mask\": { \"not\": [ \"CLONE_SETTLS\", \"CLONE_PARENT_SETTID\", \"CLONE_CHILD_CLEARTID\" ] }, \"value\": [ \"CLONE_VM\", \"CLONE_FS\", \"CLONE_FILES\", \"CLONE_SIGHAND\", \"CLONE_THREAD\", \"CLONE_SYSVSEM\" ] } ],",
                    ));
                    continue;
                }
                "tgkill" => {
                    rules.push(one(
                        " \"args\": [ { \"arg\": 0, \"op\": \"eq\", \"value\": \"${worker_tgid}\" } ],",
                    ));
                    continue;
                }
                "prlimit64" => {
                    rules.push(one(
                        " \"args\": [ { \"arg\": 0, \"op\": \"eq\", \"value\": 0 }, { \"arg\": 2, \"op\": \"eq\", \"value\": 0 } ],",
                    ));
                    continue;
                }
                _ => {
                    todo.push(sys.clone());
                    continue;
                }
            };
            let key = if key.is_empty() {
                format!("{sys}.arg0")
            } else {
                key.to_string()
            };
            for v in self.facts.get(&key).into_iter().flatten() {
                if consts::lookup(v).is_some() {
                    rules.push(one(&format!(
                        " \"args\": [ {{ \"arg\": {idx}, \"op\": \"eq\", \"value\": {} }} ],",
                        q(v)
                    )));
                }
            }
        }
        let never: Vec<String> = never_allow.iter().map(|s| q(s)).collect();
        let description = if todo.is_empty() {
            "draft generated from an strace profile; review every rule".to_string()
        } else {
            format!(
                "draft generated from an strace profile; review every rule. Left out (need hand-written argument conditions): {}",
                todo.join(" ")
            )
        };
        format!(
            "{{\n  \"schema\": \"{}\",\n  \"name\": {},\n  \"description\": {},\n  \"never_allow\": [ {} ],\n  \"rules\": [\n{}\n  ]\n}}\n",
            crate::policy::SCHEMA,
            q(name),
            q(&description),
            never.join(", "),
            rules.join(",\n")
        )
    }
}

/// Resolves strace's symbolic `A|B|C` (or a number) to a value; `None` if a
/// name is unknown to [`consts`].
pub(crate) fn symbolic(v: &str) -> Option<u64> {
    let v = v.trim();
    if v == "NULL" {
        return Some(0);
    }
    let mut acc = 0u64;
    for part in v.split('|') {
        let part = part.trim();
        let x = if let Some(h) = part.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()?
        } else if let Ok(n) = part.parse::<i64>() {
            n as u64
        } else if part == "O_LARGEFILE"
            || part == "MAP_DENYWRITE"
            || part == "MAP_STACK"
            || part == "MAP_NORESERVE"
        {
            // Flags the policy never constrains.
            match part {
                "O_LARGEFILE" => 0o100_000,
                "MAP_DENYWRITE" => 0x800,
                "MAP_STACK" => 0x20000,
                _ => 0x4000,
            }
        } else {
            consts::lookup(part)?
        };
        acc |= x;
    }
    Some(acc)
}

fn check_args(policy: &ResolvedPolicy, name: &str, set: &[(u8, String)]) -> Option<String> {
    let nr = crate::policy::syscall_nr(name)?;
    let mut args = [0u64; 6];
    for (i, v) in set {
        match symbolic(v) {
            Some(x) => args[usize::from(*i)] = x,
            None => {
                return Some(format!(
                    "{name}({}) observed with a value unknown to the constant table: check by hand",
                    describe(set)
                ))
            }
        }
    }
    let verdict = policy.classify(i64::from(nr), &args);
    match verdict {
        Verdict::Deny => Some(format!(
            "{name}({}) observed, policy denies it",
            describe(set)
        )),
        Verdict::PhaseGated(_) => Some(format!(
            "{name}({}) observed, policy allows it only during load",
            describe(set)
        )),
        _ => None,
    }
}

pub(crate) fn describe(set: &[(u8, String)]) -> String {
    set.iter()
        .map(|(i, v)| format!("arg{i}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A profile compared with a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileDiff {
    /// Observed syscalls with no rule in the policy (would be violations).
    pub missing: Vec<String>,
    /// Syscalls the policy lets run that the profile never used.
    pub unused: Vec<String>,
    /// Observed argument values the policy denies (or gates to load).
    pub denied_args: Vec<String>,
    /// Executable mappings seen.
    pub exec_mappings: u64,
    /// Anonymous executable mappings seen.
    pub anonymous_exec_mappings: u64,
}

impl ProfileDiff {
    /// A short text report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(" ")
            }
        };
        s.push_str(&format!("missing from policy: {}\n", list(&self.missing)));
        s.push_str(&format!("allowed but unused:  {}\n", list(&self.unused)));
        s.push_str(&format!(
            "denied arguments:    {}\n",
            list(&self.denied_args)
        ));
        s.push_str(&format!(
            "executable mappings: {} ({} anonymous)\n",
            self.exec_mappings, self.anonymous_exec_mappings
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"14697 execve("/usr/bin/caffe", ["caffe", "time"], 0x7ffd /* 20 vars */) = 0
14697 mmap(0x7fb614c01000, 1234, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3, 0x1000) = 0x7fb614c01000
14697 mmap(NULL, 8392704, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = 0x7f00
14697 ioctl(4, TCGETS <unfinished ...>
14698 futex(0x55, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>
14697 <... ioctl resumed>, {c_iflag=ICRNL}) = 0
[pid 14699] clone(child_stack=0x7f, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, parent_tid=[14700], tls=0x7f) = 14700
clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f, parent_tid=0x7f, exit_signal=0, stack=0x7f, stack_size=0x7fff00, tls=0x7f} => {parent_tid=[14701]}, 88) = 14701
14697 socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, 0) = 3
14697 openat(AT_FDCWD, "/a,b(c", O_WRONLY|O_CREAT|O_EXCL, 0664) = 3
20:29:35.682282 write(2, "x", 1) = 1
14697 ioctl(1, TIOCSTI, "x") = 0
14697 +++ exited with 0 +++
--- SIGCHLD {si_signo=SIGCHLD} ---
"#;

    #[test]
    fn parses_counts_and_facts() {
        let p = profile_from_strace(SAMPLE);
        assert_eq!(p.counts["mmap"], 2);
        assert_eq!(p.counts["ioctl"], 2);
        assert_eq!(p.counts["futex"], 1);
        assert_eq!(p.counts["write"], 1);
        assert!(!p.counts.contains_key("exited"));
        assert!(p.facts["ioctl.request"].contains("TCGETS"));
        assert!(p.facts["socket.family"].contains("AF_UNIX"));
        assert!(p.facts["clone.flags"]
            .iter()
            .any(|f| f.starts_with("CLONE_VM|")));
        assert!(p.facts["clone3.flags"]
            .iter()
            .any(|f| f.ends_with("CLONE_CHILD_CLEARTID")));
        assert!(p.facts["openat.flags"].contains("O_WRONLY|O_CREAT|O_EXCL"));
        assert_eq!(p.exec_mappings, 1);
        assert_eq!(p.anonymous_exec_mappings, 0);
    }

    #[test]
    fn compare_against_worker_policy() {
        let p = profile_from_strace(SAMPLE);
        let d = p.compare(&Policy::worker());
        assert!(d.missing.contains(&"execve".to_string()));
        assert!(d.missing.contains(&"socket".to_string()));
        assert!(d.denied_args.iter().any(|s| s.contains("TIOCSTI")), "{d:?}");
        assert!(
            d.denied_args
                .iter()
                .any(|s| s.starts_with("mmap(") && s.contains("PROT_EXEC")),
            "{d:?}"
        );
        assert!(!d.denied_args.iter().any(|s| s.contains("TCGETS")), "{d:?}");
        assert!(
            !d.denied_args.iter().any(|s| s.starts_with("clone(")),
            "{d:?}"
        );
        assert!(d.render().contains("missing from policy"));
    }

    #[test]
    fn minimal_policy_is_valid() {
        let p = profile_from_strace(SAMPLE);
        let never = vec!["execve".to_string(), "socket".to_string()];
        let json = p.minimal_policy_json("draft", &never);
        let pol = Policy::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert!(pol.runnable_syscalls().contains("futex"));
        assert!(!pol.runnable_syscalls().contains("execve"));
    }
}
