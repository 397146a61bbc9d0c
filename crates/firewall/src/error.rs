//! Errors of the firewall's library API (I/O and integrity); model problems are [`crate::Finding`]s.

use std::path::PathBuf;

/// Errors returned by the firewall.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// Reading a model file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The model directory lacks a required file.
    #[error("model directory {dir}: {what}")]
    ModelDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The model was refused; the report lists the findings.
    #[error("model refused by the firewall: {summary}")]
    Refused {
        /// First error findings, one per line.
        summary: String,
        /// The full report.
        report: Box<crate::Report>,
    },
    /// A file's digest differs from the manifest.
    #[error("digest mismatch for {file}: expected sha256 {expected}, actual {actual}")]
    DigestMismatch {
        /// File name as listed in the manifest.
        file: String,
        /// Digest pinned in the manifest.
        expected: String,
        /// Digest of the file's bytes.
        actual: String,
    },
    /// The manifest is malformed or incomplete.
    #[error("manifest: {0}")]
    Manifest(String),
    /// Signature verification failed.
    #[error("signature: {0}")]
    Signature(String),
}
