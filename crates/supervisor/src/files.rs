//! Reading model and input files safely on the supervisor side: regular files only (a FIFO or device named
//! as a model file would hang or feed unbounded data), size-capped, read once into memory so what is checked
//! is exactly what the worker receives (as a sealed memfd).
use crate::error::{Error, Result};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads a regular file of at most `limit` bytes.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not block; O_NOCTTY: never acquire a terminal.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(file_err)?;
    let meta = file.metadata().map_err(file_err)?;
    if !meta.is_file() {
        return Err(file_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (FIFOs, devices and directories are refused)",
        )));
    }
    if meta.len() > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Guard against a file that grows while we read it.
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(file_err)?;
    if buf.len() as u64 > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifo_without_blocking_and_directories() {
        let dir = std::env::temp_dir().join(format!("cs-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular_file(&fifo, 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_regular_file(&dir, 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn enforces_the_cap_and_names_the_file() {
        let p = std::env::temp_dir().join(format!("cs-files-cap-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        let err = read_regular_file(&p, 99).unwrap_err().to_string();
        assert!(
            err.contains("100 bytes is larger than the limit of 99"),
            "{err}"
        );
        assert!(err.contains(p.to_str().unwrap()), "{err}");
        assert_eq!(read_regular_file(&p, 100).unwrap().len(), 100);
        std::fs::remove_file(&p).unwrap();
    }
}
