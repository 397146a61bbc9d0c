//! Experiment helper: run a command in the jail and print the layer report and its output.
//!
//! `cargo run -p caffe-sandbox-jail --example jail-run -- [--proc] [--ro PATH]… [--ro-noexec PATH]…
//!  [--env K=V]… [--as BYTES] [--scratch BYTES] [--allow-weaker LAYER]… -- PROGRAM ARGS…`

use std::io::Read;

use caffe_sandbox_jail::*;

fn main() {
    stage2_main_if_requested();
    let mut args = std::env::args().skip(1);
    let mut ro = Vec::new();
    let mut ro_noexec = Vec::new();
    let mut env = Vec::new();
    let mut proc_ = false;
    let mut as_limit = None;
    let mut scratch = 64u64 << 20;
    let mut allow = Vec::new();
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--proc" => proc_ = true,
            "--ro" => ro.push(args.next().expect("path")),
            "--ro-noexec" => ro_noexec.push(args.next().expect("path")),
            "--env" => env.push(args.next().expect("K=V")),
            "--as" => as_limit = Some(args.next().expect("bytes").parse::<u64>().expect("number")),
            "--scratch" => scratch = args.next().expect("bytes").parse().expect("number"),
            "--allow-weaker" => {
                allow.push(args.next().expect("layer").parse::<Layer>().expect("layer"))
            }
            "--" => {
                cmd.extend(args.by_ref());
            }
            _ => panic!("unknown option {a}"),
        }
    }
    let mut spec = SandboxSpec::new(&cmd[0]);
    spec.args = cmd[1..].iter().map(Into::into).collect();
    spec.ro_paths = ro.iter().map(Into::into).collect();
    spec.ro_noexec_paths = ro_noexec.iter().map(Into::into).collect();
    spec.env = env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("K=V");
            (k.into(), v.into())
        })
        .collect();
    if proc_ {
        spec.proc = ProcMode::PrivatePidNs;
    }
    spec.limits.address_space = as_limit;
    spec.limits.file_size = Some(1 << 30);
    spec.limits.nofile = Some(256);
    spec.scratch = Some(ScratchSpec {
        path: "/scratch".into(),
        size_bytes: scratch,
    });
    spec.allow_weaker.extend(allow);
    let sb = match spawn(&spec) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("jail-run: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("{}spawn: {:?}", sb.layers, sb.spawn_time);
    let mut out = Vec::new();
    std::fs::File::from(sb.stderr.try_clone().expect("dup"))
        .take(1 << 20)
        .read_to_end(&mut out)
        .expect("read");
    let status = sb.wait().expect("wait");
    print!("{}", String::from_utf8_lossy(&out));
    eprintln!("jail-run: {status:?}");
}
