//! `cargo run --release --example inspect -- MODEL_DIR [--json]`: print the firewall's report.

use std::time::Instant;

use caffe_sandbox_firewall::{inspect_dir, FirewallPolicy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: inspect MODEL_DIR [--json]");
        std::process::exit(2);
    };
    let t = Instant::now();
    let report = match inspect_dir(dir.as_ref(), &FirewallPolicy::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let took = t.elapsed();
    if args.iter().any(|a| a == "--json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        println!("{report}");
    }
    eprintln!("inspect took {took:?}");
    std::process::exit(i32::from(!report.accepted));
}
