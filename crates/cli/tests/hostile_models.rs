//! Hostile models (classes from shared/notes/threats.md) through the real Caffe in the real sandbox.
//! With the firewall OFF the sandbox itself is what is tested: each model must fail with the right `kind`, the
//! host filesystem must be unchanged (checked from the host side), and the content of host files the model
//! names (a secret marker) must appear nowhere: not in the result, the error, the stderr tail or the audit log.
//! With the firewall ON (the default) each is refused before Caffe sees it, with the right finding.
//! (SIGFPE, SIGSEGV, the unknown-layer CHECK, the InnerProduct memory bomb and the slow model are in infer.rs.)
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A host directory holding a secret file (world-readable, so only the sandbox can keep it from the worker),
/// a FIFO, and the marker that must never leak.
struct Host {
    dir: TempDir,
    secret: PathBuf,
    fifo: PathBuf,
    marker: String,
}

fn host(tag: &str) -> Host {
    let dir = tmpdir(tag);
    set_mode(&dir, 0o1777);
    let marker = format!("CSSECRETMARKER{}x{}", std::process::id(), tag.len());
    let secret = dir.join("secret.txt");
    // Looks like each source format's first line: an image list, an HDF5 list, a window file.
    std::fs::write(
        &secret,
        format!("{m}.png 0\n/{m}.h5\n# 0\n{m}\n3\n8\n8\n1\n", m = marker),
    )
    .unwrap();
    set_mode(&secret, 0o644);
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    Host {
        dir,
        secret,
        fifo,
        marker,
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    v.sort();
    v
}

struct Case {
    name: &'static str,
    prototxt: String,
    /// Acceptable kinds with the firewall off.
    kinds: &'static [&'static str],
    /// Host paths that must not exist afterwards.
    absent: Vec<PathBuf>,
    /// Text the firewall's refusal must contain.
    finding: &'static str,
}

const TWO_TOPS: &str = r#"layer { name: "in" type: "Input" top: "data" top: "label" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
"#;

fn cases(h: &Host, tmp_h5: &Path) -> Vec<Case> {
    let s = h.secret.display().to_string();
    let under = h.dir.join("out.h5");
    let lmdb = h.dir.join("lmdb");
    let leveldb = h.dir.join("leveldb");
    vec![
        Case {
            name: "hdf5_output_to_host_tmp",
            prototxt: format!(
                "{TWO_TOPS}layer {{ name: \"o\" type: \"HDF5Output\" bottom: \"data\" bottom: \"label\" hdf5_output_param {{ file_name: \"{}\" }} }}\n",
                tmp_h5.display()
            ),
            kinds: &["seccomp_violation"],
            absent: vec![tmp_h5.to_path_buf()],
            finding: "HDF5Output",
        },
        Case {
            name: "hdf5_output_under_test_dir",
            prototxt: format!(
                "{TWO_TOPS}layer {{ name: \"o\" type: \"HDF5Output\" bottom: \"data\" bottom: \"label\" hdf5_output_param {{ file_name: \"{}\" }} }}\n",
                under.display()
            ),
            kinds: &["seccomp_violation"],
            absent: vec![under.clone()],
            finding: "HDF5Output",
        },
        Case {
            name: "image_data_source",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"ImageData\" top: \"data\" top: \"label\" image_data_param {{ source: \"{s}\" root_folder: \"{}/\" batch_size: 1 }} }}\n",
                h.dir.display()
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "ImageData",
        },
        Case {
            name: "hdf5_data_source",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"HDF5Data\" top: \"data\" top: \"label\" hdf5_data_param {{ source: \"{s}\" batch_size: 1 }} }}\n"
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "HDF5Data",
        },
        Case {
            name: "window_data_source",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"WindowData\" top: \"data\" top: \"label\" window_data_param {{ source: \"{s}\" batch_size: 1 }} }}\n"
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "WindowData",
        },
        Case {
            name: "data_lmdb_creates_lock_files",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"Data\" top: \"data\" top: \"label\" data_param {{ source: \"{}\" backend: LMDB batch_size: 1 }} }}\n",
                lmdb.display()
            ),
            kinds: &["caffe_check_failed", "seccomp_violation"],
            absent: vec![lmdb.clone()],
            finding: "Data",
        },
        Case {
            name: "data_leveldb_creates_directories",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"Data\" top: \"data\" top: \"label\" data_param {{ source: \"{}\" backend: LEVELDB batch_size: 1 }} }}\n",
                leveldb.display()
            ),
            kinds: &["seccomp_violation"],
            absent: vec![leveldb.clone()],
            finding: "Data",
        },
        Case {
            name: "transform_mean_file",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"MemoryData\" top: \"data\" top: \"label\" transform_param {{ mean_file: \"{s}\" }} memory_data_param {{ batch_size: 1 channels: 3 height: 8 width: 8 }} }}\n"
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "mean_file",
        },
        Case {
            name: "infogain_source",
            prototxt: format!(
                "{TWO_TOPS}layer {{ name: \"l\" type: \"InfogainLoss\" bottom: \"data\" bottom: \"label\" top: \"loss\" infogain_loss_param {{ source: \"{s}\" }} }}\n"
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "InfogainLoss",
        },
        Case {
            name: "host_fifo_as_source",
            prototxt: format!(
                "layer {{ name: \"d\" type: \"ImageData\" top: \"data\" top: \"label\" image_data_param {{ source: \"{}\" batch_size: 1 }} }}\n",
                h.fifo.display()
            ),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "ImageData",
        },
        Case {
            name: "dev_zero_as_source",
            prototxt: "layer { name: \"d\" type: \"ImageData\" top: \"data\" top: \"label\" image_data_param { source: \"/dev/zero\" batch_size: 1 } }\n".into(),
            kinds: &["caffe_check_failed"], // /dev/zero is not in the sandbox's /dev
            absent: vec![],
            finding: "ImageData",
        },
        Case {
            name: "dev_zero_as_mean_file",
            prototxt: "layer { name: \"d\" type: \"MemoryData\" top: \"data\" top: \"label\" transform_param { mean_file: \"/dev/zero\" } memory_data_param { batch_size: 1 channels: 3 height: 8 width: 8 } }\n".into(),
            kinds: &["caffe_check_failed"], // /dev/zero is not in the sandbox's /dev
            absent: vec![],
            finding: "mean_file",
        },
        Case {
            // /dev/urandom is in the sandbox's /dev: an endless "image list" grows memory until RLIMIT_AS.
            name: "dev_urandom_as_image_list",
            prototxt: "layer { name: \"d\" type: \"ImageData\" top: \"data\" top: \"label\" image_data_param { source: \"/dev/urandom\" batch_size: 1 } }\n".into(),
            kinds: &["memory_limit"],
            absent: vec![],
            finding: "ImageData",
        },
        Case {
            name: "dev_urandom_as_mean_file",
            prototxt: "layer { name: \"d\" type: \"MemoryData\" top: \"data\" top: \"label\" transform_param { mean_file: \"/dev/urandom\" } memory_data_param { batch_size: 1 channels: 3 height: 8 width: 8 } }\n".into(),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "mean_file",
        },
        Case {
            // More elements than the protocol can describe: the worker refuses to report it (no allocation).
            name: "huge_input_blob",
            prototxt: "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 40000 dim: 40000 } } }\nlayer { name: \"r\" type: \"ReLU\" bottom: \"data\" top: \"r\" }\n".into(),
            kinds: &["bad_model"],
            absent: vec![],
            finding: "",
        },
        Case {
            // 20000 x 3 x 100 x 100 convolution weights (2.4 GB, filled at construction) under a 1 GiB limit.
            name: "huge_weight_blob",
            prototxt: "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 100 dim: 100 } } }\nlayer { name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" convolution_param { num_output: 20000 kernel_size: 100 } }\n".into(),
            kinds: &["memory_limit"],
            absent: vec![],
            finding: "",
        },
        Case {
            name: "zero_kernel_check_abort",
            prototxt: "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\nlayer { name: \"p\" type: \"Pooling\" bottom: \"data\" top: \"p\" pooling_param { kernel_size: 0 } }\n".into(),
            kinds: &["caffe_check_failed"],
            absent: vec![],
            finding: "kernel",
        },
    ]
}

fn infer(who: As, dir: &Path, firewall_off: bool) -> (std::process::Output, String, Duration) {
    let img = sample("chelsea.png");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "infer".as_ref(),
        "--json".as_ref(),
        "--memory-limit".as_ref(),
        "1024".as_ref(),
        "--load-timeout".as_ref(),
        "8".as_ref(),
        "--model".as_ref(),
        dir.as_os_str(),
    ];
    if firewall_off {
        args.push("--firewall".as_ref());
        args.push("off".as_ref());
    }
    args.push(img.as_os_str());
    let t = Instant::now();
    let (out, log) = run_with_audit(who, &args);
    (out, log, t.elapsed())
}

fn error_of(v: &serde_json::Value) -> serde_json::Value {
    if v["error"].is_object() {
        v["error"].clone()
    } else {
        v["results"][0]["error"].clone()
    }
}

fn check_case(who: As, h: &Host, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let d = model_dir(case.name, &case.prototxt, b"");
    let before = snapshot(&h.dir);
    let (out, log, took) = infer(who, &d, true);
    let all = format!("{}\n{log}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let e = error_of(&v);
    let kind = e["kind"].as_str().unwrap_or("<none>");
    if !case.kinds.contains(&kind) {
        failures.push(format!(
            "{who:?} {}: kind {kind}, want {:?}\n{all}",
            case.name, case.kinds
        ));
    }
    if out.status.code() == Some(0) {
        failures.push(format!("{who:?} {}: exit 0", case.name));
    }
    if all.contains(&h.marker) {
        failures.push(format!(
            "{who:?} {}: the secret marker leaked:\n{all}",
            case.name
        ));
    }
    if took > Duration::from_secs(40) {
        failures.push(format!("{who:?} {}: took {took:?}", case.name));
    }
    for p in &case.absent {
        if p.symlink_metadata().is_ok() {
            failures.push(format!(
                "{who:?} {}: {} exists on the host",
                case.name,
                p.display()
            ));
        }
    }
    if snapshot(&h.dir) != before {
        failures.push(format!(
            "{who:?} {}: the host dir changed: {:?} -> {:?}",
            case.name,
            before,
            snapshot(&h.dir)
        ));
    }
    failures
}

#[test]
fn hostile_models_are_contained_and_reported_with_the_firewall_off() {
    let h = host("hostile");
    let tmp_h5 = PathBuf::from(format!("/tmp/cs-hostile-{}.h5", std::process::id()));
    let all = cases(&h, &tmp_h5);
    let mut failures = Vec::new();
    for case in &all {
        failures.extend(check_case(As::Invoker, &h, case));
    }
    // Rootless: the file-writing and file-reading classes again as uid 65534.
    if both()[1] == As::Unprivileged {
        for case in all.iter().filter(|c| {
            [
                "hdf5_output_to_host_tmp",
                "image_data_source",
                "data_leveldb_creates_directories",
                "transform_mean_file",
            ]
            .contains(&c.name)
        }) {
            failures.extend(check_case(As::Unprivileged, &h, case));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_firewall_refuses_each_hostile_model_with_the_right_finding() {
    let h = host("fw");
    let tmp_h5 = PathBuf::from(format!("/tmp/cs-hostile-fw-{}.h5", std::process::id()));
    let mut failures = Vec::new();
    for case in cases(&h, &tmp_h5) {
        let d = model_dir(case.name, &case.prototxt, b"");
        let (out, log, _) = infer(As::Invoker, &d, false);
        let all = format!("{}\n{log}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let e = error_of(&v);
        let msg = e["message"].as_str().unwrap_or_default();
        if e["kind"] != "firewall" || !msg.contains(case.finding) {
            failures.push(format!(
                "{}: want firewall/{}, got {e}",
                case.name, case.finding
            ));
        }
        if out.status.code() != Some(3) {
            failures.push(format!("{}: exit {:?}", case.name, out.status.code()));
        }
        if all.contains(&h.marker) {
            failures.push(format!("{}: marker leaked:\n{all}", case.name));
        }
        for p in &case.absent {
            if p.symlink_metadata().is_ok() {
                failures.push(format!("{}: {} exists", case.name, p.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_model_file_that_is_a_fifo_does_not_hang_the_supervisor() {
    // weights.caffemodel is a FIFO with no writer: the supervisor must not block on it.
    let d = tmpdir("fifo-weights");
    std::fs::write(d.join("deploy.prototxt"), TWO_TOPS).unwrap();
    set_mode(&d.join("deploy.prototxt"), 0o644);
    let c = std::ffi::CString::new(d.join("weights.caffemodel").to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    for off in [true, false] {
        let (out, _, took) = infer(As::Invoker, &d, off);
        let e = error_of(&serde_json::from_slice(&out.stdout).unwrap_or_default());
        assert_eq!(e["kind"], "file", "{}", text(&out));
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
}

/// A hostile model directory pointing its labels (or any model file) at a host file: the supervisor opens model
/// files with openat2(RESOLVE_BENEATH), so the link is refused and no byte of the target reaches the output.
#[test]
fn symlinks_leading_out_of_the_model_directory_are_refused_without_leaking() {
    let src = open_nsfw();
    let secret_dir = tmpdir("link-secret");
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, "sfw\nSECRET-MARKER-7f3a\n").unwrap();
    set_mode(&secret, 0o644);
    let d = tmpdir("link-model");
    for f in [
        "deploy.prototxt",
        "resnet_50_1by2_nsfw.caffemodel",
        "model.toml",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
        set_mode(&d.join(f), 0o644);
    }
    std::os::unix::fs::symlink(&secret, d.join("labels.txt")).unwrap();
    let img = sample("chelsea.png");
    for who in both() {
        let out = infer_json(who, &d, &[&img]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{who:?}: {all}");
        assert!(all.contains("outside the model directory"), "{all}");
        assert!(!all.contains("SECRET-MARKER-7f3a"), "{all}");
    }
}
