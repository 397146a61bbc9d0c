//! Recorded strace profiles of the real Caffe 1.0 workload (capped to a few
//! lines per syscall; see policies/seccomp/README.md) checked against the
//! shipped policies: a policy change that would break Caffe fails here.

use caffe_sandbox_seccomp::{profile_from_strace, Policy};

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// caffe-inprocess after the weights were read: engine init, Net
/// construction (open_nsfw), forwards, exit. Everything the filter would see.
#[test]
fn inprocess_load_and_forward_fit_the_worker_policy() {
    let p = profile_from_strace(&fixture("inprocess-load-and-forward.strace"));
    assert!(p.counts["sched_yield"] > 0 && p.counts["mbind"] > 0);
    let d = p.compare(&Policy::worker());
    assert!(d.missing.is_empty(), "{}", d.render());
    assert_eq!(d.exec_mappings, 0);
    // Only read-only opens, and only during load (/etc/localtime, /dev/urandom).
    assert!(
        d.denied_args
            .iter()
            .all(|s| s.starts_with("openat(") && s.ends_with("only during load")),
        "{}",
        d.render()
    );
}

/// A Python layer's Py_Initialize + import of a module next to the model
/// (Python 3.9 standard library from the prefix): load phase only.
#[test]
fn python_layer_load_fits_the_worker_load_phase() {
    let p = profile_from_strace(&fixture("python-layer-load.strace"));
    let d = p.compare(&Policy::worker());
    assert!(d.missing.is_empty(), "{}", d.render());
    assert!(
        d.denied_args
            .iter()
            .all(|s| s.ends_with("only during load")),
        "{}",
        d.render()
    );
}

/// `caffe time` on open_nsfw from execve to exit: the run-tool policy.
#[test]
fn caffe_time_fits_the_run_tool_policy() {
    let p = profile_from_strace(&fixture("caffe-time.strace"));
    assert!(p.exec_mappings > 0);
    assert_eq!(p.anonymous_exec_mappings, 0);
    let d = p.compare(&Policy::run_tool());
    // glog's log-file handling without GLOG_logtostderr=1 (symlink/unlink) and
    // the nscd connect after the refused socket are expected; nothing else.
    let mut missing = d.missing.clone();
    missing.sort();
    assert_eq!(missing, ["connect", "symlink", "unlink"], "{}", d.render());
    assert!(
        d.denied_args
            .iter()
            .all(|s| s.starts_with("socket(arg0=AF_UNIX")),
        "{}",
        d.render()
    );
}

/// The real `caffe-sandbox-worker` inside the full jail (`caffe-sandbox infer`
/// on open_nsfw, two images), from its `seccomp(..NEW_LISTENER..)` call to
/// exit: worker main thread and its OpenBLAS thread.
#[test]
fn jailed_worker_fits_the_worker_policy() {
    let p = profile_from_strace(&fixture("worker-jailed.strace"));
    for s in [
        "sendmsg",
        "recvmsg",
        "memfd_create",
        "pread64",
        "sched_yield",
        "mbind",
    ] {
        assert!(p.counts.contains_key(s), "{s} not in the profile");
    }
    let d = p.compare(&Policy::worker());
    assert!(d.missing.is_empty(), "{}", d.render());
    assert_eq!(d.exec_mappings, 0);
    assert!(
        d.denied_args
            .iter()
            .all(|s| s.starts_with("openat(") && s.ends_with("only during load")),
        "{}",
        d.render()
    );
}
