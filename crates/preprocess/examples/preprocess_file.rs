//! Decode and preprocess an image file with a model directory's model.toml,
//! print timing and the first values: `cargo run --release --example
//! preprocess_file -- MODEL_DIR IMAGE C H W [OUT]`; OUT, if given, receives
//! the C×H×W values as little-endian f32.

use std::time::Instant;

use caffe_sandbox_preprocess::{decode_image, preprocess, DecodeLimits, ModelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 && args.len() != 7 {
        return Err("usage: preprocess_file MODEL_DIR IMAGE C H W [OUT]".into());
    }
    let cfg = ModelConfig::load_from_dir(std::path::Path::new(&args[1]))?;
    let bytes = std::fs::read(&args[2])?;
    let dims = [1, args[3].parse()?, args[4].parse()?, args[5].parse()?];
    let t = Instant::now();
    let img = decode_image(&bytes, &DecodeLimits::default())?;
    let t_dec = t.elapsed();
    let out = preprocess(&img, &cfg.preprocess, dims)?;
    println!(
        "{}x{} decoded in {:?}, preprocessed in {:?}; {} values, first {:?}",
        img.height,
        img.width,
        t_dec,
        t.elapsed() - t_dec,
        out.len(),
        &out[..4.min(out.len())]
    );
    if let Some(path) = args.get(6) {
        let raw: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, raw)?;
    }
    Ok(())
}
