//! `caffe-sandbox infer`: one sandboxed worker, one model, every input answered with a result or an error.
use crate::exit;
use crate::options::{FirewallArgs, SandboxArgs};
use caffe_sandbox_preprocess::top_k;
use caffe_sandbox_supervisor::{Error, ModelBundle, Output, Worker};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// Model directory: deploy.prototxt, weights (*.caffemodel), optional model.toml and labels.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Images (JPEG/PNG/BMP/GIF, decoded inside the sandbox) or raw .npy float tensors.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// How many classes to print per input.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub firewall: FirewallArgs,
    #[command(flatten)]
    pub isolation: crate::isolation::IsolationArgs,
}

struct Answer {
    input: PathBuf,
    result: Result<Vec<Output>, Error>,
}

pub fn run(args: InferArgs) -> i32 {
    let audit = args.sandbox.audit();
    let mut cfg = match args.sandbox.launch_config() {
        Ok(c) => c,
        Err(e) => return report_fatal(&args, &e),
    };
    let mut deadlines = args.sandbox.deadlines();
    let tier = match args.isolation.prepare(&mut cfg, &mut deadlines) {
        Ok(t) => t,
        Err(e) => return report_fatal(&args, &e),
    };
    let model = match ModelBundle::from_dir_with(
        &args.model,
        &args.firewall.file_limits(),
        &args.firewall.mode(),
        &args.firewall.integrity(),
    ) {
        Ok(m) => m,
        Err(e) => {
            audit.record(
                "model_refused",
                &json!({ "model": args.model, "error": e.to_string(), "label": e.label() }),
            );
            return report_fatal(&args, &e);
        }
    };
    let start = |audit: &caffe_sandbox_supervisor::AuditLog| -> Result<Worker, Error> {
        let mut w = tier.start(&cfg, deadlines.clone())?;
        audit.record(
            "worker_started",
            &json!({ "pid": w.pid(), "layers": w.layers() }),
        );
        w.load(&model)?;
        audit.record(
            "model_loaded",
            &json!({ "model": args.model, "pid": w.pid(), "info": w.model_info() }),
        );
        Ok(w)
    };
    let mut worker = match start(&audit) {
        Ok(w) => w,
        Err(e) => {
            audit.record(
                "load_failed",
                &json!({ "model": args.model, "error": e.to_string(), "label": e.label() }),
            );
            return report_fatal(&args, &e);
        }
    };
    let layers = worker.layers();
    let info = worker.model_info().cloned().expect("loaded");
    let input_name = model
        .input_name()
        .map(str::to_string)
        .or_else(|| info.inputs.first().map(|b| b.name.clone()))
        .unwrap_or_else(|| "data".into());

    let mut answers = Vec::new();
    for path in &args.inputs {
        let input = match crate::workload::read_input(path, &input_name) {
            Ok(i) => i,
            Err(e) => {
                answers.push(Answer {
                    input: path.clone(),
                    result: Err(e),
                });
                continue;
            }
        };
        if !worker.is_alive() {
            // The previous input killed the worker: a fresh one serves the rest (nothing is lost).
            match start(&audit) {
                Ok(w) => worker = w,
                Err(e) => {
                    answers.push(Answer {
                        input: path.clone(),
                        result: Err(e),
                    });
                    continue;
                }
            }
        }
        let result = worker.infer(&[input]);
        audit.record(
            "request",
            &json!({
                "model": args.model, "input": path, "pid": worker.pid(),
                "outcome": match &result { Ok(_) => "ok".to_string(), Err(e) => e.label().to_string() },
                "error": result.as_ref().err().map(|e| e.to_string()),
            }),
        );
        answers.push(Answer {
            input: path.clone(),
            result,
        });
    }
    worker.shutdown();

    let output_name = model.output_name().map(str::to_string);
    let mut code = exit::OK;
    for a in &answers {
        if let Err(e) = &a.result {
            let c = exit::code_for(e);
            if code == exit::OK || c > code {
                code = c;
            }
        }
    }
    if args.json {
        let items: Vec<_> = answers
            .iter()
            .map(|a| match &a.result {
                Ok(outs) => {
                    let top = pick_output(outs, output_name.as_deref()).map(|o| classes(o, &model, args.top_k));
                    json!({ "input": a.input, "outputs": outs, "top_k": top })
                }
                Err(e) => json!({ "input": a.input, "error": { "kind": e.label(), "message": e.to_string(),
                    "stderr_tail": stderr_tail(e) } }),
            })
            .collect();
        let doc = json!({ "model": args.model, "results": items, "layers": layers, "audit_log": audit.path() });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for a in &answers {
            match &a.result {
                Ok(outs) => {
                    println!("{}:", a.input.display());
                    match pick_output(outs, output_name.as_deref()) {
                        Some(o) => {
                            for c in classes(o, &model, args.top_k) {
                                println!(
                                    "  {:>10.6}  {}",
                                    c["score"].as_f64().unwrap_or(f64::NAN),
                                    c["label"].as_str().unwrap_or("")
                                );
                            }
                        }
                        None => println!("  (no outputs)"),
                    }
                }
                Err(e) => println!("{}: error [{}]: {e}", a.input.display(), e.label()),
            }
        }
        println!();
        println!("isolation layers in force:");
        print!("{layers}");
    }
    code
}

fn stderr_tail(e: &Error) -> Option<String> {
    match e {
        Error::Worker { stderr_tail, .. } if !stderr_tail.is_empty() => Some(
            stderr_tail
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
        ),
        _ => None,
    }
}

fn pick_output<'a>(outs: &'a [Output], wanted: Option<&str>) -> Option<&'a Output> {
    match wanted {
        Some(w) => outs.iter().find(|o| o.name == w),
        None => outs.last(),
    }
}

fn classes(o: &Output, model: &ModelBundle, k: usize) -> Vec<serde_json::Value> {
    top_k(&o.data, k)
        .into_iter()
        .map(|(i, score)| {
            let label = model
                .labels
                .as_ref()
                .and_then(|l| l.get(i))
                .cloned()
                .unwrap_or_else(|| format!("class {i}"));
            json!({ "index": i, "label": label, "score": score })
        })
        .collect()
}

fn report_fatal(args: &InferArgs, e: &Error) -> i32 {
    if args.json {
        let doc = json!({ "model": args.model, "error": { "kind": e.label(), "message": e.to_string(),
            "stderr_tail": stderr_tail(e) } });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        eprintln!("caffe-sandbox: error [{}]: {e}", e.label());
        if let Some(t) = stderr_tail(e) {
            eprintln!("--- worker stderr (last lines, sanitized) ---\n{t}");
        }
    }
    exit::code_for(e)
}
