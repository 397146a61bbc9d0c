//! `caffe-sandbox run -- CMD`: existing Caffe programs in the same sandbox, as root and unprivileged.
mod common;
use common::*;

#[test]
fn caffe_time_from_the_prefix_runs_in_the_sandbox_with_every_layer() {
    let m = open_nsfw();
    let proto = m.join("deploy.prototxt");
    for who in both() {
        let out = run(
            who,
            &[
                "run".as_ref(),
                "--json".as_ref(),
                "--ro".as_ref(),
                m.as_os_str(),
                "--".as_ref(),
                "caffe".as_ref(),
                "time".as_ref(),
                "-model".as_ref(),
                proto.as_os_str(),
                "-iterations".as_ref(),
                "1".as_ref(),
            ],
        );
        assert!(out.status.success(), "{who:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Average Forward pass"),
            "{}",
            text(&out)
        );
        let v = json(&out);
        assert_eq!(v["exit_code"], 0, "{v:#}");
        for layer in ["user-ns", "net-ns", "mount-ns", "seccomp", "landlock"] {
            let s = serde_json::to_string(&v["layers"]["layers"][layer]).unwrap();
            assert!(s.contains("nforced"), "{who:?} {layer}: {s}");
        }
    }
}

#[test]
fn host_files_outside_the_granted_paths_do_not_exist_inside() {
    for who in both() {
        let out = run_s(
            who,
            &[
                "run",
                "--json",
                "--",
                "/bin/cat",
                "/etc/passwd",
                "/etc/shadow",
                "/root/.bashrc",
            ],
        );
        let all = text(&out);
        assert!(!all.contains("root:x:0:0"), "{all}");
        assert!(all.contains("No such file or directory"), "{all}");
        assert_eq!(json(&out)["exit_code"], 1, "{all}");
    }
}

#[test]
fn a_second_exec_is_a_reported_seccomp_violation() {
    // /bin/sh gets its one execve (the launch); running another program needs fork or exec: both are blocked
    // and the kernel's report names the system call.
    let out = run_s(
        As::Invoker,
        &[
            "run",
            "--json",
            "--",
            "/bin/sh",
            "-c",
            "/bin/sh -c true; echo survived",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(6), "{all}");
    let v = json(&out);
    let first = v["violations"][0].as_str().unwrap_or_default();
    assert!(
        first.contains("clone") || first.contains("execve") || first.contains("fork"),
        "{all}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("survived"),
        "{all}"
    );
}

#[test]
fn wall_clock_deadline_kills_a_runaway_program() {
    let out = run_s(
        As::Invoker,
        &[
            "run",
            "--json",
            "--timeout",
            "0.5",
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert_eq!(json(&out)["timed_out"], true);
}
