//! `caffe-inprocess`: the in-process baseline — the same libcaffe, the same shim and the same preprocessing
//! as the sandboxed worker, called directly in this process with no sandbox and no protocol. Used by the golden
//! tests (outputs must match the sandboxed path) and by `caffe-sandbox bench` (timings to compare against).
//!
//! Usage: caffe-inprocess --model DIR (--image FILE | --constant V) [--iters N]
//! Prints one JSON object (one line): timings in milliseconds and every output blob. Each forward includes
//! decoding and preprocessing the image, as each sandboxed request does.
use caffe_sandbox_preprocess::{DecodeLimits, ModelConfig};
use caffe_sandbox_worker::engine::{self, Net, NetFormat};
use caffe_sandbox_worker::pipeline::image_to_tensor;
use std::path::PathBuf;
use std::time::Instant;

extern "C" fn fatal(msg: *const std::ffi::c_char, len: usize) {
    // SAFETY: the shim passes a buffer of `len` bytes.
    let text = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    eprintln!(
        "caffe-inprocess: Caffe CHECK failed: {}",
        String::from_utf8_lossy(text)
    );
    std::process::exit(70);
}

struct Args {
    model: PathBuf,
    image: Option<PathBuf>,
    constant: Option<f32>,
    iters: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut image, mut constant, mut iters) = (None, None, None, 0usize);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(val()?)),
            "--image" => image = Some(PathBuf::from(val()?)),
            "--constant" => {
                constant = Some(val()?.parse().map_err(|e| format!("--constant: {e}"))?)
            }
            "--iters" => iters = val()?.parse().map_err(|e| format!("--iters: {e}"))?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let model = model.ok_or("--model DIR is required")?;
    if image.is_none() == constant.is_none() {
        return Err("give exactly one of --image FILE or --constant V".into());
    }
    Ok(Args {
        model,
        image,
        constant,
        iters,
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run(args: Args) -> Result<(), String> {
    let cfg = ModelConfig::load_from_dir(&args.model).map_err(|e| e.to_string())?;
    let proto_path = cfg.prototxt_path(&args.model).map_err(|e| e.to_string())?;
    let weights_path = cfg.weights_path(&args.model).map_err(|e| e.to_string())?;
    let proto = std::fs::read(&proto_path).map_err(|e| format!("{}: {e}", proto_path.display()))?;
    let weights =
        std::fs::read(&weights_path).map_err(|e| format!("{}: {e}", weights_path.display()))?;
    engine::init(1, fatal).map_err(|e| e.to_string())?;

    let t = Instant::now();
    let mut net = Net::new(&proto, NetFormat::Text, Some(&weights)).map_err(|e| e.to_string())?;
    let load_ms = ms(t);
    let input = cfg
        .model
        .input
        .clone()
        .or_else(|| net.input_names().first().cloned())
        .ok_or("net has no input")?;
    let dims = net.blob_shape(&input).map_err(|e| e.to_string())?;
    // Each request prepares its input from the encoded bytes, exactly as the worker does per request.
    let image = match &args.image {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let prepare = || -> Result<Vec<f32>, String> {
        match (&image, args.constant) {
            (Some(bytes), _) => {
                image_to_tensor(bytes, &cfg.preprocess, &dims, &DecodeLimits::default())
                    .map_err(|e| e.to_string())
            }
            (None, Some(v)) => Ok(vec![v; dims.iter().product()]),
            _ => unreachable!("checked in parse_args"),
        }
    };
    let t = Instant::now();
    let data = prepare()?;
    net.set_input(&input, &dims, &data)
        .map_err(|e| e.to_string())?;
    net.forward().map_err(|e| e.to_string())?;
    let first_forward_ms = ms(t);
    let mut steady = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        let data = prepare()?;
        net.set_input(&input, &dims, &data)
            .map_err(|e| e.to_string())?;
        net.forward().map_err(|e| e.to_string())?;
        steady.push(ms(t));
    }
    let mut outputs = serde_json::Map::new();
    for name in net.output_names() {
        let (shape, values) = net.blob(&name).map_err(|e| e.to_string())?;
        outputs.insert(name, serde_json::json!({ "dims": shape, "data": values }));
    }
    emit(&serde_json::json!({
        "load_ms": load_ms,
        "first_forward_ms": first_forward_ms,
        "steady_forward_ms": steady,
        "input": { "name": input, "dims": dims },
        "outputs": outputs,
    }))?;
    Ok(())
}

/// One JSON line on stdout, flushed (the bench waits for it).
fn emit(v: &serde_json::Value) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

fn main() {
    match parse_args().and_then(run) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("caffe-inprocess: {e}");
            std::process::exit(2);
        }
    }
}
