//! The real Python Triton client (`tritonclient[http]`, PyPI) against `caffe-sandbox serve`: health, metadata,
//! inference in binary and JSON modes, classification. Needs the venv made by scripts/python-env.
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn tritonclient_http_against_the_server() {
    let python = repo().join(".cache/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/python-env (called by scripts/setup) to install the pinned tritonclient[http]",
        python.display()
    );
    let s = Server::start(&["--model", open_nsfw().to_str().unwrap(), "--workers", "2"]);
    s.wait_ready(Duration::from_secs(90));
    let mut expected = serde_json::Map::new();
    for name in ["chelsea.png", "coffee.png"] {
        expected.insert(name.into(), cli_probs(&sample(name)).into());
    }
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo().join("crates/server/tests/python"))
        .env("CS_SERVER_URL", format!("127.0.0.1:{}", s.port))
        .env("CS_MODEL", "open_nsfw")
        .env("CS_SAMPLES", repo().join(".cache/samples"))
        .env(
            "CS_EXPECTED",
            serde_json::Value::Object(expected).to_string(),
        )
        .output()
        .expect("run pytest");
    let text = format!(
        "{}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    let summary = String::from_utf8_lossy(&out.stdout);
    let passed: usize = summary
        .lines()
        .rev()
        .find_map(|l| {
            l.split(" passed")
                .next()
                .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or(0);
    assert!(passed >= 9, "expected the 9 client tests to pass:\n{text}");
    assert!(!summary.contains("skipped"), "{text}");
}
