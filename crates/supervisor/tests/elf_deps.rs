//! The in-process library resolver (`elf_deps`) against the dynamic loader itself (`ld.so --list`) on real
//! binaries: the host's coreutils and Python, the Caffe tools of the prefix, the worker (with its DT_RPATH),
//! the supervisor. Each must give exactly the loader's set of files — or say it is unsupported, which this
//! test does not accept for these binaries (the fast path must cover them).
//!
//! Needs `scripts/setup` (the Caffe prefix) and the workspace built (`cargo test --workspace`).

use caffe_sandbox_supervisor::elf_deps::resolve;
use caffe_sandbox_supervisor::launch::{loader_list, prefix_lib_dirs};
use caffe_sandbox_supervisor::LaunchConfig;
use caffe_sandbox_testkit::built;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn prefix() -> PathBuf {
    LaunchConfig::discover()
        .expect("launch config (run scripts/setup and build the workspace)")
        .caffe_prefix
}

fn same_as_loader(program: &Path) -> usize {
    let prefix = prefix();
    let ours: BTreeSet<PathBuf> = resolve(program, &prefix_lib_dirs(&prefix))
        .unwrap_or_else(|e| panic!("{}: unsupported: {}", program.display(), e.0))
        .into_iter()
        .collect();
    let loader: BTreeSet<PathBuf> = loader_list(program, &prefix)
        .expect("ld.so --list")
        .into_iter()
        .collect();
    assert_eq!(
        ours,
        loader,
        "{}: only ours {:?}, only the loader's {:?}",
        program.display(),
        ours.difference(&loader).collect::<Vec<_>>(),
        loader.difference(&ours).collect::<Vec<_>>()
    );
    ours.len()
}

#[test]
fn host_programs_match_the_loader() {
    assert!(same_as_loader(Path::new("/bin/true")) >= 2);
    assert!(same_as_loader(Path::new("/usr/bin/python3")) >= 2);
}

#[test]
fn caffe_tools_match_the_loader() {
    let bin = prefix().join("usr/bin");
    // The Caffe tool pulls in the whole prefix (~146 libraries: Boost, OpenCV, HDF5, BLAS, protobuf, …).
    assert!(same_as_loader(&bin.join("caffe")) > 100);
    assert!(same_as_loader(&bin.join("compute_image_mean")) > 100);
}

#[test]
fn project_binaries_match_the_loader() {
    // The worker carries a DT_RPATH to the prefix.
    assert!(same_as_loader(&built("caffe-sandbox-worker")) > 100);
    assert!(same_as_loader(&built("caffe-sandbox")) >= 3);
}

#[test]
fn a_static_program_needs_nothing_and_a_missing_one_is_an_error() {
    // A file that is not an ELF program: the resolver does not guess.
    assert!(resolve(Path::new("/etc/passwd"), &[]).is_err());
    assert!(resolve(Path::new("/nonexistent/program"), &[]).is_err());
}
