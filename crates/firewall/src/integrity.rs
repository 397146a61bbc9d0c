//! Integrity: a manifest pinning the sha256 of model files, and minisign signatures.
//!
//! Manifest format (TOML):
//! ```toml
//! [files]
//! "deploy.prototxt" = "<sha256 hex>"
//! "resnet_50_1by2_nsfw.caffemodel" = "<sha256 hex>"
//! ```
//! A signature (`manifest.toml.minisig`) over the manifest's bytes, verified with a trusted
//! minisign public key, makes the whole model directory trusted.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::FirewallError;
use crate::sha256_hex;

/// Size cap for the manifest and its signature.
const MAX_SMALL_FILE: usize = 1 << 20;

/// A manifest of file name → sha256 hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// File names (relative to the model directory, no path separators) and digests.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Parse a TOML manifest.
    pub fn from_toml(text: &str) -> Result<Self, FirewallError> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| FirewallError::Manifest(e.to_string()))?;
        for (name, digest) in &m.files {
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(FirewallError::Manifest(format!(
                    "file name {name:?} must be a plain name"
                )));
            }
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FirewallError::Manifest(format!(
                    "digest of {name:?} is not 64 hex digits"
                )));
            }
        }
        Ok(m)
    }

    /// Render as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Build a manifest for the given files' bytes.
    pub fn for_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        Manifest {
            files: files
                .into_iter()
                .map(|(n, b)| (n.to_owned(), sha256_hex(b)))
                .collect(),
        }
    }

    /// Check one file's bytes against its pinned digest.
    pub fn verify_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), FirewallError> {
        let expected = self
            .files
            .get(name)
            .ok_or_else(|| FirewallError::Manifest(format!("{name:?} is not pinned")))?;
        let actual = sha256_hex(bytes);
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(FirewallError::DigestMismatch {
                file: name.to_owned(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Check every pinned file in `dir` (regular files only, hashed as a stream).
    pub fn verify_dir(&self, dir: &Path) -> Result<(), FirewallError> {
        for (name, expected) in &self.files {
            let actual = sha256_file(&dir.join(name))?;
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(FirewallError::DigestMismatch {
                    file: name.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// Hex sha256 of a regular file, read in chunks (FIFOs and devices are refused).
pub fn sha256_file(path: &Path) -> Result<String, FirewallError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| FirewallError::Io {
        path: path.to_owned(),
        source,
    };
    let regular = |m: std::fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(FirewallError::Manifest(format!(
                "{} is not a regular file",
                path.display()
            )))
        }
    };
    regular(std::fs::metadata(path).map_err(io)?)?;
    let mut f = std::fs::File::open(path).map_err(io)?;
    regular(f.metadata().map_err(io)?)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Verify a minisign signature (`.minisig` text) over `data` with a trusted public key
/// (the base64 key line or a full `minisign.pub` file).
pub fn verify_signature(
    trusted_key: &str,
    data: &[u8],
    signature: &str,
) -> Result<(), FirewallError> {
    let key_line = trusted_key
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| FirewallError::Signature("empty public key".into()))?;
    let pk = minisign_verify::PublicKey::from_base64(key_line)
        .map_err(|e| FirewallError::Signature(format!("public key: {e}")))?;
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| FirewallError::Signature(format!("signature: {e}")))?;
    pk.verify(data, &sig, false)
        .map_err(|e| FirewallError::Signature(format!("verification failed: {e}")))
}

/// Verify `manifest.toml` (and its `manifest.toml.minisig` when a key is given) in `dir`, then
/// every file it pins. Returns the manifest.
pub fn verify_model_dir(dir: &Path, trusted_key: Option<&str>) -> Result<Manifest, FirewallError> {
    let mpath = dir.join("manifest.toml");
    let text = crate::read_capped(&mpath, MAX_SMALL_FILE)?;
    if let Some(key) = trusted_key {
        let spath = dir.join("manifest.toml.minisig");
        let sig = String::from_utf8(crate::read_capped(&spath, MAX_SMALL_FILE)?)
            .map_err(|_| FirewallError::Signature("signature file is not UTF-8".into()))?;
        verify_signature(key, &text, &sig)?;
    }
    let text = String::from_utf8(text).map_err(|_| FirewallError::Manifest("not UTF-8".into()))?;
    let m = Manifest::from_toml(&text)?;
    m.verify_dir(dir)?;
    Ok(m)
}
