//! `cargo run --release --example bench_vs_caffe -- MODEL_DIR CAFFE_PREFIX`
//!
//! Compares the firewall's `inspect` (and `check` with canonical bytes) with the real Caffe's own
//! model load (Net construction + CopyTrainedLayersFrom, from the glog timestamps of `caffe test`
//! between "Use CPU." and "Running for"), measured in the same run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use caffe_sandbox_firewall::{check, inspect, model_files, FirewallPolicy};

/// Seconds since midnight of a glog line `I1204 20:47:37.502385 ...`.
fn glog_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().nth(1)?;
    let mut it = t.split(':');
    let (h, m, s) = (
        it.next()?.parse::<f64>().ok()?,
        it.next()?.parse::<f64>().ok()?,
        it.next()?.parse::<f64>().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn caffe_load(prefix: &Path, proto: &Path, weights: &Path) -> Duration {
    let lib = format!("{0}/usr/lib/x86_64-linux-gnu:{0}/usr/lib", prefix.display());
    let out = Command::new(prefix.join("usr/bin/caffe"))
        .args(["test", "-iterations", "1", "-model"])
        .arg(proto)
        .arg("-weights")
        .arg(weights)
        .env("LD_LIBRARY_PATH", lib)
        .env("GLOG_logtostderr", "1")
        .output()
        .expect("caffe");
    let log = String::from_utf8_lossy(&out.stderr);
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(glog_time)
            .expect(needle)
    };
    Duration::from_secs_f64(at("Running for") - at("Use CPU."))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, prefix] = args.as_slice() else {
        eprintln!("usage: bench_vs_caffe MODEL_DIR CAFFE_PREFIX");
        std::process::exit(2);
    };
    let (p, w) = model_files(dir.as_ref()).expect("model dir");
    let w = w.expect("caffemodel");
    let policy = FirewallPolicy::default();
    let mut caffe = Vec::new();
    let mut insp = Vec::new();
    let mut chk = Vec::new();
    let mut read = Vec::new();
    for _ in 0..7 {
        caffe.push(caffe_load(prefix.as_ref(), &p, &w));
        let t = Instant::now();
        let (pb, wb) = (
            std::fs::read(&p).expect("read"),
            std::fs::read(&w).expect("read"),
        );
        read.push(t.elapsed());
        let t = Instant::now();
        assert!(inspect(&pb, Some(&wb), &policy).accepted);
        insp.push(t.elapsed());
        let t = Instant::now();
        let m = check(&pb, Some(&wb), &policy).expect("accepted");
        let _ = (m.canonical_net_bytes(), m.canonical_weights_bytes());
        chk.push(t.elapsed());
    }
    let (c, i, k) = (median(caffe), median(insp), median(chk));
    println!("caffe load (Net + CopyTrainedLayersFrom, glog to stderr): {c:?}");
    println!("reading the two files: {:?}", median(read));
    println!(
        "firewall inspect (bytes in memory): {i:?} = {:.1}% of caffe load",
        100.0 * i.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "firewall check + canonical bytes (files already read): {k:?} = {:.1}%",
        100.0 * k.as_secs_f64() / c.as_secs_f64()
    );
}
