//! The fork server (`LaunchConfig::fork_server`) with the real Caffe worker, the real sandbox and the real
//! kernel, as root and unprivileged (each test reruns itself as uid/gid 65534 through `setpriv` when run as
//! root): forked workers compute exactly what freshly exec'd ones do; a crash (SIGSEGV, SIGFPE) or a seccomp
//! violation in one forked worker is classified like in the default path and takes neither the fork server nor
//! the supervisor down; the next fork works; the fork server (and its workers) die with the supervisor.
//!
//! Needs `scripts/setup` (the Caffe prefix, open_nsfw) and the workspace built (`cargo test --workspace`);
//! user namespaces and seccomp must be available: a missing precondition fails loudly.

use caffe_sandbox_supervisor::seccomp_watch::confirm_from_kernel;
use caffe_sandbox_supervisor::{
    Deadlines, Error, FirewallMode, Input, LaunchConfig, Layer, ModelBundle, Worker, WorkerFailure,
};
use caffe_sandbox_testkit::{
    built, is_root, open_nsfw_dir, repo, rerun_as_nobody, sample, tmpdir, TempDir,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "CS_FORK_SERVER_TEST_HELPER";

fn cfg(fork_server: bool) -> LaunchConfig {
    let mut c = LaunchConfig::discover()
        .expect("launch config (run scripts/setup and build the workspace)");
    c.worker_exe = built("caffe-sandbox-worker");
    c.stage2_exe = Some(built("caffe-sandbox-jail-stage2"));
    c.fork_server = fork_server;
    c
}

fn deadlines() -> Deadlines {
    Deadlines {
        start: Duration::from_secs(20),
        load: Duration::from_secs(60),
        request: Duration::from_secs(30),
    }
}

/// Runs `body` as the invoking user and, when that is root, reruns this very test as uid/gid 65534 (the
/// rootless path through user namespaces), which must pass too.
fn as_root_and_unprivileged(test: &str, body: impl Fn()) {
    body();
    if is_root() {
        rerun_as_nobody(test);
    }
}

fn model_dir(tag: &str, prototxt: &str) -> TempDir {
    let d = tmpdir(tag);
    std::fs::write(d.join("deploy.prototxt"), prototxt).unwrap();
    std::fs::write(d.join("weights.caffemodel"), b"").unwrap();
    d
}

fn unchecked(dir: &Path) -> ModelBundle {
    ModelBundle::from_dir_checked(dir, &Default::default(), &FirewallMode::Off).unwrap()
}

fn open_nsfw() -> ModelBundle {
    ModelBundle::from_dir(&open_nsfw_dir(), &Default::default()).unwrap()
}

fn photo(name: &str) -> Input {
    Input::Image {
        name: "data".into(),
        bytes: std::fs::read(sample(name)).unwrap(),
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": a zombie is dead.
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn failure(e: Error) -> WorkerFailure {
    match e {
        Error::Worker { failure, .. } => failure,
        other => panic!("expected a worker failure, got {other}"),
    }
}

const EMBED_SEGV: &str = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "em" type: "Embed" bottom: "data" top: "e" embed_param { num_output: 2 input_dim: 2 } }
"#;

const CONV_GROUP0_FPE: &str = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 group: 0 } }
"#;

fn tensor(v: [f32; 3]) -> Input {
    Input::Tensor {
        name: "data".into(),
        dims: vec![1, 3],
        data: v.to_vec(),
    }
}

#[test]
fn forked_workers_compute_what_fresh_workers_compute_and_share_one_server() {
    as_root_and_unprivileged(
        "forked_workers_compute_what_fresh_workers_compute_and_share_one_server",
        || {
            let model = open_nsfw();
            let inputs = [photo("chelsea.png"), photo("coffee.png")];
            let mut fresh = Worker::start(&cfg(false), deadlines()).unwrap();
            assert_eq!(fresh.fork_server_pid(), None);
            fresh.load(&model).unwrap();
            let want: Vec<Vec<f32>> = inputs
                .iter()
                .map(|i| {
                    fresh.infer(std::slice::from_ref(i)).unwrap()[0]
                        .data
                        .clone()
                })
                .collect();
            fresh.shutdown();

            let c = cfg(true);
            let mut a = Worker::start(&c, deadlines()).unwrap();
            let mut b = Worker::start(&c, deadlines()).unwrap();
            let server = a.fork_server_pid().expect("forked from a server");
            assert_eq!(
                b.fork_server_pid(),
                Some(server),
                "one server per configuration"
            );
            assert_ne!(a.pid(), b.pid());
            for w in [&mut a, &mut b] {
                w.load(&model).unwrap();
                // The kernel's view: every thread (OpenBLAS's, restarted after the fork, included) runs under
                // the listener filter and the stacked inference filter.
                let state = confirm_from_kernel(w.pid().unwrap(), 2, "worker.json");
                assert!(state.is_enforced(), "{state:?}");
                for (i, input) in inputs.iter().enumerate() {
                    let got = w.infer(std::slice::from_ref(input)).unwrap();
                    assert_eq!(got[0].name, "prob");
                    // Same libcaffe, same bytes in: the same floats out (bitwise).
                    assert_eq!(got[0].data, want[i], "input {i}");
                }
                let layers = w.layers();
                for l in [Layer::Seccomp, Layer::UserNs, Layer::PidNs, Layer::Landlock] {
                    assert!(layers.is_enforced(l), "{l:?}: {layers}");
                }
                let pid_ns = format!("{:?}", layers.get(Layer::PidNs));
                assert!(pid_ns.contains("shared with the fork server"), "{pid_ns}");
            }
            // A worker's death does not end its sibling.
            a.shutdown();
            assert_eq!(b.infer(&[photo("chelsea.png")]).unwrap()[0].data, want[0]);
            b.shutdown();
            assert!(alive(server));
        },
    );
}

#[test]
fn a_crashing_forked_worker_is_classified_and_the_next_fork_works() {
    as_root_and_unprivileged(
        "a_crashing_forked_worker_is_classified_and_the_next_fork_works",
        || {
            let c = cfg(true);
            let segv = unchecked(&model_dir("segv", EMBED_SEGV));
            let mut w = Worker::start(&c, deadlines()).unwrap();
            let server = w.fork_server_pid().unwrap();
            w.load(&segv).unwrap();
            let f = failure(w.infer(&[tensor([1e9, 1e9, 1e9])]).unwrap_err());
            assert!(
                matches!(&f, WorkerFailure::Crashed { signal_name, .. } if signal_name == "SIGSEGV"),
                "{f:?}"
            );
            assert!(!w.is_alive());
            assert!(alive(server), "the fork server died with its worker");

            // SIGFPE while the net is built (load phase).
            let fpe = unchecked(&model_dir("fpe", CONV_GROUP0_FPE));
            let mut w = Worker::start(&c, deadlines()).unwrap();
            assert_eq!(w.fork_server_pid(), Some(server));
            let f = failure(w.load(&fpe).unwrap_err());
            assert!(
                matches!(&f, WorkerFailure::Crashed { signal_name, .. } if signal_name == "SIGFPE"),
                "{f:?}"
            );
            assert!(alive(server), "the fork server died with its worker");

            // The next fork from the same server works.
            let mut w = Worker::start(&c, deadlines()).unwrap();
            assert_eq!(w.fork_server_pid(), Some(server));
            w.load(&segv).unwrap();
            let out = w.infer(&[tensor([0.0, 1.0, 0.0])]).unwrap();
            assert_eq!(out[0].dims, vec![1, 3, 2]);
            w.shutdown();
        },
    );
}

#[test]
fn a_seccomp_violation_in_a_forked_worker_is_reported_by_name() {
    as_root_and_unprivileged(
        "a_seccomp_violation_in_a_forked_worker_is_reported_by_name",
        || {
            // The reviewed policy without `openat`, which Caffe's net construction calls (it seeds its RNG
            // from /dev/urandom): a load then violates the policy exactly like a hostile model calling
            // something unlisted.
            let text =
                std::fs::read_to_string(repo().join("policies/seccomp/worker.json")).unwrap();
            let mut policy: serde_json::Value = serde_json::from_str(&text).unwrap();
            let rules = policy["rules"].as_array_mut().unwrap();
            let before = rules.len();
            rules.retain(|r| r["syscall"] != "openat");
            assert!(
                rules.len() < before,
                "the policy has no openat rule any more"
            );
            let dir = tmpdir("policy");
            let path = dir.join("no-openat.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
            let mut c = cfg(true);
            c.seccomp_policy = Some(path);

            let mut w = Worker::start(&c, deadlines()).unwrap();
            let server = w.fork_server_pid().unwrap();
            let f = failure(w.load(&open_nsfw()).unwrap_err());
            match &f {
                WorkerFailure::SeccompViolation { syscall, phase, .. } => {
                    assert_eq!(syscall, "openat", "{f}");
                    assert_eq!(phase, "load", "{f}");
                }
                other => panic!("expected a seccomp violation, got {other:?}"),
            }
            assert!(alive(server), "the fork server died with its worker");
            // The server is still usable with the same configuration.
            let w = Worker::start(&c, deadlines()).unwrap();
            assert_eq!(w.fork_server_pid(), Some(server));
            w.shutdown();
        },
    );
}

#[test]
fn a_full_fork_server_refuses_the_next_fork_and_keeps_its_workers() {
    as_root_and_unprivileged(
        "a_full_fork_server_refuses_the_next_fork_and_keeps_its_workers",
        || {
            // RLIMIT_NOFILE 20 leaves the zygote room for 8 children's pidfds (12 fds are reserved).
            let mut c = cfg(true);
            c.limits.open_files = Some(20);
            let mut workers: Vec<Worker> = (0..8)
                .map(|i| {
                    Worker::start(&c, deadlines()).unwrap_or_else(|e| panic!("worker {i}: {e}"))
                })
                .collect();
            let server = workers[0].fork_server_pid().unwrap();
            let err = match Worker::start(&c, deadlines()) {
                Ok(_) => panic!("a 9th worker was forked beyond the zygote's capacity"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("at capacity"), "{err}");
            assert!(alive(server), "the fork server died at capacity");
            for w in &workers {
                assert!(alive(w.pid().unwrap()));
            }
            // One slot freed: the next fork works, from the same server.
            workers.pop().unwrap().shutdown();
            let w = Worker::start(&c, deadlines()).unwrap();
            assert_eq!(w.fork_server_pid(), Some(server));
            let mut w = w;
            let segv = unchecked(&model_dir("cap", EMBED_SEGV));
            w.load(&segv).unwrap();
            assert_eq!(
                w.infer(&[tensor([0.0, 1.0, 0.0])]).unwrap()[0].dims,
                vec![1, 3, 2]
            );
        },
    );
}

/// Not a test: the supervisor process of `the_fork_server_dies_with_the_supervisor` (run by it with
/// `--ignored`). Starts a forked worker, prints the pids, then waits to be killed.
#[test]
#[ignore = "helper process of the_fork_server_dies_with_the_supervisor"]
fn helper_supervisor_holding_a_forked_worker() {
    assert!(
        std::env::var_os(HELPER_ENV).is_some(),
        "run only by the_fork_server_dies_with_the_supervisor"
    );
    let w = Worker::start(&cfg(true), deadlines()).unwrap();
    println!("PIDS {} {}", w.fork_server_pid().unwrap(), w.pid().unwrap());
    std::thread::sleep(Duration::from_secs(120));
    drop(w);
}

#[test]
fn the_fork_server_dies_with_the_supervisor() {
    as_root_and_unprivileged("the_fork_server_dies_with_the_supervisor", || {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_supervisor_holding_a_forked_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // libtest prints "test NAME ... " before the helper's own output, on the same line.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let pids: Vec<i32> = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the helper ended before starting a worker"
            );
            if let Some((_, p)) = line.split_once("PIDS ") {
                break p.split_whitespace().map(|p| p.parse().unwrap()).collect();
            }
        };
        let (server, worker) = (pids[0], pids[1]);
        assert!(
            alive(server) && alive(worker),
            "server {server} and worker {worker} must be running"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        while (alive(server) || alive(worker)) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(server), "the fork server outlived its supervisor");
        assert!(!alive(worker), "a forked worker outlived its supervisor");
    });
}
