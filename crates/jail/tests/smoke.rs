use caffe_sandbox_jail::*;
#[test]
fn smoke() {
    let probe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_jail-test-probe"));
    let mut spec = SandboxSpec::new(&probe);
    spec.stage2_exe = Some(probe.clone());
    spec.ro_paths = vec![
        "/lib64/ld-linux-x86-64.so.2".into(),
        "/lib/x86_64-linux-gnu/libc.so.6".into(),
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
    ];
    spec.scratch = Some(ScratchSpec {
        path: "/scratch".into(),
        size_bytes: 1 << 20,
    });
    let sb = spawn(&spec).unwrap_or_else(|e| panic!("{e}"));
    println!("{}\n{:?}", sb.layers, sb.spawn_time);
    let st = sb.wait().unwrap();
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(sb.stderr)
        .read_to_string(&mut s)
        .unwrap();
    println!("{st:?} {s}");
}
