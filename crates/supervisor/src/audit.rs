//! Append-only audit log: one JSON object per line for every worker start, load, request outcome and failure.
//! Opened with O_APPEND so concurrent writers (CLI runs, server workers) never interleave within a line
//! (each record is written with a single write(2) and is far below PIPE_BUF-like atomicity concerns for
//! regular files on local filesystems).
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where audit records go. Cloning shares the file.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Mutex<(PathBuf, std::fs::File)>>>,
}

impl AuditLog {
    /// A log that drops every record (library users who did not ask for one).
    pub fn disabled() -> AuditLog {
        AuditLog { inner: None }
    }

    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            inner: Some(Arc::new(Mutex::new((path.to_path_buf(), file)))),
        })
    }

    /// The file, if enabled.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner
            .as_ref()
            .map(|i| i.lock().unwrap_or_else(|e| e.into_inner()).0.clone())
    }

    /// Appends one record: `{"ts": <unix seconds>, "event": <event>, ...fields}`.
    pub fn record<T: Serialize>(&self, event: &str, fields: &T) {
        let Some(inner) = &self.inner else { return };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut obj = match serde_json::to_value(fields) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(other) => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
            Err(e) => {
                let mut m = serde_json::Map::new();
                m.insert("serialize_error".into(), e.to_string().into());
                m
            }
        };
        obj.insert("ts".into(), ts.into());
        obj.insert("event".into(), event.into());
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
        // An audit write failure must not take down inference; it is reported on stderr.
        if let Err(e) = guard.1.write_all(line.as_bytes()) {
            eprintln!("caffe-sandbox: audit log {}: {e}", guard.0.display());
        }
    }
}
