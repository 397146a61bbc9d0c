//! `caffe-sandbox audit`: the attack battery passes on this machine with every layer (as root and
//! unprivileged), and fails — naming what got through — when a layer is deliberately switched off.
mod common;
use common::*;

fn probes(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("no probes in {v:#}"))
}

#[test]
fn audit_passes_with_every_layer_in_force() {
    for who in both() {
        let out = run_s(who, &["audit", "--json"]);
        let v = json(&out);
        let not_blocked: Vec<_> = probes(&v)
            .iter()
            .filter(|p| p["verdict"] != "blocked")
            .collect();
        assert!(
            out.status.success() && not_blocked.is_empty() && v["passed"] == true,
            "{who:?}: {not_blocked:#?}\n{}",
            text(&out)
        );
        // The battery covers every layer group, and seccomp is what the kernel names for the syscall probes.
        for group in [
            "namespaces",
            "filesystem",
            "network",
            "seccomp",
            "landlock",
            "limits",
        ] {
            assert!(
                probes(&v).iter().any(|p| p["group"] == group),
                "no {group} probe"
            );
        }
        let exec = probes(&v)
            .iter()
            .find(|p| p["name"] == "exec_bin_sh")
            .unwrap();
        assert_eq!(exec["by"], "seccomp", "{exec}");
        assert!(exec["how"].as_str().unwrap().contains("execve"), "{exec}");
        assert!(v["host"]["kernel_release"].is_string(), "{v:#}");
    }
}

#[test]
fn audit_fails_and_says_what_got_through_when_seccomp_is_disabled() {
    let out = run_s(As::Invoker, &["audit", "--allow-weaker", "seccomp"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("AUDIT FAILED"), "{all}");
    // Only seccomp stops executable memory after start: the table must show it got through.
    let line = all
        .lines()
        .find(|l| l.trim_start().starts_with("mmap_exec "))
        .unwrap_or_else(|| panic!("no mmap_exec row:\n{all}"));
    assert!(line.contains("NOT BLOCKED"), "{line}");
    // The other layers still hold: the host listener and host paths are covered by namespaces/filesystem.
    let json_out = run_s(
        As::Invoker,
        &["audit", "--json", "--allow-weaker", "seccomp"],
    );
    let v = json(&json_out);
    let verdict = |name: &str| {
        probes(&v)
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    for (name, by) in [
        ("socket_inet", "landlock"),
        ("write_host_path", "mount-ns"),
        ("kill_host_pid", "pid-ns"),
        ("mount_tmpfs", "capabilities"),
    ] {
        let p = verdict(name);
        assert_eq!(p["verdict"], "blocked", "{p}");
        assert!(p["by"].as_str().unwrap().contains(by), "{name}: {p}");
    }
    assert_eq!(v["passed"], false);
    assert_eq!(v["allow_weaker"][0], "seccomp", "{v:#}");
}

#[test]
fn audit_runs_against_a_sandbox_policy() {
    let out = run_s(As::Invoker, &["audit", "--policy", "builtin:inference"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("audit passed"),
        "{}",
        text(&out)
    );
    // A run-tool policy cannot describe a worker: refused, not silently replaced by the defaults.
    let out = run_s(As::Invoker, &["audit", "--policy", "builtin:run-tool"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}
