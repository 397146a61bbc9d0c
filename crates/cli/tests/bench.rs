//! The shipped bench command (`caffe-sandbox bench`) runs end to end and reports every measurement it
//! promises: in-process vs sandboxed vs fork server, and the spawn comparison against bwrap (with the same
//! seccomp policy) and the OCI runtimes, measured in the same run. No timing is asserted here — the numbers
//! are for docs/benchmarks.md — only that each one was measured (or, for a runtime the host refuses, that
//! the refusal is reported).
mod common;
use common::*;

fn ms(v: &serde_json::Value) -> f64 {
    v["p50_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no p50 in {v}"))
}

#[test]
fn bench_measures_everything_it_reports() {
    let out = run(
        As::Invoker,
        &[
            "bench".as_ref(),
            "--iters".as_ref(),
            "2".as_ref(),
            "--spawn-runs".as_ref(),
            "3".as_ref(),
            "--json".as_ref(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["outputs_match_in_process_1e-6"], true, "{v:#}");
    for r in [
        "steady_forward_sandboxed_over_in_process",
        "cold_sandboxed_over_in_process",
    ] {
        assert!(
            v["ratios"][r].as_f64().is_some_and(|x| x > 0.0),
            "{r}: {v:#}"
        );
    }
    // The same in-process program under `caffe-sandbox run` (every layer) next to it plainly.
    assert!(
        v["in_process_under_run"]["ratio"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{:#}",
        v["in_process_under_run"]
    );
    let sp = &v["spawn"];
    assert!(ms(&sp["true"]["caffe_sandbox_run"]) > 0.0);
    assert!(ms(&sp["true"]["bwrap_with_seccomp"]) > 0.0);
    assert!(ms(&sp["worker_to_ready"]["caffe_sandbox"]) > 0.0);
    assert!(ms(&sp["worker_to_ready"]["bwrap_same_binds_no_seccomp"]) > 0.0);
    // An OCI runtime either measured or its refusal reported (crun refuses hybrid cgroup hosts).
    for rt in ["crun", "runc"] {
        let x = &sp["true"][rt];
        assert!(
            x["p50_ms"].as_f64().is_some() || x["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{rt}: {x}"
        );
    }
    if is_root() {
        // Rootful runc works on these hosts (v1 controllers): a failure here is a bench bug.
        assert!(ms(&sp["true"]["runc"]) > 0.0, "{}", sp["true"]["runc"]);
    }
}
