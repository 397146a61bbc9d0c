//! caffe-sandbox's supervisor: starts sandboxed workers that run the real BVLC Caffe 1.0, hands them models as
//! sealed memfds, runs requests, and turns every failure into a typed error whose cause the supervisor
//! established itself. This crate never links C/C++ model code; everything the worker sends is hostile input.
//!
//! ```no_run
//! use caffe_sandbox_supervisor::{Input, LaunchConfig, ModelBundle, Worker};
//! let cfg = LaunchConfig::discover()?;
//! let model = ModelBundle::from_dir("models/open_nsfw".as_ref(), &Default::default())?;
//! let mut worker = Worker::start(&cfg, Default::default())?;
//! worker.load(&model)?;
//! let out = worker.infer(&[Input::Image { name: "data".into(), bytes: std::fs::read("cat.png")? }])?;
//! println!("{:?} — layers in force: {}", out[0].data, worker.layers());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod audit;
pub mod elf_deps;
pub mod error;
pub mod files;
pub mod launch;
pub mod model;
pub mod probe;
pub mod process;
pub mod run_tool;
pub mod seccomp_watch;
pub mod worker;

pub use audit::AuditLog;
pub use caffe_sandbox_jail::{Layer, LayerReport, LayerState};
pub use error::{Error, Result, WorkerFailure};
pub use launch::{LaunchConfig, ResourceLimits};
pub use model::{FirewallMode, Integrity, ModelBundle, ModelFileLimits};
pub use process::{ExitStatus, ExitStatusExt};
pub use worker::{BlobShape, Deadlines, Input, ModelInfo, Output, Worker};
