//! Compares an strace profile with a policy.
//!
//! `cargo run -p caffe-sandbox-seccomp --example profile -- STRACE_FILE [worker|run-tool|POLICY.json] [--draft]`
//!
//! Record the profile with `strace -f -qq -o STRACE_FILE CMD...`. Only the part after the filter would be
//! installed is governed by the worker policy: cut the file at that point first (e.g. after the last library
//! `openat`). `--draft` prints a minimal policy for review instead of the diff.
use caffe_sandbox_seccomp::{profile_from_strace, Policy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        eprintln!("usage: profile STRACE_FILE [worker|run-tool|POLICY.json] [--draft]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let policy = match args.get(1).map(String::as_str) {
        None | Some("worker") => Policy::worker(),
        Some("run-tool") => Policy::run_tool(),
        Some(path) => Policy::load(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}")),
    };
    let profile = profile_from_strace(&text);
    if args.iter().any(|a| a == "--draft") {
        print!(
            "{}",
            profile.minimal_policy_json(&policy.name, &policy.never_allow)
        );
        return;
    }
    println!("{} syscalls observed:", profile.counts.len());
    for (name, n) in &profile.counts {
        println!("  {name:<20} {n}");
    }
    print!("{}", profile.compare(&policy).render());
}
